"""ImageExampleGen: the project's ingest component (see component.py) and its PTransform.

Names are imported lazily: Beam workers unpickle DoFns from `ingest`, which imports this
package first, and must not pay for importing TFX (~10 s per worker process).
"""
from __future__ import annotations

import importlib

_EXPORTS = {"ImageExampleGen": "component", "IngestImages": "ingest", "IngestOptions": "options"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
