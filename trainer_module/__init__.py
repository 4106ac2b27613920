"""Model code of the pipeline: one decode/resize (image_ops), the input pipeline
(make_dataset), Transform's preprocessing_fn, the EfficientNetB3 builder and run_fn.

`make_dataset` is imported on first use: ingest workers and the `imgpipe ingest` launcher
import `trainer_module.features` (plain constants) and must not pay for TensorFlow there.
"""
from __future__ import annotations

__all__ = ["make_dataset"]


def __getattr__(name: str):
    if name == "make_dataset":
        from trainer_module.dataset import make_dataset  # pylint: disable=g-import-not-at-top
        return make_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
