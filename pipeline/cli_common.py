"""What every `imgpipe` verb shares: the exit codes, the job a verb is handed, paths,
`--set` parsing and the one config build per command. Light: no TensorFlow, no Beam."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Callable, Optional, Sequence

# Exit codes: 0 done; 1 the command ran and its answer is no (the data gate stopped the run,
# the model was not blessed, a file could not be classified, the cluster refused); 2 the
# command could not start (a flag, a setting or a path). pipeline/cli.py maps exceptions.
OK, FAILED, USAGE = 0, 1, 2

Say = Callable[..., None]  # say(line, error=False): a console line (stderr with error=True)


def print_say(line: str, error: bool = False) -> None:
    """`say` outside the quiet console (the cluster commands)."""
    print(line, file=sys.stderr if error else sys.stdout, flush=True)


@dataclasses.dataclass(frozen=True)
class Job:
    """What a verb is handed: its flags, its config (built once, before it starts, for the
    commands that have one), where its lines go, and flags it passes on (Beam's)."""
    args: argparse.Namespace
    say: Say
    config: Any = None
    rest: Sequence[str] = ()


@dataclasses.dataclass(frozen=True)
class Verb:
    """A subcommand: `run(job) -> exit code`, and how pipeline/cli.py runs it.

    console: "pipeline" (quiet console, log file, summary lines), "quiet" (the same without
    the summary) or None (plain stdout/stderr). settings: args -> config, built once inside
    the console before the verb; a bad setting is a one-line error and leaves no log.
    pass_through: unknown flags go to the verb instead of being an error."""
    run: Callable[[Job], int]
    console: Optional[str] = None
    settings: Optional[Callable[[argparse.Namespace], Any]] = None
    pass_through: bool = False


def abs_path(path: Optional[str]) -> Optional[str]:
    return path if not path or "://" in path else os.path.abspath(path)


def parse_sets(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The settings flags of the local pipeline commands (run, validate, demo)."""
    parser.add_argument("--config", help="YAML file of PipelineConfig fields")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--train-steps", type=int, help="steps per epoch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other PipelineConfig field; repeatable")


def build_config(args, data_root: Optional[str] = None, **base):
    """The config of a local command: `base` < --config file < --set < the named flags.
    data_root: instead of --data-root (the demo's generated folder)."""
    from pipeline.config import load_config  # pylint: disable=g-import-not-at-top
    overrides = dict(base)
    overrides.update(parse_sets(args.set))
    flags = {"image_size": getattr(args, "image_size", None),
             "epochs": getattr(args, "epochs", None),
             "batch_size": getattr(args, "batch_size", None),
             "train_steps": getattr(args, "train_steps", None)}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    overrides["workdir"] = abs_path(args.workdir)
    data_root = data_root or getattr(args, "data_root", None)
    if data_root:
        overrides["data_root"] = abs_path(data_root)
    return load_config(args.config, overrides)


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"
