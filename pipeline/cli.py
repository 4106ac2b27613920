"""`imgpipe`: a thin command line over the pipeline's functions.

  imgpipe run    --data-root D --workdir W [--config F] [--image-size N] [--epochs N]
                 [--batch-size N] [--train-steps N] [--set key=value ...]
  imgpipe demo   [--workdir W]        generate an offline dataset, then `run` on it
  imgpipe ingest --data-root D --output O [ingest flags] [Beam flags, e.g. --runner ...]
  imgpipe validate --data-root D --workdir W [--config F] [--set ...]
                 ingest, schema, statistics and the data gate only, with the data report
  imgpipe predict [--model DIR | --workdir W] [--top-k N] [--json] FILE_OR_DIR...
  imgpipe schema update --workdir W   accept the latest data's vocabulary into the schema
  imgpipe report --workdir W          rebuild the data and run reports of the latest run
  imgpipe runs --workdir W [RUN_ID]   past runs (when, how long, states, accuracy, pushed)
  imgpipe compile  --target kubeflow|vertex --output FILE --image IMAGE --data-root URI
                   --pipeline-root URI [--config F] [--set key=value ...]
  imgpipe submit   --target kubeflow --host URL | --target vertex --project P --region R
                   (--package FILE | compile flags) [--data-root URI] [--epochs N]
  imgpipe schedule --cron "0 3 * * *" [--timezone Z] --name N  + the submit flags

Flags override the YAML config; `--set` reaches any PipelineConfig field.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFT/TFMA need Keras 2 (tf_keras)

# Measured on 2 CPU cores: B3 from scratch at 32 px on the colour-coded shapes. With 200 images
# a class it reached 0.85-0.96 eval accuracy (five runs); with 300, 0.925 and 0.954 after 16
# epochs and 0.966 after 20 (~9 s an epoch), hence 300 and 18 epochs with a cosine decay.
# min_accuracy 0.9: a pushed demo model is right on >= 90% of its eval images, or nothing is
# pushed and the demo says why. The decoded images fit the default cache=auto.
DEMO_SETTINGS = {
    "image_size": 32, "batch_size": 32, "epochs": 18, "learning_rate": 2e-3,
    "lr_schedule": "cosine",
    "augment": False, "min_accuracy": 0.9, "dropout": 0.1,
    "label_smoothing": 0.0,
}
DEMO_DATA = {"images_per_class": 300, "min_side": 96, "max_side": 256, "class_colours": True}
PIPELINE_COMMANDS = ("run", "validate", "demo", "ingest")  # quiet console + log file
QUIET_COMMANDS = ("predict", "runs", "report", "schema")  # the same, without the summary


def _abs(path: Optional[str]) -> Optional[str]:
    return path if not path or "://" in path else os.path.abspath(path)


def _parse_sets(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def latest_pushed_model(serving_dir: str) -> Optional[str]:
    """Newest version folder under workdir/serving, or None (the Pusher's own reading)."""
    from components.artifact_pusher import newest_version  # pylint: disable=g-import-not-at-top
    return newest_version(serving_dir)


def _failed_result(err: BaseException) -> Optional[str]:
    """The message of a component that failed its execution on purpose (the data gate)."""
    output = getattr(err, "executor_output", None)
    message = output.execution_result.result_message if output is not None else ""
    return message or None


def _latest_verdict(config) -> Optional[dict]:
    """validation.json of the newest data report, or None."""
    from components.data_validation import data_report  # pylint: disable=g-import-not-at-top
    if not os.path.isdir(config.reports_dir):
        return None
    runs = [d for d in os.listdir(config.reports_dir) if d.startswith("data-")
            and d[5:].isdigit()]
    if not runs:
        return None
    folder = os.path.join(config.reports_dir, max(runs, key=lambda d: int(d[5:])))
    with open(os.path.join(folder, data_report.VERDICT_JSON), encoding="utf-8") as f:
        verdict = json.load(f)
    verdict["report"] = os.path.join(folder, data_report.REPORT_PAGE)
    return verdict


_CONSOLE = None  # the active console.Capture while a pipeline command runs


def _say(line: str, error: bool = False) -> None:
    """A console line: through the capture when one is active (it also logs it)."""
    if _CONSOLE is not None:
        _CONSOLE.say(line, error)
    else:
        print(line, file=sys.stderr if error else sys.stdout, flush=True)


def _run(config, validate_only: bool = False) -> int:
    from pipeline import console, local_runner  # pylint: disable=g-import-not-at-top
    before = latest_pushed_model(config.serving_dir)
    try:
        with console.ComponentWatcher(config.workdir, _say):
            local_runner.run(config, validate_only)
    except RuntimeError as err:  # a component's one-line verdict on the data or settings
        _say(f"imgpipe: {err}", error=True)
        return 1
    except Exception as err:  # pylint: disable=broad-except
        message = _failed_result(err)
        if message is None:
            raise
        for line in message.splitlines():
            _say(f"imgpipe: {line}", error=True)
        return 1
    verdict = _latest_verdict(config)
    for line in (verdict or {}).get("warnings", []):
        _say(f"imgpipe: data warning: {line}")
    reports = [f"imgpipe: data report: {verdict['report']}"] if verdict else []
    if validate_only:
        _say("imgpipe: data validation passed.")
        for line in reports:
            _say(line)
        return 0
    from pipeline import blessing, run_report  # pylint: disable=g-import-not-at-top
    evaluation = blessing.last_evaluation(config.workdir)
    report = run_report.build(config.workdir, config.reports_dir, evaluation)
    if report:
        reports.append(f"imgpipe: run report: {report}")
    if evaluation is not None and evaluation["per_class"]:
        _say("imgpipe: eval precision/recall/F1 per class: " + ", ".join(
            f"{name} {m['precision']:.2f}/{m['recall']:.2f}/{m['f1']:.2f}"
            for name, m in evaluation["per_class"].items()))
    pushed = latest_pushed_model(config.serving_dir)
    if pushed and pushed != before:
        _say(f"imgpipe: pushed model: {pushed}")
        rc = 0
    elif evaluation is not None and not evaluation["blessed"]:
        _say("imgpipe: no model pushed: the Evaluator did not bless it:", error=True)
        for line in evaluation["reasons"]:
            _say(f"imgpipe:   - {line}", error=True)
        _say(f"imgpipe: {f'still serving: {pushed}' if pushed else 'nothing is serving yet'}.",
             error=True)
        rc = 1
    else:
        _say(f"imgpipe: no new model pushed: {_nothing_new(config.workdir)}; serving: {pushed}")
        rc = 0
    for line in reports:
        _say(line)
    return rc


def _nothing_new(workdir: str) -> str:
    """Why a blessed run pushed nothing: its Pusher found the model already serving
    (components/artifact_pusher.py), or the Pusher came from the cache."""
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
    from components.artifact_pusher import STILL_SERVING_KEY  # pylint: disable=g-import-not-at-top
    from pipeline import history  # pylint: disable=g-import-not-at-top
    store = history.open_store(os.path.join(workdir, "metadata.sqlite"))
    pusher = history.latest_execution(store, "Pusher")
    if pusher is not None and history.state_word(pusher) == "ran":
        uri = history.artifact_uris(store, pusher.id, metadata_store_pb2.Event.OUTPUT).get(
            "pushed_model")
        if uri and history.artifact_properties(store, uri).get(STILL_SERVING_KEY):
            return "the blessed model is the one already serving, so it was not pushed again"
    return "nothing changed since the last run (cached)"


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of PipelineConfig fields")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--train-steps", type=int, help="steps per epoch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other PipelineConfig field; repeatable")


