"""Offline, deterministic, learnable demo dataset for `imgpipe demo` and the tests.

Contract of :func:`generate_dataset`:

* Writes ``root/<class>/<class>_<i:04d>.jpg|.png`` (one sub-folder per class, any
  unicode class name) and returns ``{class_name: images_written}``.
* Width and height are drawn independently from ``[min_side, max_side]``.
* Per class, ``round(png_fraction * images_per_class)`` images are PNG (every
  other one RGBA with a semi-transparent background, the rest RGB); all others
  are RGB JPEG, quality 90, 4:4:4, baseline.
* Class ``i`` is drawn as shape ``SHAPES[i % 3]`` (filled circle, square,
  triangle), at random position / scale (diameter 45-85 % of the short side) /
  colour, on a noisy two-colour gradient background with a luminance contrast of
  at least 60 (dark shape on light background or the reverse), so the class
  survives downscaling to 32 px.  With more than 3 classes, ``i // 3`` selects a
  stripe pattern painted inside the shape: 0 = solid, 1 = vertical stripes,
  2 = diagonal, 3 = horizontal, 4 = anti-diagonal; beyond 15 classes the
  patterns repeat with a wider stripe period (visible, but harder to learn).
* With ``class_colours=True`` each class's shape is also painted in a colour of its own
  (hue ``i / len(classes)`` around the colour wheel, brightness jittered by -30..+15 %):
  shape and colour together, an easier task that an EfficientNetB3 trained from scratch
  learns in a few hundred steps (the demo uses it; the tests keep the shape-only default).
* Deterministic: the same arguments give byte-identical files on every run
  (each image uses ``numpy.random.default_rng([seed, class_index, i])``; no time,
  no metadata).  Existing files with the same names are overwritten, and stale
  ``<class>_NNNN.jpg|png`` files from an earlier, larger run are removed so the
  folder always holds exactly the returned counts.
* Invalid arguments raise ``ValueError`` naming the argument, its value and what
  is allowed.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_CLASSES", "SHAPES", "ChildDrawing", "generate_dataset"]

DEFAULT_CLASSES = ("circle", "square", "triangle")
SHAPES = ("circle", "square", "triangle")
_LUMA = np.array([0.299, 0.587, 0.114])


def _validate(classes, images_per_class, min_side, max_side, png_fraction, seed) -> list[str]:
    if isinstance(classes, (str, bytes)):
        raise ValueError(f"classes={classes!r} must be a sequence of class-name strings, not a single string")
    names = list(classes)
    if len(names) < 2:
        raise ValueError(f"classes={names!r} has {len(names)} entries; at least 2 class names are required")
    for name in names:
        if (not isinstance(name, str) or not name.strip() or name in (".", "..")
                or any(c in name for c in "/\\\0")):
            raise ValueError(f"classes contains {name!r}; each class name must be a non-empty string usable "
                             "as a folder name (no '/', '\\', NUL, '.' or '..')")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"classes={names!r} contains duplicate names {dups!r}; class names must be unique")
    for arg, value, low in (("images_per_class", images_per_class, 1), ("min_side", min_side, 8),
                            ("max_side", max_side, 8), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{arg}={value!r} is not allowed; it must be an integer >= {low}")
    if min_side > max_side:
        raise ValueError(f"min_side={min_side!r} is greater than max_side={max_side!r}; need min_side <= max_side")
    if (isinstance(png_fraction, bool) or not isinstance(png_fraction, (int, float, np.floating))
            or not 0.0 <= float(png_fraction) <= 1.0):
        raise ValueError(f"png_fraction={png_fraction!r} is not allowed; it must be a number in [0, 1]")
    return names


def _colour(rng: np.random.Generator, luma: float) -> np.ndarray:
    """A random, moderately saturated RGB colour with (approximately) the given luminance."""
    chroma = rng.uniform(-1.0, 1.0, 3)
    chroma -= chroma @ _LUMA  # zero-luminance chroma offset
    scale = min(60.0, luma / max(1e-6, -chroma.min()), (255.0 - luma) / max(1e-6, chroma.max()))
    return luma + chroma * scale * rng.uniform(0.3, 1.0)


def _encode(image: Image.Image, **save_args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, **save_args)
    return buf.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leaves an identical file untouched, so its mtime (and the ingest cache) survive a
    re-run of the demo."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.write_bytes(data)


def class_colour(index: int, count: int) -> np.ndarray:
    """The RGB colour of class `index` of `count` with class_colours=True."""
    import colorsys  # pylint: disable=g-import-not-at-top
    return np.array(colorsys.hsv_to_rgb(index / count, 0.8, 0.82)) * 255.0


def _render(rng: np.random.Generator, shape: str, variant: int, h: int, w: int,
            colour: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (float RGB image HxWx3 in [0,255], boolean shape mask HxW)."""
    dark_shape = rng.random() < 0.5
    bg_luma = rng.uniform(150, 225) if dark_shape else rng.uniform(30, 105)
    shape_luma = bg_luma - rng.uniform(90, 140) if dark_shape else bg_luma + rng.uniform(90, 140)
    shape_luma = float(np.clip(shape_luma, 8, 247))
    c0 = _colour(rng, bg_luma)
    c1 = _colour(rng, float(np.clip(bg_luma + rng.uniform(-20, 20), 0, 255)))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x / w + np.sin(angle) * y / h)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    img = c0 + t[..., None] * (c1 - c0)

    short = min(h, w)
    r = rng.uniform(0.225, 0.425) * short  # half extent of the shape's bounding box
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        mask = dx * dx + dy * dy <= r * r
    elif shape == "square":
        mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:  # isosceles triangle filling its bounding box, pointing up or down
        v = (dy if rng.random() < 0.5 else -dy) + r  # 0 at the apex row, 2r at the base
        mask = (v >= 0) & (v <= 2 * r) & (np.abs(dx) <= v / 2)
    if variant:
        theta = np.deg2rad(45.0 * ((variant - 1) % 4))
        period = short * (0.14 + 0.06 * ((variant - 1) // 4))
        phase = (np.cos(theta) * dx + np.sin(theta) * dy) / period
        mask &= (phase - np.floor(phase)) < 0.5
    img[mask] = _colour(rng, shape_luma) if colour is None else colour * rng.uniform(0.7, 1.15)
    img += rng.normal(0.0, 8.0, img.shape)
    return np.clip(img, 0, 255), mask


def generate_dataset(root: str | os.PathLike, *, classes: Sequence[str] = DEFAULT_CLASSES,
                     images_per_class: int = 60, min_side: int = 160, max_side: int = 400,
                     png_fraction: float = 0.25, seed: int = 0,
                     class_colours: bool = False) -> dict[str, int]:
    """Writes root/<class>/<class>_<i:04d>.{jpg,png}; returns {class_name: count}.

    Deterministic for a seed: same bytes on every run.  See the module docstring.
    """
    names = _validate(classes, images_per_class, min_side, max_side, png_fraction, seed)
    root = Path(root)
    counts: dict[str, int] = {}
    n_png = int(round(float(png_fraction) * images_per_class))
    for ci, name in enumerate(names):
        class_dir = root / name
        class_dir.mkdir(parents=True, exist_ok=True)
        order = np.random.default_rng([seed, ci, 1 << 20]).permutation(images_per_class)
        png_ids = set(order[:n_png].tolist())
        written: set[str] = set()
        pngs_done = 0
        for i in range(images_per_class):
            rng = np.random.default_rng([seed, ci, i])
            h, w = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
            img, mask = _render(rng, SHAPES[ci % len(SHAPES)], ci // len(SHAPES), h, w,
                                class_colour(ci, len(names)) if class_colours else None)
            pixels = np.round(img).astype(np.uint8)
            if i in png_ids:
                fname = f"{name}_{i:04d}.png"
                pngs_done += 1
                if pngs_done % 2 == 1:  # every other PNG is RGBA with a semi-transparent background
                    alpha = np.where(mask, 255, np.round(rng.uniform(200, 250))).astype(np.uint8)
                    data = _encode(Image.fromarray(np.dstack([pixels, alpha]), "RGBA"),
                                   format="PNG", compress_level=6)
                else:
                    data = _encode(Image.fromarray(pixels, "RGB"), format="PNG", compress_level=6)
            else:
                fname = f"{name}_{i:04d}.jpg"
                data = _encode(Image.fromarray(pixels, "RGB"), format="JPEG", quality=90,
                               subsampling=0, optimize=False, progressive=False)
            _write_if_changed(class_dir / fname, data)
            written.add(fname)
        stale = re.compile(re.escape(name) + r"_\d{4}\.(jpg|png)")
        for old in class_dir.iterdir():
            if old.name not in written and stale.fullmatch(old.name) and old.is_file():
                old.unlink()
        counts[name] = images_per_class
    return counts


class ChildDrawing:
    """generate_dataset(root, **settings) in a child Python process, so that the caller can
    do something else meanwhile (the demo imports the pipeline's libraries: ~10 s on one
    core, against ~4 s to draw its 900 images). A context manager; `result()` waits.

    The child is a plain `python -m pipeline.demo_data '<settings as JSON>'` with its own
    stdout and stderr (no shell): multiprocessing would leave its resource-tracker process
    holding the console's pipe (the quiet console then waits 5 s for it at exit).
    """

    def __init__(self, root: str | os.PathLike, **settings):
        project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (project, os.environ.get("PYTHONPATH")) if p))
        request = json.dumps(dict(settings, root=os.fspath(root)))
        self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-m", "pipeline.demo_data", request], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def result(self) -> dict[str, int]:
        """The counts; raises ValueError for bad settings (as generate_dataset does) and
        RuntimeError naming the child's last error line for anything else."""
        out, err = self._proc.communicate()
        lines = out.decode(errors="replace").strip().splitlines()
        reply = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        if self._proc.returncode == 0 and "counts" in reply:
            return reply["counts"]
        if reply.get("error") == "ValueError":
            raise ValueError(reply["message"])
        last = (reply.get("message") or err.decode(errors="replace").strip() or "no output")
        raise RuntimeError(f"drawing the demo images failed (exit {self._proc.returncode}): "
                           f"{last.splitlines()[-1]}")

    def __enter__(self) -> "ChildDrawing":
        return self

    def __exit__(self, *exc) -> None:
        if self._proc.poll() is None:  # the caller failed before result(): stop drawing
            self._proc.kill()
            self._proc.communicate()


def _child(request: str, stdout) -> int:
    """ChildDrawing's far side: JSON settings in, one JSON line out."""
    settings = json.loads(request)
    try:
        counts = generate_dataset(settings.pop("root"), **settings)
    except (ValueError, TypeError) as err:
        stdout.write(json.dumps({"error": type(err).__name__, "message": str(err)}) + "\n")
        return 2
    stdout.write(json.dumps({"counts": counts}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.stdout))
