"""`imgpipe runs | report | predict | schema`: reading (and the schema, accepting) what a
workdir holds. No config: each reads the workdir's MLMD store or a pushed model."""
from __future__ import annotations

import json
import os

from pipeline import cli_common
from pipeline.cli_common import FAILED, OK, Job, Verb
from trainer_module import features


def predict(job: Job) -> int:
    """One line per file (path, label, probability); errors per file on stderr; FAILED if
    any."""
    from pipeline import predict as predict_lib  # pylint: disable=g-import-not-at-top
    args, say = job.args, job.say
    if bool(args.model) == bool(args.workdir):
        raise ValueError("give --model DIR or --workdir W (its latest pushed model).")
    model = cli_common.abs_path(args.model) if args.model else \
        predict_lib.latest_model(cli_common.abs_path(args.workdir))
    failed = 0
    for result in predict_lib.predict(model, args.paths, batch_size=args.batch_size,
                                      top_k=args.top_k):
        if args.json:
            say(json.dumps(result, ensure_ascii=False))
        elif "error" in result:
            say(f"imgpipe: {result['path']}: {result['error']}", error=True)
        elif args.top_k > 1:
            say(f"{result['path']}\t" + ", ".join(f"{n} {p:.4f}" for n, p in result["top"]))
        else:
            say(f"{result['path']}\t{result['label']}\t{result['probability']:.4f}")
        failed += "error" in result
    return FAILED if failed else OK


def schema_update(job: Job) -> int:
    """Rewrites workdir/schema/schema.pbtxt for the vocabulary of the latest ingest."""
    from components.data_validation import executor, schema as schema_lib  # pylint: disable=g-import-not-at-top
    from pipeline import history  # pylint: disable=g-import-not-at-top
    workdir = cli_common.abs_path(job.args.workdir)
    path = features.schema_file(workdir)
    examples = history.latest_artifact_uri(
        history.open_store(features.metadata_path(workdir)), "Examples")
    if examples is None:
        raise ValueError(f"no ingested data in {workdir}: run imgpipe run first.")
    before = schema_lib.classes(executor.load_schema(path)) if os.path.isfile(path) else []
    after = schema_lib.classes(executor.write_dataset_schema(path, None, examples))
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    change = "; ".join(filter(None, [added and f"added {', '.join(added)}",
                                     removed and f"removed {', '.join(removed)}"])) \
        or "no class change"
    job.say(f"imgpipe: schema updated: {path} ({len(after)} classes; {change}). "
            "The next run validates against it.")
    return OK


def report(job: Job) -> int:
    """Rebuilds the data report of the latest run, and its run report, from what MLMD
    recorded."""
    from components.data_validation import executor  # pylint: disable=g-import-not-at-top
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
    from pipeline import history, run_report  # pylint: disable=g-import-not-at-top
    workdir = cli_common.abs_path(job.args.workdir)
    store = history.open_store(features.metadata_path(workdir))
    gate = history.latest_execution(store, "DataGate")
    if gate is None:
        raise ValueError(f"no data validation recorded in {workdir}: run imgpipe run first.")
    uris = history.artifact_uris(store, gate.id, metadata_store_pb2.Event.INPUT)
    verdict = executor.evaluate(
        examples_uri=uris["examples"], statistics_uri=uris["statistics"],
        schema_uri=uris["schema"], anomalies_uri=uris["anomalies"],
        out_dir=os.path.join(workdir, "reports", f"data-{gate.id}"),
        exec_properties=history.properties(gate))
    job.say(f"imgpipe: data report: {verdict['report']} "
            f"({'passed' if verdict['passed'] else 'blocked'}, "
            f"{len(verdict['blocking'])} anomalies, {len(verdict['warnings'])} warnings)")
    page = run_report.build(workdir)
    if page:
        job.say(f"imgpipe: run report: {page}")
    return OK