def _config(args, **base):
    from pipeline.config import load_config  # pylint: disable=g-import-not-at-top
    overrides = dict(base)
    overrides.update(_parse_sets(args.set))
    flags = {"image_size": args.image_size, "epochs": args.epochs,
             "batch_size": args.batch_size, "train_steps": args.train_steps}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    overrides["workdir"] = _abs(args.workdir)
    if getattr(args, "data_root", None):
        overrides["data_root"] = _abs(args.data_root)
    return load_config(args.config, overrides)


def cmd_run(args) -> int:
    return _run(_config(args), validate_only=args.command == "validate")


def cmd_demo(args) -> int:
    from pipeline import demo_data  # pylint: disable=g-import-not-at-top
    workdir = _abs(args.workdir)
    data_root = os.path.join(workdir, "data")
    args.data_root = data_root
    config = _config(args, **DEMO_SETTINGS)  # bad settings fail before any rendering
    counts = demo_data.generate_dataset(
        data_root, **dict(DEMO_DATA, images_per_class=args.images_per_class))
    _say(f"imgpipe: demo dataset: {sum(counts.values())} images in {data_root} {counts}")
    return _run(config)


def cmd_ingest(args, beam_argv: list) -> int:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
    from components.image_example_gen import ingest, report as report_lib  # pylint: disable=g-import-not-at-top
    from pipeline.config import load_config  # pylint: disable=g-import-not-at-top

    overrides = _parse_sets(args.set)
    overrides.update(data_root=_abs(args.data_root), workdir=_abs(args.output))
    config = load_config(args.config, overrides)
    output = _abs(args.output)
    beam_argv = beam_argv or list(config.ingest_beam_args)
    options = PipelineOptions(beam_argv)
    # Beam drops flags it does not know with a log line; a typo would then run silently
    # with the default instead.
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options()))
    if unknown:
        raise ValueError(f"unknown Beam flag(s): {', '.join('--' + u for u in unknown)} "
                         "(Beam's own flags, e.g. --runner, pass through).")
    with beam.Pipeline(options=options) as p:
        _ = p | "IngestImages" >> ingest.IngestImages(
            ingest.IngestOptions.from_config(config), output)
    try:
        report = report_lib.finish_output(output)
    except RuntimeError as err:
        _say(f"imgpipe: {err}", error=True)
        return 1
    _say(json.dumps({"output": output, **report["counts"],
                      "per_split": {k: sum(v.values()) for k, v in report["per_split"].items()},
                      "classes": len(report["classes"])}, ensure_ascii=False))
    return 0


