"""`imgpipe`: a thin command line over the pipeline's functions.

  imgpipe run    --data-root D --workdir W [--config F] [--image-size N] [--epochs N]
                 [--batch-size N] [--train-steps N] [--set key=value ...]
  imgpipe demo   [--workdir W]        generate an offline dataset, then `run` on it
  imgpipe ingest --data-root D --output O [ingest flags] [Beam flags, e.g. --runner ...]

Flags override the YAML config; `--set` reaches any PipelineConfig field.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFT/TFMA need Keras 2 (tf_keras)

DEMO_SETTINGS = {  # measured: val accuracy ~0.7 from scratch, a few minutes on 2 CPU cores
    "image_size": 64, "batch_size": 16, "epochs": 20, "learning_rate": 1e-3,
    "augment": False, "cache": "memory", "min_accuracy": 0.5, "dropout": 0.1,
    "label_smoothing": 0.0,
}
DEMO_DATA = {"images_per_class": 150, "min_side": 96, "max_side": 256}


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
    """Newest version folder under workdir/serving, or None."""
    if not os.path.isdir(serving_dir):
        return None
    versions = [v for v in os.listdir(serving_dir) if v.isdigit()]
    return os.path.join(serving_dir, max(versions, key=int)) if versions else None


def _run(config) -> int:
    from pipeline import local_runner  # pylint: disable=g-import-not-at-top
    before = latest_pushed_model(config.serving_dir)
    try:
        local_runner.run(config)
    except RuntimeError as err:  # a component's one-line verdict on the data or settings
        print(f"imgpipe: {err}", file=sys.stderr)
        return 1
    pushed = latest_pushed_model(config.serving_dir)
    if pushed and pushed != before:
        print(f"imgpipe: pushed model: {pushed}")
    elif pushed:
        print(f"imgpipe: no new model pushed (cached or not blessed); latest: {pushed}")
    else:
        print("imgpipe: no model pushed: the Evaluator did not bless it "
              f"(see {config.pipeline_root}/Evaluator).")
        return 1
    return 0


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
    return _run(_config(args))


def cmd_demo(args) -> int:
    from pipeline import demo_data  # pylint: disable=g-import-not-at-top
    workdir = _abs(args.workdir)
    data_root = os.path.join(workdir, "data")
    args.data_root = data_root
    config = _config(args, **DEMO_SETTINGS)  # bad settings fail before any rendering
    counts = demo_data.generate_dataset(
        data_root, **dict(DEMO_DATA, images_per_class=args.images_per_class))
    print(f"imgpipe: demo dataset: {sum(counts.values())} images in {data_root} {counts}")
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
        print(f"imgpipe: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"output": output, **report["counts"],
                      "per_split": {k: sum(v.values()) for k, v in report["per_split"].items()},
                      "classes": len(report["classes"])}, ensure_ascii=False))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="imgpipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the TFX pipeline locally on your images")
    run.add_argument("--data-root", required=True)
    run.add_argument("--workdir", required=True)
    _add_run_flags(run)

    demo = sub.add_parser("demo", help="generate an offline demo dataset and run on it")
    demo.add_argument("--workdir", default="demo_workdir")
    demo.add_argument("--images-per-class", type=int, default=DEMO_DATA["images_per_class"])
    _add_run_flags(demo)

    ingest = sub.add_parser("ingest", help="standalone Beam job: images -> TFRecords")
    ingest.add_argument("--data-root", required=True)
    ingest.add_argument("--output", required=True)
    ingest.add_argument("--config", help="YAML file (ingest fields are used)")
    ingest.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "ingest":
            return cmd_ingest(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return cmd_run(args) if args.command == "run" else cmd_demo(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"imgpipe: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
