"""The reports' pictures: PNGs drawn with Pillow, curves as inline SVG.

Images are decoded and resized by trainer_module.image_ops, the path training and serving
use, so a tile shows what the model saw. Class names are drawn into a PNG only with a font
that has every glyph they need (Pillow's bundled font, else a system font such as DejaVu or
Noto CJK); otherwise the PNG shows class ids and the page, which any browser renders in full
Unicode, gives the legend.
"""
from __future__ import annotations

import glob
import html
import os
from typing import Dict, List, Sequence

import numpy as np

from components.reports.page import gfile
from trainer_module import features

SAMPLE_TILE = 96
MISTAKE_TILE = 112
GRID_TILES = 24  # mistakes drawn, most confident first
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts",
              "~/.local/share/fonts", "/System/Library/Fonts", "/Library/Fonts",
              "C:/Windows/Fonts")
_PREFERRED = ("NotoSansCJK", "NotoSans-", "DejaVuSans.ttf", "DejaVuSans")


# ---------------------------------------------------------------- fonts

def covers(font, text: str) -> bool:
    """True when `font` has a glyph for every non-space character of `text` (a missing
    glyph renders as the font's .notdef box, which is what this compares against)."""
    def mask(ch):
        m = font.getmask(ch)
        return m.size, bytes(m)
    notdef = mask("\U0010FFFD")
    return all(ch.isspace() or mask(ch) != notdef for ch in set(text))


def _system_fonts() -> List[str]:
    found = []
    for folder in _FONT_DIRS:
        for ext in ("ttf", "otf", "ttc"):
            found += glob.glob(os.path.join(os.path.expanduser(folder), "**", f"*.{ext}"),
                               recursive=True)
    rank = lambda p: next((i for i, k in enumerate(_PREFERRED) if k in os.path.basename(p)),
                          len(_PREFERRED))
    return sorted(found, key=lambda p: (rank(p), p))[:200]


def font_for(names: Sequence[str], size: int = 13):
    """(font, True) for the first font covering every name; (Pillow's font, False) if none."""
    from PIL import ImageFont  # pylint: disable=g-import-not-at-top
    text = "".join(names) + "0123456789.->"
    default = ImageFont.load_default(size)
    if covers(default, text):
        return default, True
    for path in _system_fonts():
        try:
            font = ImageFont.truetype(path, size)
        except OSError:
            continue
        if covers(font, text):
            return font, True
    return default, False


# ---------------------------------------------------------------- data

def sample_grid(examples_uri: str, classes: Sequence[str], per_class: int = 4,
                tile: int = SAMPLE_TILE) -> np.ndarray:
    """uint8 [rows*tile, per_class*tile, 3]: the first `per_class` images of each class.

    Streams train then eval shards and stops as soon as every class has its tiles, so memory
    holds only the grid. A class without images leaves its row black.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from trainer_module import dataset, image_ops  # pylint: disable=g-import-not-at-top
    grid = np.full((max(len(classes), 1) * tile, per_class * tile, 3), 255, np.uint8)
    inner, pad = tile - 4, 2  # a white gap between tiles
    filled = [0] * len(classes)
    for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
        folder = os.path.join(examples_uri, f"Split-{split}")
        if not gfile().isdir(folder) or all(n >= per_class for n in filled):
            continue
        files = dataset.list_shards(folder)
        records = tf.data.TFRecordDataset(files, dataset.shard_compression(files))
        for serialized in records:
            image, label = dataset.parse_image_label(serialized)
            row = int(label)
            if row >= len(classes) or filled[row] >= per_class:
                continue
            col = filled[row]
            top, left = row * tile + pad, col * tile + pad
            grid[top:top + inner, left:left + inner] = \
                image_ops.decode_and_resize(image, inner).numpy()
            filled[row] += 1
            if all(n >= per_class for n in filled):
                break
    return grid


def histogram(statistics_uri: str, feature: str,
              split: str = features.TRAIN_SPLIT) -> List[tuple]:
    """[(low, high, count)] of a numeric feature from StatisticsGen's output (no decode)."""
    import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
    path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
    if not gfile().exists(path):
        return []
    stats = tfdv.load_stats_binary(path)
    for dataset_stats in stats.datasets:
        for f in dataset_stats.features:
            if f.path.step and f.path.step[-1] == feature and f.HasField("num_stats"):
                for h in f.num_stats.histograms:
                    if h.type == h.STANDARD:
                        return [(b.low_value, b.high_value, b.sample_count) for b in h.buckets]
    return []



# ---------------------------------------------------------------- model