def cmd_predict(args) -> int:
    """One line per file (path, label, probability); errors per file on stderr; rc 1 if any."""
    from pipeline import predict  # pylint: disable=g-import-not-at-top
    if bool(args.model) == bool(args.workdir):
        raise ValueError("give --model DIR or --workdir W (its latest pushed model).")
    model = _abs(args.model) if args.model else predict.latest_model(_abs(args.workdir))
    failed = 0
    for result in predict.predict(model, args.paths, batch_size=args.batch_size,
                                  top_k=args.top_k):
        if args.json:
            _say(json.dumps(result, ensure_ascii=False))
        elif "error" in result:
            _say(f"imgpipe: {result['path']}: {result['error']}", error=True)
        elif args.top_k > 1:
            _say(f"{result['path']}\t" + ", ".join(f"{n} {p:.4f}" for n, p in result["top"]))
        else:
            _say(f"{result['path']}\t{result['label']}\t{result['probability']:.4f}")
        failed += "error" in result
    return 1 if failed else 0


def cmd_schema_update(args) -> int:
    """Rewrites workdir/schema/schema.pbtxt for the vocabulary of the latest ingest."""
    from components.data_validation import executor, schema as schema_lib  # pylint: disable=g-import-not-at-top
    from pipeline import history  # pylint: disable=g-import-not-at-top
    workdir = _abs(args.workdir)
    path = os.path.join(workdir, "schema", "schema.pbtxt")
    examples = history.latest_artifact_uri(
        history.open_store(os.path.join(workdir, "metadata.sqlite")), "Examples")
    if examples is None:
        raise ValueError(f"no ingested data in {workdir}: run imgpipe run first.")
    before = schema_lib.classes(executor.load_schema(path)) if os.path.isfile(path) else []
    after = schema_lib.classes(executor.write_dataset_schema(path, None, examples))
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    change = "; ".join(filter(None, [added and f"added {', '.join(added)}",
                                     removed and f"removed {', '.join(removed)}"])) \
        or "no class change"
    _say(f"imgpipe: schema updated: {path} ({len(after)} classes; {change}). "
          "The next run validates against it.")
    return 0


