"""`TrainOptions`: every training setting, declared, defaulted and validated here only.

Plain Python (no TensorFlow): pipeline/config.py composes it into PipelineConfig, and the
Trainer's run_fn rebuilds it from `custom_config` (`TrainOptions.from_dict`), which
validates again on the far side of the orchestrator.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Optional

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("constant", "cosine")
# What an unset backup_interval_s means where the orchestrator restarts the same Trainer
# execution (Kubeflow, Vertex); a local run gives every run a new execution: no backups.
RESTART_BACKUP_INTERVAL_S = 60.0


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Settings of `train.train_and_export` (and so of the Trainer). Field comments are the
    contract for the YAML keys of the same names.

    Raises (on construction):
      ValueError: naming the first bad field, its value and what is allowed.
    """
    image_size: int = 300  # training and serving side, pixels (EfficientNetB3's native 300)
    batch_size: int = 32  # per replica (strategy.py multiplies by the replicas)
    epochs: int = 5
    train_steps: Optional[int] = None  # steps per epoch; None = one pass over the train split
    eval_steps: Optional[int] = None  # None = the whole eval split
    learning_rate: float = 1e-3
    # constant | cosine: each stage's rate decays to 0 over its steps (steadier last epochs)
    lr_schedule: str = "constant"
    fine_tune_epochs: int = 0  # stage 2: unfreeze the top `fine_tune_blocks` blocks
    fine_tune_blocks: int = 2
    fine_tune_learning_rate: float = 1e-5
    dropout: float = 0.2
    label_smoothing: float = 0.1
    augment: bool = True  # flip, rotation, zoom and contrast in the training model only
    # The augmentation's random zoom done while decoding (a zoom-in decodes only its JPEG
    # window) instead of as a model layer: ~3.3 ms/img less CPU where the model runs on the
    # CPU (BENCHMARKS.md "Random crop"); no cache then, as each epoch draws new zooms.
    random_crop: bool = False
    seed: Optional[int] = None  # shuffle and crop seed; None: a new order every run
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
    # None: RESTART_BACKUP_INTERVAL_S where the orchestrator restarts the same execution
    # (Kubeflow, Vertex); none in local runs, where every run is a new execution with a new
    # model_run folder, so a backup could never be read.
    backup_interval_s: Optional[float] = None
    tpu_address: Optional[str] = None  # a TPU name or grpc:// address; None: the local TPU

    def __post_init__(self):
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("image_size", "batch_size", "epochs", "shuffle_buffer"):
            _int(name, getattr(self, name), low=1)
        if self.image_size < 32:
            raise ValueError(f"image_size={self.image_size}: EfficientNetB3 needs at least 32.")
        for name in ("fine_tune_epochs", "fine_tune_blocks"):
            _int(name, getattr(self, name), low=0)
        for name in ("train_steps", "eval_steps", "seed"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name), low=1 if name != "seed" else 0)
        for name in ("augment", "random_crop", "xla"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: must be true or false.")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            if not _number(getattr(self, name)) > 0.0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be > 0.")
        for name in ("dropout", "label_smoothing"):
            if not 0.0 <= _number(getattr(self, name)) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be in [0, 1).")
        if self.backup_interval_s is not None and not 0.0 <= _number(
                self.backup_interval_s) < math.inf:
            raise ValueError(f"backup_interval_s={self.backup_interval_s}: must be >= 0 "
                             "(0 backs up every epoch), or unset.")
        if not isinstance(self.cache, str) or self.cache not in ("auto", "none", "memory") and (
                self.cache.endswith("/") or not os.path.isabs(self.cache)
                and "://" not in self.cache):
            raise ValueError(f"cache={self.cache!r}: must be auto, none, memory, or an absolute "
                             "file prefix such as /scratch/imgpipe-cache (not a folder, and "
                             "not relative: it would land in whatever folder the run starts in).")
        if self.random_crop and not self.augment:
            raise ValueError("random_crop=true is the augmentation's zoom, and augment=false "
                             "turns augmentation off; set one of them.")
        if self.random_crop and self.cache not in ("auto", "none"):
            raise ValueError(f"random_crop=true with cache={self.cache!r} would freeze one crop "
                             "per image; use cache auto or none.")
        if self.profile_batches is not None:
            profile_batch(self.profile_batches)
        if self.weights not in ("none", "imagenet") and "://" not in self.weights \
                and not os.path.isfile(self.weights):
            raise ValueError(f"weights={self.weights!r}: no such file; use none, imagenet, or "
                             "a path to EfficientNetB3 (include_top=False) weights.")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainOptions":
        """From a mapping of field names (run_fn's custom_config, train_and_export's kwargs).

        Raises:
          ValueError: unknown keys (named, with the known ones) or bad values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}; known: "
                             f"{sorted(known)}.")
        return cls(**values)


def profile_batch(value):
    """profile_batches -> TensorBoard's profile_batch: 0 (off), a batch, or "start,stop"."""
    if value in (None, "", 0):
        return 0
    text = str(value).replace(" ", "")
    parts = text.split(",")
    if not (1 <= len(parts) <= 2 and all(p.isdigit() and int(p) > 0 for p in parts)
            and int(parts[0]) <= int(parts[-1])):
        raise ValueError(f"profile_batches={value!r}: give one batch (5) or a window "
                         "'start,stop' of batch numbers >= 1.")
    return text if len(parts) == 2 else int(parts[0])


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return math.nan
    return float(value)


def _int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r}: must be an int >= {low}.")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(allowed)}.")
