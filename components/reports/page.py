"""The page shell shared by the data and run reports, and what turns a page into one file."""
from __future__ import annotations

import html
import os
from typing import Sequence

REPORT_PAGE = "index.html"
_CSS = ("body{font-family:sans-serif;margin:2em;max-width:60em}.bar{background:#4a78b5;"
        "height:1em}.bar2{background:#d08a3c;height:1em}td{padding:1px 6px}"
        "td.n{text-align:right}ul.bad li{color:#a00}ul.warn li{color:#a60}"
        "ol.plain{font-size:90%}h1{border-top:1px solid #ccc;padding-top:.5em}")


def gfile():
    """tf.io.gfile, imported on first use (reading a verdict needs no TensorFlow)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile


def bars(rows: Sequence[tuple], unit: str = "") -> str:
    """A table of (label, number) rows, each with a bar scaled to the largest number."""
    top = max([n for _, n in rows] + [1])
    body = "".join(
        f'<tr><td class="k">{html.escape(str(k))}</td><td><div class="bar" '
        f'style="width:{max(1, round(300 * n / top))}px"></div></td>'
        f'<td class="n">{n:g}{unit}</td></tr>' for k, n in rows)
    return f"<table>{body}</table>" if rows else "<p>none</p>"


def bullets(lines: Sequence[str], css: str) -> str:
    """An escaped list with the page's `css` class ("bad", "warn"), or "none"."""
    if not lines:
        return "<p>none</p>"
    return f'<ul class="{css}">' + "".join(f"<li>{html.escape(l)}</li>" for l in lines) + "</ul>"


def write_page(out_dir: str, title: str, sections: Sequence[str]) -> str:
    """Writes `sections` as out_dir/index.html (inline CSS, no script); returns its path."""
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{_CSS}</style></head><body>" + "".join(sections)
            + "</body></html>")
    path = os.path.join(out_dir, REPORT_PAGE)
    with gfile().GFile(path, "w") as f:
        f.write(page)
    return path


def single_file(out_dir: str) -> str:
    """out_dir/index.html as one document: each `src="NAME.png"` of a PNG in out_dir becomes a
    data: URI. The KFP UI and the Vertex console show an HTML artifact as the one object at
    its URI, so a page that links files beside it would show broken pictures there."""
    import base64  # pylint: disable=g-import-not-at-top
    import re  # pylint: disable=g-import-not-at-top
    files = gfile()
    with files.GFile(os.path.join(out_dir, REPORT_PAGE), "r") as f:
        page = f.read()

    def inline(match):
        path = os.path.join(out_dir, match.group(1))
        if not files.exists(path):
            return match.group(0)
        with files.GFile(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'
    return re.sub(r'src="([A-Za-z0-9_.-]+\.png)"', inline, page)