def _when(ms: int) -> str:
    import datetime  # pylint: disable=g-import-not-at-top
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _run_row(store, run, active: bool, recorded: dict) -> str:
    """One row of the runs table: when, how long, eval accuracy, pushed version, states
    (history.run_summary). `recorded`: run_report.recorded_accuracies; the metrics of an
    evaluation without a report are read with TFMA."""
    from pipeline import blessing, history  # pylint: disable=g-import-not-at-top
    summary = history.run_summary(store, run, active)
    accuracy = ""
    if summary["evaluation"]:
        found = recorded.get(summary["evaluation"])
        value = (found if found is not None
                 else blessing.accuracies(summary["evaluation"])).get("candidate")
        accuracy = f"{value:.3f}" if value is not None else ""
    finished = ", ".join(f"{n} {w}" for w, n in summary["counts"].items()
                         if w in ("ran", "cached"))
    failed = [f"{node} {word}" for node, word in summary["failed"]]
    return (f"{run['id']:<27} {_when(run['start']):<19} "
            f"{cli_common.duration((run['end'] - run['start']) / 1000):>11}  {accuracy:>8}  "
            f"{summary['pushed'] or '-':<11} {'; '.join([finished, *failed])}")


def runs(job: Job) -> int:
    """Past runs from the workdir's MLMD store, newest first; or one run in detail (its
    components, as the console said them while it ran: console.describe)."""
    from pipeline import console, history, workdir_lock  # pylint: disable=g-import-not-at-top
    args, say = job.args, job.say
    workdir = cli_common.abs_path(args.workdir)
    store = history.open_store(features.metadata_path(workdir))
    found = history.runs(store)
    active = workdir_lock.running(workdir) is not None
    if args.run_id:
        run = next((r for r in found if r["id"] == args.run_id), None)
        if run is None:
            raise ValueError(f"no run {args.run_id!r} in {workdir}; `imgpipe runs --workdir "
                             f"{args.workdir}` lists them.")
        say(f"run {run['id']}: started {_when(run['start'])}, "
            f"{cli_common.duration((run['end'] - run['start']) / 1000)}")
        for node, execution in run["nodes"]:
            if not node.endswith("resolver"):
                say(console.describe(store, workdir, node, execution, active))
        return OK
    if not found:
        say(f"no runs recorded in {workdir} yet.")
        return OK
    say(f"{'run id':<27} {'started':<19} {'took':>11}  {'accuracy':>8}  {'pushed':<11} "
        "components")
    from pipeline import run_report  # pylint: disable=g-import-not-at-top
    recorded = run_report.recorded_accuracies(features.reports_dir(workdir))
    for run in found:
        say(_run_row(store, run, active, recorded))
    say("`imgpipe runs --workdir W RUN_ID` shows one run's components and times.")
    return OK


def register(sub) -> None:
    """Adds predict, schema, report and runs to the `imgpipe` subparsers."""
    p = sub.add_parser("predict", help="classify image files with a pushed model")
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--model", help="a pushed SavedModel folder")
    p.add_argument("--workdir", help="use the latest model pushed to W/serving")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(verb=Verb(predict, console="quiet"))

    p = sub.add_parser("schema", help="the dataset schema in the workdir")
    p.add_argument("action", choices=("update",),
                   help="update: accept the latest ingest's classes into the schema")
    p.add_argument("--workdir", required=True)
    p.set_defaults(verb=Verb(schema_update, console="quiet"))

    p = sub.add_parser("report", help="rebuild the data and run reports of the latest run")
    p.add_argument("--workdir", required=True)
    p.set_defaults(verb=Verb(report, console="quiet"))

    p = sub.add_parser("runs", help="past runs of a workdir, from its ML Metadata store")
    p.add_argument("--workdir", required=True)
    p.add_argument("run_id", nargs="?", help="show this run's components and times")
    p.set_defaults(verb=Verb(runs, console="quiet"))