def confusion_png(matrix: Dict[tuple, float], classes: Sequence[str], path: str) -> bool:
    """Draws the matrix (cells shaded by share of the actual class, counts inside).

    Returns True when class names were drawn, False when ids were (see the page's legend).
    """
    from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
    n = max(len(classes), 1)
    cell = max(14, min(44, 640 // n))
    font, named = font_for(classes)
    labels = [f"{i} {c}" if named else str(i) for i, c in enumerate(classes)]
    left = 12 + max([int(font.getlength(l)) for l in labels] + [40])
    top = 44
    image = Image.new("RGB", (left + n * cell + 12, top + n * cell + 12), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 4), "predicted ->", fill="black", font=font)
    draw.text((4, 4), "actual", fill="black", font=font)
    for j in range(n):
        draw.text((left + j * cell + 3, top - 18), str(j), fill="black", font=font)
    for i in range(n):
        draw.text((6, top + i * cell + cell // 2 - 7), labels[i], fill="black", font=font)
        total = sum(matrix.get((i, j), 0.0) for j in range(n))
        for j in range(n):
            count = matrix.get((i, j), 0.0)
            share = count / total if total else 0.0
            shade = int(255 - 200 * share)
            color = (shade, shade, 255) if i == j else (255, shade, shade)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1,
                   top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=color, outline=(200, 200, 200))
            if cell >= 24 and count:
                draw.text((box[0] + 3, box[1] + cell // 2 - 7), f"{count:g}",
                          fill="black", font=font)
    with open(path, "wb") as f:
        image.save(f, "PNG")
    return named


def misclassified_png(examples_uri: str, mistakes: Sequence[dict], classes: Sequence[str],
                      path: str, limit: int = GRID_TILES) -> List[dict]:
    """Grid of the first `limit` mistakes, found by (filename, label) in the eval split.

    Returns the tiles drawn, in order (a mistake whose image is not found is left out).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
    from trainer_module import dataset, image_ops  # pylint: disable=g-import-not-at-top
    size = MISTAKE_TILE
    wanted: Dict[tuple, List[int]] = {}
    for index, m in enumerate(mistakes[:limit]):
        wanted.setdefault((m["filename"], m["label"]), []).append(index)
    found: Dict[int, np.ndarray] = {}
    folder = os.path.join(examples_uri, f"Split-{features.EVAL_SPLIT}")
    files = dataset.list_shards(folder)
    for serialized in tf.data.TFRecordDataset(files, dataset.shard_compression(files)):
        if not wanted:
            break
        example = tf.train.Example.FromString(serialized.numpy())
        feature = example.features.feature
        key = (feature[features.FILENAME_KEY].bytes_list.value[0].decode("utf-8", "replace"),
               feature[features.LABEL_KEY].int64_list.value[0])
        if key in wanted:
            index = wanted[key].pop(0)
            if not wanted[key]:
                del wanted[key]
            found[index] = image_ops.decode_and_resize(
                feature[features.IMAGE_KEY].bytes_list.value[0], size).numpy()
    tiles = [dict(mistakes[i], tile=t) for t, i in enumerate(sorted(found))]
    columns = 6
    rows = max(1, -(-len(tiles) // columns))
    caption = 34
    font, named = font_for(classes, 11)
    image = Image.new("RGB", (columns * (size + 4), rows * (size + caption + 4)), "white")
    draw = ImageDraw.Draw(image)
    for t, tile in enumerate(tiles):
        x, y = (t % columns) * (size + 4), (t // columns) * (size + caption + 4)
        image.paste(Image.fromarray(found[sorted(found)[t]]), (x + 2, y + 2))
        true, pred = ((classes[tile["label"]], classes[tile["predicted"]]) if named
                      else (str(tile["label"]), str(tile["predicted"])))
        draw.text((x + 2, y + size + 4), f"true {true}", fill=(0, 110, 0), font=font)
        draw.text((x + 2, y + size + 17), f"-> {pred} {tile['probability']:.2f}",
                  fill=(170, 0, 0), font=font)
    with open(path, "wb") as f:
        image.save(f, "PNG")
    return tiles


def curve_svg(title: str, series: Dict[str, List[float]], stage_starts: Sequence[int],
              width: int = 420, height: int = 180) -> str:
    """Inline SVG line chart of per-epoch values; dashed lines where a stage starts."""
    values = [v for vs in series.values() for v in vs]
    if not values:
        return f"<p>{html.escape(title)}: no history</p>"
    count = max(len(vs) for vs in series.values())
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    x = lambda i: 40 + (width - 50) * (i / max(count - 1, 1))
    y = lambda v: 10 + (height - 30) * (1 - (v - low) / span)
    colors = ["#4a78b5", "#d08a3c", "#3a9a5a", "#9a3a8a"]
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="40" y="{height - 4}" font-size="11">{html.escape(title)} per epoch '
             f'({low:.3g} - {high:.3g})</text>']
    for start in stage_starts:
        parts.append(f'<line x1="{x(start):.1f}" y1="10" x2="{x(start):.1f}" '
                     f'y2="{height - 20}" stroke="#999" stroke-dasharray="4"/>')
    for k, (name, vs) in enumerate(series.items()):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs))
        color = colors[k % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{points}"/><text x="{width - 120}" y="{20 + 14 * k}" '
                     f'font-size="11" fill="{color}">{html.escape(name)}</text>')
    return "".join(parts) + "</svg>"
