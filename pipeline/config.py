"""The one settings object of the pipeline.

`PipelineConfig` is a plain dataclass. It is built from, in increasing priority:
defaults < a YAML file (read with `yaml.safe_load`) < explicit overrides (CLI flags,
or `IMGPIPE_*` variables read by `local_runner.py`). Nothing below the CLI and the
runners reads the environment.

Paths under `workdir` are fixed by contract:
    workdir/pipeline_root/    TFX artifacts
    workdir/metadata.sqlite   ML Metadata
    workdir/serving/<version> the pushed SavedModel
    workdir/schema/schema.pbtxt  this dataset's schema (written by the first run; editable)
    workdir/reports/data-<id>/   the data report of each run (index.html, samples.png)
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Mapping, Optional

import yaml

from trainer_module import features

LAYOUTS = ("auto", "class_folders", "pre_split", "csv")
UNSUPPORTED_POLICIES = ("reencode", "quarantine")
COMPRESSIONS = ("none", "gzip")
STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
BEAM_RUNNERS = ("direct", "dataflow")
LR_SCHEDULES = ("constant", "cosine")
# Component ids of create_pipeline, the keys `resources` may name.
COMPONENTS = ("ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
              "DataGate", "Transform", "Trainer", "Evaluator", "Pusher",
              "DataReport", "RunReport")  # the last two: Kubeflow/Vertex only
_RESOURCE_KEYS = ("cpu", "memory")
# A service account's email: NAME@PROJECT.iam (user-managed), or a project's default compute
# (NUMBER-compute@developer) or App Engine (PROJECT@appspot) account.
_SERVICE_ACCOUNT = re.compile(
    r"[a-z0-9][a-z0-9-]{0,62}@([a-z0-9][a-z0-9.-]*\.iam|developer|appspot)"
    r"\.gserviceaccount\.com")


@dataclasses.dataclass
class PipelineConfig:
    """All settings of one pipeline. Field docs are the contract for YAML keys."""

    data_root: str = ""  # folder of class folders, a pre-split tree, or a CSV manifest
    workdir: str = "imgpipe_workdir"
    pipeline_name: str = "imgpipe"

    # Ingest (ImageExampleGen).
    layout: str = "auto"  # one of LAYOUTS; auto detects csv / pre_split / class_folders
    eval_fraction: float = 0.2  # of images whose split is not given by the layout
    test_fraction: float = 0.0
    verify_images: bool = True  # full decode at ingest so corrupt files never reach training
    max_pixels: int = features.MAX_PIXELS  # decompression-bomb limit, from the header;
    # ingest quarantines larger images and the exported model refuses them at serving
    max_side: Optional[int] = None  # ingest-time downscale of larger images (re-encoded JPEG)
    jpeg_quality: int = 90
    unsupported_formats: str = "reencode"  # webp/tiff...: one of UNSUPPORTED_POLICIES
    num_shards: int = 0  # exact shards per split; 0 sizes shards by target_shard_mb
    target_shard_mb: float = 128.0  # shard size target when num_shards is 0
    compression: str = "none"  # TFRecord compression: one of COMPRESSIONS
    # Threads, not processes: TF's decoder releases the GIL, and worker processes cost ~8 s
    # of imports each (BENCHMARKS.md, "Ingest": faster end to end at 2k and 20k images).
    ingest_beam_args: list = dataclasses.field(
        default_factory=lambda: ["--direct_running_mode=multi_threading",
                                 "--direct_num_workers=2"])
    beam_pipeline_args: list = dataclasses.field(default_factory=list)

    # Schema: None writes this dataset's schema to workdir/schema/schema.pbtxt on the first
    # run (the curated template plus the vocabulary) and validates later runs against it; a
    # path uses that file as it is.
    schema_path: Optional[str] = None
    # Data gate warnings (they never block): train/eval label-proportion distance (L-inf),
    # largest/smallest class ratio, and quarantined share of image files at ingest.
    label_skew_threshold: float = 0.1
    imbalance_ratio: float = 10.0
    max_quarantine_fraction: float = 0.05

    # Training.
    image_size: int = 300
    batch_size: int = 32
    epochs: int = 5
    train_steps: Optional[int] = None  # steps per epoch; None = one pass over the train split
    eval_steps: Optional[int] = None
    learning_rate: float = 1e-3
    # constant | cosine: each stage's rate decays to 0 over its steps (steadier last epochs)
    lr_schedule: str = "constant"
    fine_tune_epochs: int = 0  # stage 2: unfreeze the top `fine_tune_blocks` blocks
    fine_tune_blocks: int = 2
    fine_tune_learning_rate: float = 1e-5
    dropout: float = 0.2
    label_smoothing: float = 0.1
    augment: bool = True
    weights: str = "none"  # none | imagenet | path to a (notop) weights file, local or gs://
    strategy: str = "auto"  # one of STRATEGIES
    precision: str = "auto"  # one of PRECISIONS; auto = fp16 on GPU, bf16 on TPU, else fp32
    xla: bool = False
    # tf.data cache of decoded uint8 images: auto (memory when train + eval decode to <= 1 GiB,
    # else none) | none | memory | an absolute file path prefix
    cache: str = "auto"
    shuffle_buffer: int = 2048
    profile_batches: Optional[str] = None  # e.g. "10,20": TensorBoard profiler window
    # Training backups, so that a restarted Trainer execution resumes from the last one: at
    # an epoch's end once this many seconds have passed since the last; 0: every epoch.
    # None: 60 where the orchestrator restarts the same execution (Kubeflow, Vertex); none in
    # local runs, where every run is a new execution with a new model_run folder, so a
    # backup could never be read.
    backup_interval_s: Optional[float] = None
    tpu_address: Optional[str] = None

    # Evaluation / blessing.
    min_accuracy: float = 0.5  # absolute lower bound for blessing
    max_accuracy_drop: float = 0.0  # allowed drop against the latest blessed model
    # Lowest allowed recall of any class (argmax decisions); None: no per-class threshold.
    min_class_recall: Optional[float] = None

    enable_cache: bool = True  # TFX step caching

    # Kubeflow Pipelines / Vertex AI (`imgpipe compile|submit|schedule`; local runs ignore them).
    image: str = ""  # container image of every task (build it from kubeflow/Dockerfile)
    # The GPU variant of `image` (kubeflow/Dockerfile --build-arg VARIANT=gpu), used by the
    # Trainer when trainer_accelerator names a GPU (NVIDIA_*).
    gpu_image: str = ""
    # Per component id (see COMPONENTS): {"Trainer": {"cpu": 8, "memory": "32G"}}; memory in
    # G (or a number of GB), cpu in cores. In YAML a mapping; with --set, a YAML/JSON string.
    resources: dict = dataclasses.field(default_factory=dict)
    # One accelerator name for both targets, Vertex style (NVIDIA_TESLA_T4, NVIDIA_L4,
    # NVIDIA_TESLA_A100, TPU_V3, ...); kubeflow/targets.py maps it (KFP: nvidia.com/gpu).
    trainer_accelerator: Optional[str] = None
    trainer_accelerator_count: int = 0
    beam_runner: str = "direct"  # one of BEAM_RUNNERS, for the Beam components when compiled
    gcp_project: Optional[str] = None  # Dataflow and Vertex custom training
    gcp_region: Optional[str] = None
    dataflow_temp_location: Optional[str] = None  # gs://bucket/tmp for Dataflow
    # Vertex only: run the Trainer as a Vertex AI custom job (TFX's Google Cloud Trainer
    # extension) on this machine type, with trainer_accelerator and replicas.
    vertex_training: bool = False
    vertex_machine_type: str = "n1-standard-8"
    vertex_replica_count: int = 1  # >1 adds a worker pool (MultiWorkerMirroredStrategy)
    # Google service account of Vertex's pipeline and training jobs; None: the project's default
    service_account: Optional[str] = None

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.workdir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.workdir, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.workdir, "serving")

    @property
    def dataset_schema_path(self) -> str:
        return os.path.join(self.workdir, "schema", "schema.pbtxt")

    @property
    def reports_dir(self) -> str:
        return os.path.join(self.workdir, "reports")

    def validate(self) -> "PipelineConfig":
        """Checks every field; raises ValueError naming the field, value and what is allowed."""
        _choice("layout", self.layout, LAYOUTS)
        _choice("unsupported_formats", self.unsupported_formats, UNSUPPORTED_POLICIES)
        _choice("compression", self.compression, COMPRESSIONS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("beam_runner", self.beam_runner, BEAM_RUNNERS)
        _check_resources(self.resources)
        if self.service_account is not None and not _SERVICE_ACCOUNT.fullmatch(
                self.service_account):
            raise ValueError(f"service_account={self.service_account!r}: must be a service "
                             "account email such as name@my-project.iam.gserviceaccount.com, "
                             "or unset.")
        if self.trainer_accelerator_count < 0 or self.vertex_replica_count < 1:
            raise ValueError("trainer_accelerator_count must be >= 0 and "
                             "vertex_replica_count >= 1.")
        if bool(self.trainer_accelerator) != (self.trainer_accelerator_count > 0):
            raise ValueError(f"trainer_accelerator={self.trainer_accelerator!r} with "
                             f"trainer_accelerator_count={self.trainer_accelerator_count}: "
                             "set both (a type and a count >= 1) or neither.")
        if not self.data_root:
            raise ValueError("data_root is empty: give the image folder or CSV manifest "
                                              "(--data-root or data_root: in the YAML).")
        if not self.workdir:
            raise ValueError("workdir is empty.")
        if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
            raise ValueError(f"workdir={self.workdir!r} exists and is not a folder.")
        from components.image_example_gen import sources  # pylint: disable=g-import-not-at-top
        if sources.is_inside(self.workdir, self.data_root):
            raise ValueError(f"workdir={self.workdir!r} is inside data_root="
                             f"{self.data_root!r}; the next run would ingest its files. "
                             "Choose a workdir outside the data root.")
        for name in ("eval_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r}: must be in [0, 1).")
        if self.eval_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"eval_fraction + test_fraction = "
                                              f"{self.eval_fraction + self.test_fraction}: must be < 1.")
        if self.eval_fraction <= 0.0:
            raise ValueError("eval_fraction must be > 0: the Evaluator needs an eval split.")
        if self.image_size < 32:
            raise ValueError(f"image_size={self.image_size}: EfficientNetB3 needs at least 32.")
        for name in ("batch_size", "epochs", "max_pixels", "jpeg_quality"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= 1.")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality}: must be in [1, 100].")
        for name in ("train_steps", "eval_steps", "max_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value!r}: must be >= 1 or unset.")
        if not 0 < self.target_shard_mb < 1 << 30:
            raise ValueError(f"target_shard_mb={self.target_shard_mb}: must be > 0 and < 2**30.")
        if self.num_shards < 0 or self.fine_tune_epochs < 0 or self.fine_tune_blocks < 0:
            raise ValueError("num_shards, fine_tune_epochs and fine_tune_blocks must be >= 0.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: must be in [0, 1).")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing}: must be in [0, 1).")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ValueError(f"min_accuracy={self.min_accuracy}: must be in [0, 1].")
        if self.max_accuracy_drop < 0.0:
            raise ValueError(f"max_accuracy_drop={self.max_accuracy_drop}: must be >= 0.")
        if self.min_class_recall is not None and not 0.0 <= self.min_class_recall <= 1.0:
            raise ValueError(f"min_class_recall={self.min_class_recall}: must be in [0, 1] "
                             "(or unset).")
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("learning_rate", "fine_tune_learning_rate"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be > 0.")
        if not 0.0 <= self.label_skew_threshold <= 1.0 or self.imbalance_ratio < 1.0 \
                or not 0.0 <= self.max_quarantine_fraction <= 1.0:
            raise ValueError("label_skew_threshold and max_quarantine_fraction must be in "
                             "[0, 1], imbalance_ratio >= 1.")
        if self.shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer={self.shuffle_buffer}: must be >= 1.")
        if self.backup_interval_s is not None and not 0.0 <= self.backup_interval_s < float(
                "inf"):
            raise ValueError(f"backup_interval_s={self.backup_interval_s}: must be >= 0 "
                             "(0 backs up every epoch), or unset.")
        if self.cache not in ("auto", "none", "memory") and (
                self.cache.endswith("/") or not os.path.isabs(self.cache)
                and "://" not in self.cache):
            raise ValueError(f"cache={self.cache!r}: must be auto, none, memory, or an absolute "
                             "file prefix such as /scratch/imgpipe-cache (not a folder, and "
                             "not relative: it would land in whatever folder the run starts in).")
        if self.profile_batches is not None and not re.fullmatch(
                r"\d+(,\d+)?", str(self.profile_batches).replace(" ", "")):
            raise ValueError(f"profile_batches={self.profile_batches!r}: give one batch "
                             "number (5) or a window (10,20).")
        for name in ("weights", "schema_path"):
            path = getattr(self, name)
            if path and path not in ("none", "imagenet") and "://" not in path \
                    and not os.path.isfile(path):
                raise ValueError(f"{name}={path!r}: no such file"
                                 + ("; use none, imagenet, or a path to EfficientNetB3 "
                                    "(include_top=False) weights." if name == "weights" else "."))
        return self

    def trainer_config(self) -> dict:
        """The JSON-able subset the Trainer's run_fn receives as custom_config.

        Plus what trainer_accelerator asks for, which run_fn checks before training:
        `accelerator` is "GPU" (NVIDIA_*), "TPU" (TPU_*) or None, and `accelerator_request`
        names it ("NVIDIA_TESLA_T4 x2") or is None.
        """
        keys = ("image_size", "batch_size", "epochs", "learning_rate", "lr_schedule",
                "fine_tune_epochs",
                        "fine_tune_blocks", "fine_tune_learning_rate", "dropout", "label_smoothing",
                        "augment", "weights", "strategy", "precision", "xla", "cache",
                        "shuffle_buffer", "profile_batches", "tpu_address",
                        "backup_interval_s", "max_pixels")
        name = self.trainer_accelerator or ""
        kind = "GPU" if name.startswith("NVIDIA_") else "TPU" if name.startswith("TPU_") else None
        request = f"{name} x{self.trainer_accelerator_count}" if kind else None
        return {**{k: getattr(self, k) for k in keys}, "accelerator": kind,
                "accelerator_request": request}


def memory_gb(value: Any) -> float:
    """'32G', '512M', '16Gi' or a number of GB -> GB as a float (what ResourceSpec takes)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9.]+)\s*([GgMm])i?[Bb]?\s*", str(value))
        if not match:
            raise ValueError(f"memory={value!r}: give e.g. 16G, 512M or a number of GB.")
        number = float(match.group(1)) / (1024 if match.group(2) in "Mm" else 1)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"memory={value!r}: must be > 0.")
    return number


