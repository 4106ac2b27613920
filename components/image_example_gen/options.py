"""`IngestOptions`: every ingest setting, declared, defaulted and validated here only.

Imports neither Beam nor TensorFlow: loading settings (pipeline/config.py) and the
`imgpipe` launcher read this module without paying for either.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from trainer_module import features

LAYOUTS = ("auto", "class_folders", "pre_split", "csv")
UNSUPPORTED_POLICIES = ("reencode", "quarantine")
COMPRESSIONS = ("none", "gzip")


@dataclasses.dataclass(frozen=True)
class IngestOptions:
    """What to ingest and how; JSON-serializable so TFX can pass it as an exec property.

    Attributes:
      data_root: folder (class folders or pre-split tree) or CSV manifest; any gfile path.
      layout: one of LAYOUTS; "auto" detects csv / pre_split / class_folders (IngestImages).
      eval_fraction, test_fraction: of images whose split the layout does not give.
      verify_images: full TF decode of every stored image (corrupt files never reach
        training); off, only headers and end markers are checked, so a corrupt image (a
        bad PNG checksum, say) can be stored and fail later, in training.
      max_pixels: decompression-bomb limit, checked from the header before decoding; the
        exported model refuses larger images at serving with the same limit.
      max_side: downscale larger images to this longest side, re-encoded as JPEG at
        jpeg_quality (PNG when they have alpha); None keeps the original bytes.
      unsupported_formats: one of UNSUPPORTED_POLICIES: "reencode" (WebP, TIFF, ... ->
        lossless PNG) or "quarantine".
      num_shards: exact shards per non-empty split; 0 sizes shards by target_shard_mb.
      target_shard_mb: most record MB (2**20 bytes, before compression) per shard when
        num_shards is 0.
      compression: one of COMPRESSIONS (see BENCHMARKS.md for why none is default).

    Raises (on construction):
      ValueError: naming the first bad field, its value and what is allowed.
    """
    data_root: str = ""
    layout: str = "auto"
    eval_fraction: float = 0.2
    test_fraction: float = 0.0
    verify_images: bool = True
    max_pixels: int = features.MAX_PIXELS
    max_side: Optional[int] = None
    jpeg_quality: int = 90
    unsupported_formats: str = "reencode"
    num_shards: int = 0
    target_shard_mb: float = 128.0
    compression: str = "none"

    def __post_init__(self):
        if not isinstance(self.data_root, str) or not self.data_root:
            raise ValueError(f"data_root={self.data_root!r}: give the image folder or CSV "
                             "manifest (--data-root, or data_root: in the YAML).")
        _choice("layout", self.layout, LAYOUTS)
        _choice("compression", self.compression, COMPRESSIONS)
        _choice("unsupported_formats", self.unsupported_formats, UNSUPPORTED_POLICIES)
        for name in ("eval_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r}: must be a number in [0, 1).")
        if self.eval_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"eval_fraction + test_fraction = "
                             f"{self.eval_fraction + self.test_fraction}: must be < 1.")
        if isinstance(self.num_shards, bool) or not isinstance(self.num_shards, int) \
                or self.num_shards < 0:
            raise ValueError(f"num_shards={self.num_shards!r}: must be an int >= 0 "
                             "(0 = by target_shard_mb).")
        if isinstance(self.target_shard_mb, bool) or \
                not isinstance(self.target_shard_mb, (int, float)) or \
                not 0 < self.target_shard_mb < 1 << 30:  # also rejects nan and inf
            raise ValueError(f"target_shard_mb={self.target_shard_mb!r}: must be a number "
                             "> 0 and < 2**30.")
        if not isinstance(self.verify_images, bool):
            raise ValueError(f"verify_images={self.verify_images!r}: must be true or false.")
        if not _positive_int(self.max_pixels):
            raise ValueError(f"max_pixels={self.max_pixels!r}: must be an int >= 1.")
        if self.max_side is not None and not _positive_int(self.max_side):
            raise ValueError(f"max_side={self.max_side!r}: must be an int >= 1, or unset.")
        if not _positive_int(self.jpeg_quality) or self.jpeg_quality > 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality!r}: must be an int in 1..100.")

    @property
    def target_shard_bytes(self) -> int:
        return max(1, int(self.target_shard_mb * (1 << 20)))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IngestOptions":
        values = json.loads(text)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown IngestOptions fields {sorted(unknown)}.")
        return cls(**values)


def is_remote(path: str) -> bool:
    return "://" in path


def is_inside(path: str, folder: str) -> bool:
    """True when `path` is `folder` or lies below it.

    Local: `folder` must be an existing folder; symlinks are resolved. Remote: object stores
    have no real folders, so URLs are compared as strings, without calling the service.
    """
    if is_remote(path) != is_remote(folder) or not (is_remote(folder) or os.path.isdir(folder)):
        return False
    canonical = (lambda p: p.rstrip("/")) if is_remote(folder) else os.path.realpath
    inner, outer = canonical(path), canonical(folder)
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(allowed)}.")
