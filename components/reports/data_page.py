"""The data report: one offline page, a PNG sample grid, and the verdict as JSON.

  index.html       the verdict, samples.png, class-balance bars per split, width and height
                   histograms (from StatisticsGen's output, nothing decoded), and the
                   ingest's quarantine and skip summary
  samples.png      up to `per_class` images per class (one row per class)
  validation.json  {"passed", "blocking", "warnings", "classes", "sample_rows"}

Rendered by the data gate's executor (a local run's report of record, and the page of a
blocked run), by the cluster's DataReport task, and after the run page's sections.
"""
from __future__ import annotations

import html
import json
import os
from typing import Optional, Sequence

from components.reports import plots
from components.reports.page import REPORT_PAGE, bars, bullets, gfile, write_page
from trainer_module import features

SAMPLES_PNG = "samples.png"
VERDICT_JSON = "validation.json"
__all__ = ["REPORT_PAGE", "SAMPLES_PNG", "VERDICT_JSON", "render"]


def render(out_dir: str, *, examples_uri: str, statistics_uri: Optional[str],
           report: dict, blocking: Sequence[str], warnings: Sequence[str],
           accept_hint: str = "", per_class: int = 4, lead: Sequence[str] = (),
           title: str = "imgpipe data report") -> str:
    """Writes index.html, samples.png and validation.json to `out_dir`; returns the page path.

    Args:
      examples_uri: ImageExampleGen's output (the sample grid's images).
      statistics_uri: StatisticsGen's output (the size histograms), or None.
      report: the ingest report (features.REPORT_FILE in examples_uri).
      blocking, warnings: the gate's verdict, in plain words.
      accept_hint: the command that accepts an intended change (shown when blocked).
      lead: HTML sections placed before the data sections (the run report's).
    """
    from PIL import Image  # pylint: disable=g-import-not-at-top
    files = gfile()
    files.makedirs(out_dir)
    classes = list(report.get("classes", []))
    grid = plots.sample_grid(examples_uri, classes, per_class)
    with files.GFile(os.path.join(out_dir, SAMPLES_PNG), "wb") as f:
        Image.fromarray(grid).save(f, "PNG")
    verdict = {"passed": not blocking, "blocking": list(blocking),
               "warnings": list(warnings), "classes": classes, "sample_rows": len(classes)}
    with files.GFile(os.path.join(out_dir, VERDICT_JSON), "w") as f:
        json.dump(verdict, f, indent=1, ensure_ascii=False)

    sections = [*lead, f"<h1>Data report</h1><p>{html.escape(report.get('data_root', ''))} "
                f"({html.escape(report.get('layout', ''))})</p>"]
    state = "BLOCKED: nothing after validation runs" if blocking else "passed"
    sections.append(f'<h2>Verdict: {state}</h2><h3>Anomalies (blocking)</h3>'
                    f'{bullets(blocking, "bad")}<h3>Warnings</h3>{bullets(warnings, "warn")}')
    if blocking and accept_hint:
        sections.append(f"<p>If the change is intended: <code>{html.escape(accept_hint)}</code>"
                        "</p>")
    legend = "".join(f"<li>row {i + 1}: {html.escape(c)}</li>" for i, c in enumerate(classes))
    sections.append(f'<h2>Samples (what training sees)</h2><img src="{SAMPLES_PNG}" '
                    f'alt="sample grid"><ol class="plain">{legend}</ol>')
    for split, counts in sorted(report.get("per_split", {}).items()):
        sections.append(f"<h2>Class balance: {html.escape(split)}</h2>"
                        + bars(sorted(counts.items())))
    for feature in (features.WIDTH_KEY, features.HEIGHT_KEY):
        buckets = plots.histogram(statistics_uri, feature) if statistics_uri else []
        sections.append(f"<h2>{feature.capitalize()} (px, train)</h2>" + bars(
            [(f"{lo:.0f}-{hi:.0f}", round(n)) for lo, hi, n in buckets]))
    counts = report.get("counts", {})
    sections.append("<h2>Ingest</h2>" + bars(sorted(counts.items()))
                    + "<h3>Quarantined, by reason</h3>"
                    + bars(sorted(report.get("quarantine_reasons", {}).items()))
                    + "<h3>Skipped, by reason</h3>"
                    + bars(sorted(report.get("skip_reasons", {}).items())))
    return write_page(out_dir, title, sections)
