"""`GateOptions`: the data gate's settings, declared, defaulted and validated here only.

Plain Python: pipeline/config.py composes it into PipelineConfig without importing TFDV.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional


@dataclasses.dataclass(frozen=True)
class GateOptions:
    """Schema and warning thresholds of DatasetSchemaGen and DataGate.

    Raises (on construction):
      ValueError: naming the first bad field, its value and what is allowed.
    """
    # None writes this dataset's schema to workdir/schema/schema.pbtxt on the first run
    # (the curated template plus the vocabulary) and validates later runs against it; a path
    # (local, or gs:// on a cluster) uses that file as it is.
    schema_path: Optional[str] = None
    # Warnings (they never block): train/eval label-proportion distance (L-inf), largest to
    # smallest class ratio, and the quarantined share of image files at ingest.
    label_skew_threshold: float = 0.1
    imbalance_ratio: float = 10.0
    max_quarantine_fraction: float = 0.05

    def __post_init__(self):
        for name in ("label_skew_threshold", "max_quarantine_fraction"):
            if not 0.0 <= _number(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be in [0, 1].")
        if not 1.0 <= _number(self.imbalance_ratio) < math.inf:
            raise ValueError(f"imbalance_ratio={self.imbalance_ratio!r}: must be >= 1.")
        if self.schema_path is not None and "://" not in self.schema_path \
                and not os.path.isfile(self.schema_path):
            raise ValueError(f"schema_path={self.schema_path!r}: no such file.")


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)
