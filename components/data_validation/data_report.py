"""The visual data report: one offline HTML page plus a PNG sample grid.

  index.html       self-contained (inline CSS, no script, nothing from the network); shows
                   the verdict, samples.png, class-balance bars per split, width and height
                   histograms, and the ingest's quarantine and skip summary
  samples.png      up to `per_class` images per class (one row per class), decoded and
                   resized by trainer_module.image_ops, the path training uses
  validation.json  {"passed", "blocking", "warnings", "classes", "sample_rows"}

Plotting is Pillow for the one image and HTML/CSS for the bars: nothing new to install
(matplotlib is not in the stack), and the browser renders any class name, CJK included,
which Pillow's bundled font would draw as boxes.
"""
from __future__ import annotations

import html
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from trainer_module import features


def _gfile():
    """tf.io.gfile, imported on first use (reading the verdict needs no TensorFlow)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile

REPORT_PAGE = "index.html"
SAMPLES_PNG = "samples.png"
VERDICT_JSON = "validation.json"
TILE = 96


def sample_grid(examples_uri: str, classes: Sequence[str], per_class: int = 4,
                tile: int = TILE) -> np.ndarray:
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
        if not _gfile().isdir(folder) or all(n >= per_class for n in filled):
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
    if not _gfile().exists(path):
        return []
    stats = tfdv.load_stats_binary(path)
    for dataset_stats in stats.datasets:
        for f in dataset_stats.features:
            if f.path.step and f.path.step[-1] == feature and f.HasField("num_stats"):
                for h in f.num_stats.histograms:
                    if h.type == h.STANDARD:
                        return [(b.low_value, b.high_value, b.sample_count) for b in h.buckets]
    return []


def _bars(rows: Sequence[tuple], unit: str = "") -> str:
    top = max([n for _, n in rows] + [1])
    body = "".join(
        f'<tr><td class="k">{html.escape(str(k))}</td><td><div class="bar" '
        f'style="width:{max(1, round(300 * n / top))}px"></div></td>'
        f'<td class="n">{n:g}{unit}</td></tr>' for k, n in rows)
    return f"<table>{body}</table>" if rows else "<p>none</p>"


def _list(lines: Sequence[str], css: str) -> str:
    if not lines:
        return "<p>none</p>"
    return f'<ul class="{css}">' + "".join(f"<li>{html.escape(l)}</li>" for l in lines) + "</ul>"


def write_page(out_dir: str, title: str, sections: Sequence[str]) -> str:
    """Writes `sections` as out_dir/index.html (inline CSS, no script); returns its path."""
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em;"
            "max-width:60em}.bar{background:#4a78b5;height:1em}.bar2{background:#d08a3c;"
            "height:1em}td{padding:1px 6px}td.n{text-align:right}ul.bad li{color:#a00}"
            "ul.warn li{color:#a60}ol.plain{font-size:90%}h1{border-top:1px solid #ccc;"
            "padding-top:.5em}</style></head><body>" + "".join(sections) + "</body></html>")
    path = os.path.join(out_dir, REPORT_PAGE)
    with _gfile().GFile(path, "w") as f:
        f.write(page)
    return path


def single_file(out_dir: str) -> str:
    """out_dir/index.html as one document: each `src="NAME.png"` of a PNG in out_dir becomes a
    data: URI. The KFP UI and the Vertex console show an HTML artifact as the one object at
    its URI, so a page that links files beside it would show broken pictures there."""
    import base64  # pylint: disable=g-import-not-at-top
    import re  # pylint: disable=g-import-not-at-top
    gfile = _gfile()
    with gfile.GFile(os.path.join(out_dir, REPORT_PAGE), "r") as f:
        page = f.read()

    def inline(match):
        path = os.path.join(out_dir, match.group(1))
        if not gfile.exists(path):
            return match.group(0)
        with gfile.GFile(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'
    return re.sub(r'src="([A-Za-z0-9_.-]+\.png)"', inline, page)


def render(out_dir: str, *, examples_uri: str, statistics_uri: Optional[str],
           report: dict, blocking: Sequence[str], warnings: Sequence[str],
           accept_hint: str = "", per_class: int = 4, lead: Sequence[str] = (),
           title: str = "imgpipe data report") -> str:
    """Writes index.html, samples.png and validation.json to `out_dir`; returns the page path.

    `lead`: HTML sections placed before the data sections (the run report's).
    """
    from PIL import Image  # pylint: disable=g-import-not-at-top
    gfile = _gfile()
    gfile.makedirs(out_dir)
    classes = list(report.get("classes", []))
    grid = sample_grid(examples_uri, classes, per_class)
    with gfile.GFile(os.path.join(out_dir, SAMPLES_PNG), "wb") as f:
        Image.fromarray(grid).save(f, "PNG")
    verdict = {"passed": not blocking, "blocking": list(blocking),
               "warnings": list(warnings), "classes": classes, "sample_rows": len(classes)}
    with gfile.GFile(os.path.join(out_dir, VERDICT_JSON), "w") as f:
        json.dump(verdict, f, indent=1, ensure_ascii=False)

    sections = [*lead, f"<h1>Data report</h1><p>{html.escape(report.get('data_root', ''))} "
                f"({html.escape(report.get('layout', ''))})</p>"]
    state = "BLOCKED: nothing after validation runs" if blocking else "passed"
    sections.append(f'<h2>Verdict: {state}</h2><h3>Anomalies (blocking)</h3>'
                    f'{_list(blocking, "bad")}<h3>Warnings</h3>{_list(warnings, "warn")}')
    if blocking and accept_hint:
        sections.append(f"<p>If the change is intended: <code>{html.escape(accept_hint)}</code>"
                        "</p>")
    legend = "".join(f"<li>row {i + 1}: {html.escape(c)}</li>" for i, c in enumerate(classes))
    sections.append(f'<h2>Samples (what training sees)</h2><img src="{SAMPLES_PNG}" '
                    f'alt="sample grid"><ol class="plain">{legend}</ol>')
    for split, counts in sorted(report.get("per_split", {}).items()):
        sections.append(f"<h2>Class balance: {html.escape(split)}</h2>"
                        + _bars(sorted(counts.items())))
    for feature in (features.WIDTH_KEY, features.HEIGHT_KEY):
        buckets = histogram(statistics_uri, feature) if statistics_uri else []
        sections.append(f"<h2>{feature.capitalize()} (px, train)</h2>" + _bars(
            [(f"{lo:.0f}-{hi:.0f}", round(n)) for lo, hi, n in buckets]))
    counts = report.get("counts", {})
    sections.append("<h2>Ingest</h2>" + _bars(sorted(counts.items()))
                    + "<h3>Quarantined, by reason</h3>"
                    + _bars(sorted(report.get("quarantine_reasons", {}).items()))
                    + "<h3>Skipped, by reason</h3>"
                    + _bars(sorted(report.get("skip_reasons", {}).items())))
    return write_page(out_dir, title, sections)
