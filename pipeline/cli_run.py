"""`imgpipe run | validate | demo | ingest`: the local pipeline commands.

Each verb gets its config built once (`Verb.settings`, before it starts) and says its lines
through the quiet console; pipeline/cli.py turns what it raises into an exit code.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional

from pipeline import cli_common
from pipeline.cli_common import FAILED, OK, Job, Verb
from trainer_module import features

# Measured on 2 CPU cores: B3 from scratch at 32 px on the colour-coded shapes. With 200 images
# a class it reached 0.85-0.96 eval accuracy (five runs); with 300, 0.925 and 0.954 after 16
# epochs and 0.966 after 20 (~9 s an epoch), hence 300 and 18 epochs with a cosine decay.
# min_accuracy 0.85: a pushed demo model is right on >= 85% of its eval images, or nothing is
# pushed and the demo says why. Ten runs of these settings reached 0.885-0.983 (median 0.957);
# at 0.9 one in ten made `make demo` fail. The decoded images fit the default cache=auto.
DEMO_SETTINGS = {
    "image_size": 32, "batch_size": 32, "epochs": 18, "learning_rate": 2e-3,
    "lr_schedule": "cosine",
    "augment": False, "min_accuracy": 0.85, "dropout": 0.1,
    "label_smoothing": 0.0,
}
DEMO_DATA = {"images_per_class": 300, "min_side": 96, "max_side": 256, "class_colours": True}


def latest_pushed_model(serving_dir: str) -> Optional[str]:
    """Newest version folder under workdir/serving (the one serving now), or None (the
    Pusher's own reading). Whether a run pushed it is in MLMD: history.pushed."""
    from components.artifact_pusher import newest_version  # pylint: disable=g-import-not-at-top
    return newest_version(serving_dir)


def failed_result(err: BaseException) -> Optional[str]:
    """The message of a component that failed its execution on purpose (the data gate)."""
    output = getattr(err, "executor_output", None)
    message = output.execution_result.result_message if output is not None else ""
    return message or None


def _latest_verdict(config) -> Optional[dict]:
    """validation.json of the newest data report, or None."""
    from components.reports import data_page  # pylint: disable=g-import-not-at-top
    reports = features.reports_dir(config.workdir)
    if not os.path.isdir(reports):
        return None
    runs = [d for d in os.listdir(reports) if d.startswith("data-") and d[5:].isdigit()]
    if not runs:
        return None
    folder = os.path.join(reports, max(runs, key=lambda d: int(d[5:])))
    with open(os.path.join(folder, data_page.VERDICT_JSON), encoding="utf-8") as f:
        verdict = json.load(f)
    verdict["report"] = os.path.join(folder, data_page.REPORT_PAGE)
    return verdict


def push_outcome(say, record: Optional[dict], evaluation: Optional[dict],
                 serving: Optional[str]) -> int:
    """Says whether this run pushed a model, from its Pusher's record (history.pushed, None
    when it has none), and returns the exit code: FAILED when the Evaluator did not bless
    the model. `serving`: the version folder serving now (latest_pushed_model), or None."""
    if record is not None and record["pushed"] and not record["cached"]:
        say(f"imgpipe: pushed model: {record['destination']}")
        return OK
    if evaluation is not None and not evaluation["blessed"]:
        say("imgpipe: no model pushed: the Evaluator did not bless it:", error=True)
        for line in evaluation["reasons"]:
            say(f"imgpipe:   - {line}", error=True)
        say(f"imgpipe: {f'still serving: {serving}' if serving else 'nothing is serving yet'}.",
            error=True)
        return FAILED
    # components/artifact_pusher.py records why a blessed model was not pushed again; a
    # Pusher from the cache decided nothing in this run.
    why = ("the blessed model is the one already serving, so it was not pushed again"
           if record is not None and not record["cached"] and record["still_serving"]
           else "nothing changed since the last run (cached)")
    say(f"imgpipe: no new model pushed: {why}; serving: {serving}")
    return OK


def _pipeline(config, say, validate_only: bool = False) -> int:
    """Runs the local pipeline and says its outcome: FAILED when the data gate stopped it or
    the Evaluator did not bless the model (then nothing new serves)."""
    from pipeline import console, local_runner  # pylint: disable=g-import-not-at-top
    watcher = console.ComponentWatcher(config.workdir, say)
    try:
        with watcher:
            local_runner.run(config, validate_only)
    except RuntimeError as err:  # a component's one-line verdict on the data or settings
        say(f"imgpipe: {err}", error=True)
        return FAILED
    except Exception as err:  # pylint: disable=broad-except
        message = failed_result(err)
        if message is None:
            raise
        for line in message.splitlines():
            say(f"imgpipe: {line}", error=True)
        return FAILED
    verdict = _latest_verdict(config)
    for line in (verdict or {}).get("warnings", []):
        say(f"imgpipe: data warning: {line}")
    reports = [f"imgpipe: data report: {verdict['report']}"] if verdict else []
    if validate_only:
        say("imgpipe: data validation passed.")
        for line in reports:
            say(line)
        return OK
    from pipeline import blessing, history, run_report  # pylint: disable=g-import-not-at-top
    store = history.open_store(features.metadata_path(config.workdir))
    this_run = history.run_since(store, watcher.first_id)
    record = history.pushed(store, this_run) if this_run is not None else None
    evaluation = blessing.last_evaluation(config.workdir)
    report = run_report.build(config.workdir, features.reports_dir(config.workdir), evaluation)
    if report:
        reports.append(f"imgpipe: run report: {report}")
    if evaluation is not None and evaluation["per_class"]:
        say("imgpipe: eval precision/recall/F1 per class: " + ", ".join(
            f"{name} {m['precision']:.2f}/{m['recall']:.2f}/{m['f1']:.2f}"
            for name, m in evaluation["per_class"].items()))
    rc = push_outcome(say, record, evaluation,
                      latest_pushed_model(features.serving_dir(config.workdir)))
    for line in reports:
        say(line)
    return rc


# Settings: each builds the command's one config.

def run_settings(args):
    config = cli_common.build_config(args)
    if "://" not in config.data_root and not os.path.exists(config.data_root):
        raise ValueError(f"--data-root {config.data_root} does not exist.")
    return config


def demo_settings(args):
    """The demo's presets under the user's flags; bad settings fail before any rendering."""
    data_root = os.path.join(cli_common.abs_path(args.workdir), "data")
    return cli_common.build_config(args, data_root=data_root, **DEMO_SETTINGS)


def ingest_settings(args):
    from pipeline.config import load_config  # pylint: disable=g-import-not-at-top
    overrides = cli_common.parse_sets(args.set)
    overrides.update(data_root=cli_common.abs_path(args.data_root),
                     workdir=cli_common.abs_path(args.output))
    return load_config(args.config, overrides)


# Verbs.

def run(job: Job) -> int:
    return _pipeline(job.config, job.say)


def validate(job: Job) -> int:
    return _pipeline(job.config, job.say, validate_only=True)


def demo(job: Job) -> int:
    from pipeline import demo_data  # pylint: disable=g-import-not-at-top
    data_root = job.config.data_root
    # Drawing the images (one core, ~4 s) overlaps the libraries' import (one core, ~10 s):
    # BENCHMARKS.md, "Fixed cost on the demo".
    with demo_data.ChildDrawing(data_root, **dict(
            DEMO_DATA, images_per_class=job.args.images_per_class)) as drawing:
        from pipeline import local_runner  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
        counts = drawing.result()
    job.say(f"imgpipe: demo dataset: {sum(counts.values())} images in {data_root} {counts}")
    return _pipeline(job.config, job.say)


def ingest(job: Job) -> int:
    """The standalone Beam job; unknown flags are Beam's (else the config's ingest_beam_args)."""
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
    from components.image_example_gen import ingest as ingest_lib, report as report_lib  # pylint: disable=g-import-not-at-top
    config, say = job.config, job.say
    output = cli_common.abs_path(job.args.output)
    options = PipelineOptions(list(job.rest) or list(config.ingest_beam_args))
    # Beam drops flags it does not know with a log line; a typo would then run silently
    # with the default instead.
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options()))
    if unknown:
        raise ValueError(f"unknown Beam flag(s): {', '.join('--' + u for u in unknown)} "
                         "(Beam's own flags, e.g. --runner, pass through).")
    with beam.Pipeline(options=options) as p:
        _ = p | "IngestImages" >> ingest_lib.IngestImages(config.ingest, output)
    try:
        report = report_lib.finish_output(output)
    except RuntimeError as err:
        say(f"imgpipe: {err}", error=True)
        return FAILED
    say(json.dumps({"output": output, **report["counts"],
                    "per_split": {k: sum(v.values()) for k, v in report["per_split"].items()},
                    "classes": len(report["classes"])}, ensure_ascii=False))
    return OK