def cmd_report(args) -> int:
    """Rebuilds the data report of the latest run, and its run report, from what MLMD
    recorded."""
    from components.data_validation import executor  # pylint: disable=g-import-not-at-top
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
    from pipeline import history  # pylint: disable=g-import-not-at-top
    workdir = _abs(args.workdir)
    store = history.open_store(os.path.join(workdir, "metadata.sqlite"))
    gate = history.latest_execution(store, "DataGate")
    if gate is None:
        raise ValueError(f"no data validation recorded in {workdir}: run imgpipe run first.")
    uris = history.artifact_uris(store, gate.id, metadata_store_pb2.Event.INPUT)
    verdict = executor.evaluate(
        examples_uri=uris["examples"], statistics_uri=uris["statistics"],
        schema_uri=uris["schema"], anomalies_uri=uris["anomalies"],
        out_dir=os.path.join(workdir, "reports", f"data-{gate.id}"),
        exec_properties=history.properties(gate))
    _say(f"imgpipe: data report: {verdict['report']} "
          f"({'passed' if verdict['passed'] else 'blocked'}, "
          f"{len(verdict['blocking'])} anomalies, {len(verdict['warnings'])} warnings)")
    from pipeline import run_report  # pylint: disable=g-import-not-at-top
    page = run_report.build(workdir)
    if page:
        _say(f"imgpipe: run report: {page}")
    return 0


def _when(ms: int) -> str:
    import datetime  # pylint: disable=g-import-not-at-top
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def cmd_runs(args) -> int:
    """Past runs from the workdir's MLMD store, newest first; or one run in detail."""
    from pipeline import blessing, console, history  # pylint: disable=g-import-not-at-top
    from pipeline import workdir_lock  # pylint: disable=g-import-not-at-top
    workdir = _abs(args.workdir)
    store = history.open_store(os.path.join(workdir, "metadata.sqlite"))
    runs = history.runs(store)
    active = workdir_lock.running(workdir) is not None
    if args.run_id:
        run = next((r for r in runs if r["id"] == args.run_id), None)
        if run is None:
            raise ValueError(f"no run {args.run_id!r} in {workdir}; `imgpipe runs --workdir "
                             f"{args.workdir}` lists them.")
        _say(f"run {run['id']}: started {_when(run['start'])}, "
             f"{_duration((run['end'] - run['start']) / 1000)}")
        for node, execution in run["nodes"]:
            if not node.endswith("resolver"):
                _say(console.describe(store, workdir, node, execution, active))
        return 0
    if not runs:
        _say(f"no runs recorded in {workdir} yet.")
        return 0
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
    _say(f"{'run id':<27} {'started':<19} {'took':>11}  {'accuracy':>8}  {'pushed':<11} "
         "components")
    for run in runs:
        counts, failed, accuracy, pushed = {}, [], "", "-"
        for node, execution in run["nodes"]:
            if node.endswith("resolver"):
                continue
            word = history.state_word(execution, active)
            counts[word] = counts.get(word, 0) + 1
            if word not in ("ran", "cached"):
                failed.append(f"{node} {word}")
                continue
            outputs = history.artifact_uris(store, execution.id,
                                            metadata_store_pb2.Event.OUTPUT)
            if node == "Evaluator" and "evaluation" in outputs:
                value = blessing.accuracies(outputs["evaluation"]).get("candidate")
                accuracy = f"{value:.3f}" if value is not None else ""
            if node == "Pusher" and "pushed_model" in outputs:
                props = history.artifact_properties(store, outputs["pushed_model"])
                pushed = str(props.get("pushed_version", "")) if props.get("pushed") else "-"
        summary = ", ".join(f"{n} {w}" for w, n in counts.items() if w in ("ran", "cached"))
        _say(f"{run['id']:<27} {_when(run['start']):<19} "
             f"{_duration((run['end'] - run['start']) / 1000):>11}  {accuracy:>8}  "
             f"{pushed:<11} {'; '.join([summary, *failed])}")
    _say("`imgpipe runs --workdir W RUN_ID` shows one run's components and times.")
    return 0