def _check_resources(resources: Any) -> None:
    if not isinstance(resources, dict):
        raise ValueError(f"resources={resources!r}: must be a mapping of component id to "
                         "{cpu: N, memory: 16G}.")
    for component, spec in resources.items():
        if component not in COMPONENTS:
            raise ValueError(f"resources: unknown component {component!r}; one of "
                             f"{', '.join(COMPONENTS)}.")
        if not isinstance(spec, dict) or not spec or set(spec) - set(_RESOURCE_KEYS):
            raise ValueError(f"resources.{component}={spec!r}: give cpu and/or memory, "
                             "e.g. {cpu: 4, memory: 16G}.")
        cpu = spec.get("cpu")
        if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, (int, float))
                                or not 0 < cpu < math.inf):
            raise ValueError(f"resources.{component}.cpu={cpu!r}: must be a number > 0.")
        if "memory" in spec:
            memory_gb(spec["memory"])


def _choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(allowed)}.")


_FIELDS = {f.name: f for f in dataclasses.fields(PipelineConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Converts strings (from CLI/env) to the field's type; passes other values through."""
    default = _FIELDS[name].default
    if name == "resources":
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ValueError(f"resources={value!r}: not a YAML/JSON mapping.") from err
        return value if value is not None else {}
    if _FIELDS[name].default_factory is not dataclasses.MISSING:  # list fields
        if isinstance(value, str):
            return value.split()
        if not isinstance(value, list):
            raise ValueError(f"{name}={value!r}: must be a list of strings.")
        return [str(v) for v in value]
    if value is None:
        return None
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{name}={value!r}: must be true or false.")
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise ValueError(f"{name}={value!r}: must be true or false.")
    kind = type(default) if default is not None else None
    if name in ("train_steps", "eval_steps", "max_side"):
        kind = int
    if name in ("min_class_recall", "backup_interval_s"):
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        kind = float
    if isinstance(value, bool) and kind in (int, float):  # YAML `true` is not a number
        raise ValueError(f"{name}={value!r}: must be a finite {kind.__name__}.")
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name}={value!r}: must be a finite {kind.__name__}.") from err
    return str(value)


def load_config(path: Optional[str] = None,
                                overrides: Optional[Mapping[str, Any]] = None) -> PipelineConfig:
    """Builds a validated config from an optional YAML file plus overrides.

    Args:
        path: YAML file with a mapping of field names to values, or None.
        overrides: field values that win over the file; `None` values are ignored so
            unset CLI flags do not clobber the file.

    Raises:
        ValueError: unknown keys, wrong types or out-of-range values (message names them).
        FileNotFoundError: `path` does not exist.
    """
    values: dict = {}
    if path:
        with open(path, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as err:
                raise ValueError(f"config file {path} is not valid YAML: "
                                 f"{' '.join(str(err).split())}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path}: top level must be a mapping of settings.")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}; "
                                          f"known keys: {', '.join(sorted(_FIELDS))}.")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    return PipelineConfig(**coerced).validate()
