"""The one settings object of the pipeline, composed of each layer's own options.

Every setting is declared, defaulted and validated once, in the layer that uses it:
  ingest      components/image_example_gen/options.py  IngestOptions (data_root, layout, ...)
  validation  components/data_validation/options.py    GateOptions (schema_path, thresholds)
  training    trainer_module/options.py                TrainOptions (image_size, epochs, ...)
  evaluation  pipeline/evaluation.py                   EvalOptions (min_accuracy, ...)
  cluster     kubeflow/options.py                      ClusterOptions (image, resources, ...)
plus the few settings of the run itself, declared below. Their field comments are the
reference of every YAML key.

`load_config` builds it from, in increasing priority: defaults < a YAML file (read with
`yaml.safe_load`) < explicit overrides (CLI flags, `--set`, or `IMGPIPE_*` variables read
by `local_runner.py`). Keys are flat (`epochs: 3`; every field name is unique across the
sections) or nested under a section (`training: {epochs: 3}`); strings are converted to the
type each field declares. Loading settings imports neither Beam nor TensorFlow.

The workdir's layout is the contract module's: features.pipeline_root(config.workdir), ...
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from typing import Any, Mapping, Optional

import yaml

from components.data_validation.options import GateOptions
from components.image_example_gen.options import IngestOptions, is_inside
from kubeflow.options import ClusterOptions
from pipeline.evaluation import EvalOptions
from trainer_module import features
from trainer_module.options import TrainOptions

SECTIONS = {"ingest": IngestOptions, "validation": GateOptions, "training": TrainOptions,
            "evaluation": EvalOptions, "cluster": ClusterOptions}


@dataclasses.dataclass
class PipelineConfig:
    """All settings of one pipeline: the run's own, and one options object per layer."""

    ingest: IngestOptions
    workdir: str = "imgpipe_workdir"
    pipeline_name: str = "imgpipe"
    enable_cache: bool = True  # TFX step caching
    # Threads, not processes: TF's decoder releases the GIL, and worker processes cost ~8 s
    # of imports each (BENCHMARKS.md, "Ingest": faster end to end at 2k and 20k images).
    ingest_beam_args: list = dataclasses.field(
        default_factory=lambda: ["--direct_running_mode=multi_threading",
                                 "--direct_num_workers=2"])
    beam_pipeline_args: list = dataclasses.field(default_factory=list)  # the other Beam steps
    validation: GateOptions = dataclasses.field(default_factory=GateOptions)
    training: TrainOptions = dataclasses.field(default_factory=TrainOptions)
    evaluation: EvalOptions = dataclasses.field(default_factory=EvalOptions)
    cluster: ClusterOptions = dataclasses.field(default_factory=ClusterOptions)

    @property
    def data_root(self) -> str:
        return self.ingest.data_root

    def validate(self) -> "PipelineConfig":
        """Checks what spans sections (each section checked itself when built); raises
        ValueError naming the setting, its value and what is allowed."""
        if not self.workdir:
            raise ValueError("workdir is empty.")
        if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
            raise ValueError(f"workdir={self.workdir!r} exists and is not a folder.")
        if is_inside(self.workdir, self.data_root):
            raise ValueError(f"workdir={self.workdir!r} is inside data_root="
                             f"{self.data_root!r}; the next run would ingest its files. "
                             "Choose a workdir outside the data root.")
        if self.ingest.eval_fraction <= 0.0:
            raise ValueError("eval_fraction must be > 0: the Evaluator needs an eval split.")
        return self


_TOP = {f.name: f for f in dataclasses.fields(PipelineConfig)
        if f.name != "ingest" and f.name not in SECTIONS}
# Flat key -> its section; the names are unique across sections (checked at import).
_SECTION_OF = {f.name: section for section, cls in SECTIONS.items()
               for f in dataclasses.fields(cls)}
assert len(_SECTION_OF) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values()) \
    and not set(_SECTION_OF) & set(_TOP), "a setting name is declared twice"
_HINTS = {**{name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()},
          "": typing.get_type_hints(PipelineConfig)}


def known_keys() -> list:
    return sorted([*_TOP, *_SECTION_OF])


def _coerce(name: str, value: Any, hint) -> Any:
    """Converts a value (a string from the CLI or the environment, or YAML's) to `hint`."""
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if value is None or isinstance(value, str) and value.strip().lower() in (
                "", "none", "null", "off"):
            return None
    if hint is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ValueError(f"{name}={value!r}: not a YAML/JSON mapping.") from err
        return value if value is not None else {}
    if hint is list:
        if isinstance(value, str):
            return value.split()
        if not isinstance(value, list):
            raise ValueError(f"{name}={value!r}: must be a list of strings.")
        return [str(v) for v in value]
    if value is None:
        raise ValueError(f"{name} is empty: give a {hint.__name__}.")
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise ValueError(f"{name}={value!r}: must be true or false.")
    if hint in (int, float):
        try:
            if isinstance(value, bool):  # YAML `true` is not a number
                raise ValueError
            if hint is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value)
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{name}={value!r}: must be a finite {hint.__name__}.") from err
    return str(value)


def load_config(path: Optional[str] = None,
                overrides: Optional[Mapping[str, Any]] = None) -> PipelineConfig:
    """Builds a validated config from an optional YAML file plus overrides.

    Args:
      path: YAML file: a mapping of setting names (flat) or section names (ingest,
        validation, training, evaluation, cluster) to values, or None.
      overrides: settings that win over the file, in the same form; `None` values are
        ignored so unset CLI flags do not clobber the file.

    Raises:
      ValueError: unknown keys, wrong types or out-of-range values (message names them).
      FileNotFoundError: `path` does not exist.
    """
    layers = []
    if path:
        with open(path, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as err:
                raise ValueError(f"config file {path} is not valid YAML: "
                                 f"{' '.join(str(err).split())}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path}: top level must be a mapping of settings.")
        layers.append(loaded)
    layers.append({k: v for k, v in (overrides or {}).items() if v is not None})

    top: dict = {}
    sections: dict = {name: {} for name in SECTIONS}
    unknown = []
    for values in layers:
        for key, value in values.items():
            if key in SECTIONS and isinstance(value, dict):
                for sub_key, sub_value in value.items():
                    if _SECTION_OF.get(sub_key) == key:
                        sections[key][sub_key] = _coerce(sub_key, sub_value,
                                                         _HINTS[key][sub_key])
                    else:
                        unknown.append(f"{key}.{sub_key}")
            elif key in _TOP:
                top[key] = _coerce(key, value, _HINTS[""][key])
            elif key in _SECTION_OF:
                section = _SECTION_OF[key]
                sections[section][key] = _coerce(key, value, _HINTS[section][key])
            else:
                unknown.append(key)
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}; "
                         f"known keys: {', '.join(known_keys())}.")
    built = {name: cls(**sections[name]) for name, cls in SECTIONS.items()}
    return PipelineConfig(**built, **top).validate()