def _remote_config(args):
    """The config a compiled pipeline is built from: --pipeline-root is its work root."""
    from pipeline.config import load_config  # pylint: disable=g-import-not-at-top
    overrides = _parse_sets(args.set)
    for key in ("image", "data_root", "epochs"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if args.pipeline_root:
        overrides["workdir"] = args.pipeline_root.rstrip("/")
    return load_config(args.config, overrides)


def _quiet_google_libraries() -> None:
    """The cluster commands print one line. The Google Cloud client libraries warn at import
    about Python 3.10 and grpcio versions, and TensorFlow's C++ start-up logs CUDA and CPU
    lines: a dozen lines about the stack, not the user's command (TF_CPP_MIN_LOG_LEVEL set
    by the user wins)."""
    import warnings  # pylint: disable=g-import-not-at-top
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google(\.|$)")


def cmd_compile(args) -> int:
    _quiet_google_libraries()
    from kubeflow import compiler  # pylint: disable=g-import-not-at-top
    config = _remote_config(args)
    if not args.pipeline_root and "://" not in config.workdir:
        raise ValueError("--pipeline-root is required: a gs:// (Vertex) or gs://, minio:// "
                         "or s3:// (Kubeflow) folder every task can write.")
    compiler.compile_pipeline(config, args.target, args.output)
    print(f"imgpipe: compiled for {args.target}: {args.output} (image {config.image}; "
          f"run-time parameters data_root={config.data_root}, epochs={config.epochs})")
    return 0


def _package(args) -> str:
    """--package, or a package compiled now from the compile flags."""
    if args.package:
        return args.package
    import tempfile  # pylint: disable=g-import-not-at-top
    args.output = os.path.join(tempfile.mkdtemp(prefix="imgpipe-"), "pipeline." + (
        "yaml" if args.target == "kubeflow" else "json"))
    cmd_compile(args)
    return args.output


def _run_parameters(args) -> dict:
    return {k: v for k, v in (("data_root", args.data_root), ("epochs", args.epochs))
            if v is not None}


def cmd_submit(args, schedule: bool = False) -> int:
    _quiet_google_libraries()
    from kubeflow import client  # pylint: disable=g-import-not-at-top
    package = _package(args)
    params = _run_parameters(args)
    if args.target == "kubeflow":
        if not args.host:
            raise ValueError("--target kubeflow needs --host URL (the KFP API endpoint).")
        common = dict(parameters=params, experiment=args.experiment, namespace=args.namespace)
        if schedule:
            ident = client.schedule_kubeflow(package, args.host, cron=args.cron, name=args.name,
                                             timezone=args.timezone, **common)
        else:
            ident = client.submit_kubeflow(package, args.host, run_name=args.name, **common)
    else:
        service_account = args.service_account
        if service_account is None and (args.config or args.set or not args.package):
            # The config's service_account: the one the compiled training job runs as.
            service_account = _remote_config(args).service_account
        common = dict(project=args.project, region=args.region, parameters=params,
                      service_account=service_account)
        if schedule:
            ident = client.schedule_vertex(package, cron=args.cron, name=args.name,
                                           timezone=args.timezone, **common)
        else:
            ident = client.submit_vertex(package, display_name=args.name, **common)
    what = "schedule" if schedule else "run"
    print(f"imgpipe: {args.target} {what} created: {ident}")
    return 0


def _add_remote_flags(parser: argparse.ArgumentParser, submit: bool) -> None:
    parser.add_argument("--target", required=True, choices=("kubeflow", "vertex"))
    parser.add_argument("--config", help="YAML file of PipelineConfig fields")
    parser.add_argument("--image", help="container image built from kubeflow/Dockerfile")
    parser.add_argument("--data-root", help="image folder or CSV manifest URI "
                        "(a run-time parameter: the default, or this run's value)")
    parser.add_argument("--pipeline-root", help="gs:// (or minio://, s3://) work root: "
                        "artifacts under URI/pipeline_root, pushed models under URI/serving")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    if not submit:
        return
    parser.add_argument("--package", help="a file from imgpipe compile (else compiled now)")
    parser.add_argument("--epochs", type=int, help="run-time parameter for this run")
    parser.add_argument("--host", help="Kubeflow: KFP API URL")
    parser.add_argument("--namespace", help="Kubeflow: namespace of a multi-user deployment")
    parser.add_argument("--experiment", default="imgpipe", help="Kubeflow: experiment name")
    parser.add_argument("--project", help="Vertex: Google Cloud project")
    parser.add_argument("--region", help="Vertex: region, e.g. us-central1")
    parser.add_argument("--service-account", help="Vertex: service account the run uses "
                        "(default: the config's service_account)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="imgpipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the TFX pipeline locally on your images")
    run.add_argument("--data-root", required=True)
    run.add_argument("--workdir", required=True)
    _add_run_flags(run)

    validate = sub.add_parser("validate", help="ingest and validate only: the data gate and "
                              "its report, no training")
    validate.add_argument("--data-root", required=True)
    validate.add_argument("--workdir", required=True)
    _add_run_flags(validate)

    demo = sub.add_parser("demo", help="generate an offline demo dataset and run on it")
    demo.add_argument("--workdir", default="demo_workdir")
    demo.add_argument("--images-per-class", type=int, default=DEMO_DATA["images_per_class"])
    _add_run_flags(demo)

    ingest = sub.add_parser("ingest", help="standalone Beam job: images -> TFRecords")
    ingest.add_argument("--data-root", required=True)
    ingest.add_argument("--output", required=True)
    ingest.add_argument("--config", help="YAML file (ingest fields are used)")
    ingest.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    predict = sub.add_parser("predict", help="classify image files with a pushed model")
    predict.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    predict.add_argument("--model", help="a pushed SavedModel folder")
    predict.add_argument("--workdir", help="use the latest model pushed to W/serving")
    predict.add_argument("--top-k", type=int, default=1)
    predict.add_argument("--json", action="store_true", help="one JSON object per file")
    predict.add_argument("--batch-size", type=int, default=64)

    schema = sub.add_parser("schema", help="the dataset schema in the workdir")
    schema.add_argument("action", choices=("update",),
                        help="update: accept the latest ingest's classes into the schema")
    schema.add_argument("--workdir", required=True)

    report = sub.add_parser("report", help="rebuild the data and run reports of the "
                            "latest run")
    report.add_argument("--workdir", required=True)

    runs = sub.add_parser("runs", help="past runs of a workdir, from its ML Metadata store")
    runs.add_argument("--workdir", required=True)
    runs.add_argument("run_id", nargs="?", help="show this run's components and times")

    compile_ = sub.add_parser("compile", help="compile for Kubeflow Pipelines or Vertex AI")
    _add_remote_flags(compile_, submit=False)
    compile_.add_argument("--output", required=True,
                          help="pipeline.yaml (kubeflow) or pipeline.json (vertex)")

    submit = sub.add_parser("submit", help="start a run on Kubeflow Pipelines or Vertex AI")
    _add_remote_flags(submit, submit=True)
    submit.add_argument("--name", help="run name")

    schedule = sub.add_parser("schedule", help="create a recurring run (cron)")
    _add_remote_flags(schedule, submit=True)
    schedule.add_argument("--cron", required=True,
                          help='5-field cron, e.g. "0 3 * * *" (converted per target)')
    schedule.add_argument("--timezone", help="IANA zone, e.g. Europe/Berlin (Vertex only)")
    schedule.add_argument("--name", required=True, help="schedule name")

    for name in PIPELINE_COMMANDS:
        sub.choices[name].add_argument(
            "--verbose", action="store_true",
            help="also stream the full log (TFX, Beam, TensorFlow) to the console")

    args, rest = parser.parse_known_args(argv)
    if args.command != "ingest" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command in PIPELINE_COMMANDS + QUIET_COMMANDS:
        return _with_console(args, rest)
    return _dispatch(args, rest)


def _log_path(args) -> str:
    """WORKDIR/logs/<run id>.log; for ingest, next to a local output (else a temp folder)."""
    import datetime  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.command in QUIET_COMMANDS:
        workdir = _abs(getattr(args, "workdir", None) or "")
        folder = os.path.join(workdir, "logs") if workdir and os.path.isdir(workdir) \
            else os.path.join(tempfile.gettempdir(), "imgpipe-logs")
        return os.path.join(folder, f"{args.command}-{stamp}.log")
    if args.command == "ingest":
        output = _abs(args.output)
        folder = (output.rstrip("/") + "-logs") if "://" not in output \
            else os.path.join(tempfile.gettempdir(), "imgpipe-logs")
        return os.path.join(folder, f"ingest-{stamp}.log")
    return os.path.join(_abs(args.workdir), "logs", f"{stamp}.log")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _with_console(args, rest) -> int:
    """Runs a pipeline command with the quiet console; the full log goes to a file."""
    import time  # pylint: disable=g-import-not-at-top
    import traceback  # pylint: disable=g-import-not-at-top
    from pipeline import console  # pylint: disable=g-import-not-at-top  (no TensorFlow)
    global _CONSOLE
    start = time.monotonic()
    log = _log_path(args)
    existed = [p for p in (os.path.dirname(os.path.dirname(log)), os.path.dirname(log))
               if os.path.isdir(p)]
    try:
        capture = console.Capture(log, verbose=getattr(args, "verbose", False)).__enter__()
    except OSError as err:
        print(f"imgpipe: error: cannot write the log {log}: {err}", file=sys.stderr)
        return 2
    if args.command not in ("ingest", *QUIET_COMMANDS):  # this imports Beam (noisy)
        try:
            if args.command == "demo":
                args.data_root = os.path.join(_abs(args.workdir), "data")
            config = _config(args, **(DEMO_SETTINGS if args.command == "demo" else {}))
            if args.command != "demo" and "://" not in config.data_root and \
                    not os.path.exists(config.data_root):
                raise ValueError(f"--data-root {config.data_root} does not exist.")
        except (ValueError, FileNotFoundError) as err:
            capture.say(f"imgpipe: error: {err}", error=True)
            capture.__exit__(None, None, None)
            # Bad settings: leave no log (nor folders) behind in a possibly mistyped workdir.
            os.remove(log)
            for folder in (os.path.dirname(log), os.path.dirname(os.path.dirname(log))):
                if folder not in existed and os.path.isdir(folder) and not os.listdir(folder):
                    os.rmdir(folder)
            return 2
    _CONSOLE = capture
    try:
        rc = _dispatch(args, rest)
    except Exception as err:  # pylint: disable=broad-except
        traceback.print_exc()  # into the log only
        first = " ".join(str(err).split()) or type(err).__name__
        _say(f"imgpipe: error: {type(err).__name__}: {first[:400]}", error=True)
        _say(f"imgpipe: the traceback is in the full log: {log}", error=True)
        rc = 1
    if args.command in PIPELINE_COMMANDS:
        _say(f"imgpipe: full log: {log}")
        _say(f"imgpipe: total {_duration(time.monotonic() - start)} (exit {rc})")
    _CONSOLE = None
    capture.__exit__(None, None, None)
    return rc


def _dispatch(args, rest) -> int:
    try:
        if args.command == "ingest":
            return cmd_ingest(args, rest)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "schema":
            return cmd_schema_update(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "runs":
            return cmd_runs(args)
        if args.command in ("compile", "submit", "schedule"):
            return {"compile": cmd_compile, "submit": cmd_submit,
                    "schedule": lambda a: cmd_submit(a, schedule=True)}[args.command](args)
        return cmd_demo(args) if args.command == "demo" else cmd_run(args)
    except (ValueError, FileNotFoundError) as err:
        _say(f"imgpipe: error: {err}", error=True)
        return 2
    except RuntimeError as err:
        if args.command not in ("submit", "schedule"):
            raise
        _say(f"imgpipe: error: {err}", error=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
