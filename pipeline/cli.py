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
import contextlib
import os
import sys
from typing import Optional, Sequence

# The verbs, by user task (each module registers its subcommands; heavy libraries are
# imported inside the verbs only, so `imgpipe` starts fast).
from pipeline import cli_cluster, cli_inspect, cli_run
from pipeline.cli_common import FAILED, USAGE, Job, print_say
# Kept under their old names for callers of pipeline.cli.
from pipeline.cli_run import failed_result as _failed_result  # pylint: disable=unused-import
from pipeline.cli_run import latest_pushed_model  # pylint: disable=unused-import

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFT/TFMA need Keras 2 (tf_keras)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgpipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (cli_run, cli_inspect, cli_cluster):
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not args.verb.pass_through:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.verb.console is None:
        return _call(Job(args, print_say, rest=rest), log=None)
    return _with_console(args, rest)


def _call(job: Job, log: Optional[str]) -> int:
    """Runs a verb; the one place an exception becomes an exit code (see cli_common):
    a bad flag, setting or path is USAGE; anything else is FAILED, with the traceback in
    the log (without one, a RuntimeError is a cluster's one-line answer and the rest
    propagate)."""
    try:
        return job.args.verb.run(job)
    except (ValueError, FileNotFoundError) as err:
        job.say(f"imgpipe: error: {err}", error=True)
        return USAGE
    except Exception as err:  # pylint: disable=broad-except
        if log is None:
            if not isinstance(err, RuntimeError):
                raise
            job.say(f"imgpipe: error: {err}", error=True)
            return FAILED
        import traceback  # pylint: disable=g-import-not-at-top
        traceback.print_exc()  # into the log only
        first = " ".join(str(err).split()) or type(err).__name__
        job.say(f"imgpipe: error: {type(err).__name__}: {first[:400]}", error=True)
        job.say(f"imgpipe: the traceback is in the full log: {log}", error=True)
        return FAILED


def _log_path(args) -> str:
    """WORKDIR/logs/<run id>.log; for ingest, next to a local output (else a temp folder)."""
    import datetime  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.verb.console == "quiet":
        workdir = os.path.abspath(args.workdir) if getattr(args, "workdir", None) else ""
        folder = os.path.join(workdir, "logs") if workdir and os.path.isdir(workdir) \
            else os.path.join(tempfile.gettempdir(), "imgpipe-logs")
        return os.path.join(folder, f"{args.command}-{stamp}.log")
    if args.command == "ingest":
        output = args.output if "://" in args.output else os.path.abspath(args.output)
        folder = (output.rstrip("/") + "-logs") if "://" not in output \
            else os.path.join(tempfile.gettempdir(), "imgpipe-logs")
        return os.path.join(folder, f"ingest-{stamp}.log")
    return os.path.join(os.path.abspath(args.workdir), "logs", f"{stamp}.log")


def _remove_log(log: str, existed: Sequence[str]) -> None:
    """Bad settings: leave no log (nor folders) behind in a possibly mistyped workdir."""
    os.remove(log)
    for folder in (os.path.dirname(log), os.path.dirname(os.path.dirname(log))):
        if folder not in existed and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def _with_console(args, rest) -> int:
    """Runs a verb with the quiet console; the full log goes to a file. The config is built
    here, once, before the verb starts."""
    import time  # pylint: disable=g-import-not-at-top
    from pipeline import console  # pylint: disable=g-import-not-at-top  (no TensorFlow)
    from pipeline.cli_common import duration  # pylint: disable=g-import-not-at-top
    start = time.monotonic()
    verb = args.verb
    log = _log_path(args)
    existed = [p for p in (os.path.dirname(os.path.dirname(log)), os.path.dirname(log))
               if os.path.isdir(p)]
    with contextlib.ExitStack() as stack:
        try:
            capture = stack.enter_context(
                console.Capture(log, verbose=getattr(args, "verbose", False)))
        except OSError as err:
            print(f"imgpipe: error: cannot write the log {log}: {err}", file=sys.stderr)
            return USAGE
        config = None
        if verb.settings is not None:
            try:
                config = verb.settings(args)
            except (ValueError, FileNotFoundError) as err:
                capture.say(f"imgpipe: error: {err}", error=True)
                stack.close()
                _remove_log(log, existed)
                return USAGE
        rc = _call(Job(args, capture.say, config, rest), log)
        if verb.console == "pipeline":
            capture.say(f"imgpipe: full log: {log}")
            capture.say(f"imgpipe: total {duration(time.monotonic() - start)} (exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
