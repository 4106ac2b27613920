"""Tests for pipeline.demo_data: layout, formats, determinism, unicode names, learnability, validation."""
from __future__ import annotations

import os
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.demo_data import DEFAULT_CLASSES, generate_dataset

SMALL = dict(images_per_class=8, min_side=24, max_side=64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _real_format(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return "unknown"


def _gray32(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float32)


def _fill_ratio(g: np.ndarray) -> float:
    """Foreground pixels / foreground bounding-box area, from a 32x32 grayscale image (numpy only)."""
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    dev = np.abs(g - np.median(border))
    fg = dev > dev.max() / 2
    ys, xs = np.nonzero(fg)
    return float(fg.sum() / ((ys.ptp() + 1) * (xs.ptp() + 1)))


def test_layout_counts_formats_and_sizes(tmp_path):
    counts = generate_dataset(tmp_path, images_per_class=12, min_side=20, max_side=60, png_fraction=0.25)
    assert counts == {c: 12 for c in DEFAULT_CLASSES}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DEFAULT_CLASSES)
    sizes, exts, modes = set(), [], set()
    for name in DEFAULT_CLASSES:
        files = sorted((tmp_path / name).iterdir())
        assert len(files) == counts[name]
        for i, f in enumerate(files):
            assert f.stem == f"{name}_{i:04d}"
            assert _real_format(f.read_bytes()) == f.suffix[1:]
            with Image.open(f) as im:
                assert 20 <= im.width <= 60 and 20 <= im.height <= 60
                sizes.add(im.size)
                modes.add((f.suffix, im.mode))
            exts.append(f.suffix)
        assert exts[-12:].count(".png") == 3  # round(0.25 * 12) per class
    assert len(sizes) > 5 and any(w != h for w, h in sizes)
    assert modes == {(".jpg", "RGB"), (".png", "RGB"), (".png", "RGBA")}


@pytest.mark.parametrize("fraction, n_png", [(0.0, 0), (1.0, 5)])
def test_png_fraction_extremes(tmp_path, fraction, n_png):
    generate_dataset(tmp_path, classes=("a", "b"), images_per_class=5, min_side=16, max_side=16,
                     png_fraction=fraction)
    assert len(list(tmp_path.rglob("*.png"))) == 2 * n_png
    assert len(list(tmp_path.rglob("*.jpg"))) == 2 * (5 - n_png)


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = _files_for(tmp_path / "a", 0), _files_for(tmp_path / "b", 0), _files_for(tmp_path / "c", 1)
    assert a == b
    assert len(c) == len(a) and not set(a.values()) & set(c.values())  # every image differs


def _files_for(root: Path, seed: int) -> dict[str, str]:
    generate_dataset(root, seed=seed, **SMALL)
    return {k: hashlib.sha256(v).hexdigest() for k, v in _files(root).items()}


def test_regenerating_is_idempotent_and_removes_stale_files(tmp_path):
    small = dict(min_side=16, max_side=32, png_fraction=0.0)
    generate_dataset(tmp_path, images_per_class=10, **small)
    first = _files(tmp_path)
    (tmp_path / "circle" / "keep_me.txt").write_text("user file")
    counts = generate_dataset(tmp_path, images_per_class=4, **small)
    after = _files(tmp_path)
    assert "circle/keep_me.txt" in after
    del after["circle/keep_me.txt"]
    assert sum(counts.values()) == len(after) == 12
    assert all(first[k] == v for k, v in after.items())


def test_unicode_and_space_class_names(tmp_path):
    classes = ("猫", "big dog", "Ünïcødé 🐟")
    counts = generate_dataset(tmp_path, classes=classes, images_per_class=3, min_side=16, max_side=24)
    assert counts == {c: 3 for c in classes}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(classes)
    assert sorted(p.stem for p in (tmp_path / "big dog").iterdir()) == [f"big dog_{i:04d}" for i in range(3)]
    for c in classes:
        assert len(list((tmp_path / c).iterdir())) == 3


def test_class_is_learnable_at_32px(tmp_path):
    """Nearest-centroid on a feature computed from 32x32 grayscale pixels (shape fill ratio of its bounding
    box: circle ~0.79, square ~1.0, triangle ~0.5), trained on even-numbered images, tested on odd ones."""
    counts = generate_dataset(tmp_path, images_per_class=30, min_side=48, max_side=128, seed=3)
    feats, labels = [], []
    for ci, name in enumerate(counts):
        for f in sorted((tmp_path / name).iterdir()):
            feats.append(_fill_ratio(_gray32(f)))
            labels.append(ci)
    x, y = np.array(feats), np.array(labels)
    train = np.arange(len(y)) % 2 == 0
    centroids = np.array([x[train & (y == k)].mean() for k in range(3)])
    pred = np.argmin(np.abs(x[~train, None] - centroids[None]), axis=1)
    accuracy = float((pred == y[~train]).mean())
    assert accuracy > 0.6, accuracy


def test_extra_classes_are_striped_variants(tmp_path):
    """Class 3 reuses class 0's shape (circle) with stripes: many more fg/bg transitions inside the shape."""
    generate_dataset(tmp_path, classes=("c0", "c1", "c2", "c3"), images_per_class=6, min_side=96,
                     max_side=128, png_fraction=0.0)

    def transitions(path: Path) -> float:
        with Image.open(path) as im:
            g = np.asarray(im.convert("L"), dtype=np.float32)
        border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        dev = np.abs(g - np.median(border))
        fg = dev > dev.max() / 2
        edges = np.abs(np.diff(fg.astype(np.int8), axis=1)).sum() + np.abs(np.diff(fg.astype(np.int8), axis=0)).sum()
        return float(edges) / float(fg.sum()) ** 0.5  # edge length relative to the shape's size

    solid = np.mean([transitions(p) for p in (tmp_path / "c0").iterdir()])
    striped = np.mean([transitions(p) for p in (tmp_path / "c3").iterdir()])
    assert striped > 1.5 * solid, (solid, striped)


@pytest.mark.parametrize("kwargs, words", [
    (dict(classes=("only",)), ["classes", "'only'", "at least 2"]),
    (dict(classes=()), ["classes", "at least 2"]),
    (dict(classes="ab"), ["classes", "'ab'", "sequence"]),
    (dict(classes=("a", "b", "a")), ["classes", "duplicate", "'a'"]),
    (dict(classes=("a", "x/y")), ["classes", "'x/y'", "folder name"]),
    (dict(classes=("a", "")), ["classes", "''", "non-empty"]),
    (dict(classes=("a", "..")), ["classes", "'..'"]),
    (dict(images_per_class=0), ["images_per_class", "0", ">= 1"]),
    (dict(images_per_class=2.5), ["images_per_class", "2.5", "integer"]),
    (dict(min_side=7), ["min_side", "7", ">= 8"]),
    (dict(min_side=100, max_side=50), ["min_side", "100", "max_side", "50"]),
    (dict(png_fraction=-0.1), ["png_fraction", "-0.1", "[0, 1]"]),
    (dict(png_fraction=1.5), ["png_fraction", "1.5", "[0, 1]"]),
    (dict(seed=-1), ["seed", "-1", ">= 0"]),
])
def test_invalid_arguments_raise_value_error(tmp_path, kwargs, words):
    with pytest.raises(ValueError) as err:
        generate_dataset(tmp_path / "out", **kwargs)
    for word in words:
        assert word in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_second_run_leaves_identical_files_untouched(tmp_path):
    """Same bytes are not rewritten: mtimes survive, so a re-run demo hits the ingest cache."""
    from pipeline import demo_data
    demo_data.generate_dataset(tmp_path, images_per_class=3, min_side=16, max_side=24,
                               class_colours=True)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    for p in files:
        os.utime(p, ns=(1, 1))  # a distinctive mtime that a rewrite would replace
    demo_data.generate_dataset(tmp_path, images_per_class=3, min_side=16, max_side=24,
                               class_colours=True)
    assert all(p.stat().st_mtime_ns == 1 for p in files)
    assert len(before) == 9


@pytest.mark.slow
def test_a_child_draws_the_same_files_and_its_errors_reach_the_caller(tmp_path):
    """ChildDrawing (the demo's drawing beside the library import): the same bytes as
    generate_dataset in this process; bad settings are the same ValueError; any other
    failure is a RuntimeError naming the child's last error line."""
    from pipeline.demo_data import ChildDrawing  # pylint: disable=import-outside-toplevel
    settings = dict(images_per_class=4, min_side=40, max_side=60, class_colours=True)
    with ChildDrawing(tmp_path / "child", **settings) as drawing:
        counts = drawing.result()
    assert counts == generate_dataset(tmp_path / "here", **settings)
    child, here = _files(tmp_path / "child"), _files(tmp_path / "here")
    assert len(child) == 12 and child == here
    with pytest.raises(ValueError, match="images_per_class"):
        with ChildDrawing(tmp_path / "bad", images_per_class=0) as drawing:
            drawing.result()
    with pytest.raises(RuntimeError, match="drawing the demo images failed.*no_such_setting"):
        with ChildDrawing(tmp_path / "bad", no_such_setting=1) as drawing:
            drawing.result()


@pytest.mark.slow
def test_a_child_is_stopped_when_the_caller_fails_first(tmp_path):
    from pipeline.demo_data import ChildDrawing  # pylint: disable=import-outside-toplevel
    with pytest.raises(KeyError):
        with ChildDrawing(tmp_path / "d", images_per_class=2000) as drawing:
            raise KeyError("the import failed")
    import signal  # pylint: disable=import-outside-toplevel
    assert drawing._proc.returncode == -signal.SIGKILL  # pylint: disable=protected-access