def register(sub) -> None:
    """Adds run, validate, demo and ingest to the `imgpipe` subparsers."""
    def verbose(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--verbose", action="store_true",
                            help="also stream the full log (TFX, Beam, TensorFlow) to the "
                            "console")

    p = sub.add_parser("run", help="run the TFX pipeline locally on your images")
    p.add_argument("--data-root", required=True)
    p.add_argument("--workdir", required=True)
    cli_common.add_config_flags(p)
    verbose(p)
    p.set_defaults(verb=Verb(run, console="pipeline", settings=run_settings))

    p = sub.add_parser("validate", help="ingest and validate only: the data gate and "
                       "its report, no training")
    p.add_argument("--data-root", required=True)
    p.add_argument("--workdir", required=True)
    cli_common.add_config_flags(p)
    verbose(p)
    p.set_defaults(verb=Verb(validate, console="pipeline", settings=run_settings))

    p = sub.add_parser("demo", help="generate an offline demo dataset and run on it")
    p.add_argument("--workdir", default="demo_workdir")
    p.add_argument("--images-per-class", type=int, default=DEMO_DATA["images_per_class"])
    cli_common.add_config_flags(p)
    verbose(p)
    p.set_defaults(verb=Verb(demo, console="pipeline", settings=demo_settings))

    p = sub.add_parser("ingest", help="standalone Beam job: images -> TFRecords")
    p.add_argument("--data-root", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--config", help="YAML file (ingest fields are used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    verbose(p)
    p.set_defaults(verb=Verb(ingest, console="pipeline", settings=ingest_settings,
                             pass_through=True))
