"""The run report: what the Evaluator decided and where the model fails, on one offline page.

  index.html            the verdict and the baseline it was compared with, the confusion
                        matrix, per-class precision/recall bars, training curves (inline SVG,
                        both stages) and the misclassified grid, followed by the data
                        report's sections (the same page, extended)
  confusion_matrix.png  argmax confusion matrix of the evaluated model, rows = actual class
  misclassified.png     the eval images the exported model got wrong, most confident first,
                        each captioned true -> predicted and the probability
  run.json              the numbers behind the page, and the grid's tiles in order

Given the evaluation (pipeline/blessing.py reads it from TFMA's output), nothing is
recomputed with the model: the grid's mistakes are the Evaluator's MostConfidentMistakes.
"""
from __future__ import annotations

import html
import json
import os
from typing import Dict, Optional

from components.reports import data_page, plots
from components.reports.page import write_page

CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"
RUN_JSON = "run.json"
TITLE = "imgpipe run report"


def _verdict(evaluation: dict, accuracy: dict, pushed: Optional[dict],
                     serving: Optional[str]) -> str:
    if evaluation["blessed"]:
        where = (f"pushed to {pushed['destination']}" if pushed and pushed["pushed"]
                 else "already serving (nothing new to push)")
        verdict = f'<h2 style="color:#070">Blessed: {html.escape(where)}</h2>'
    else:
        lines = "".join(f"<li>{html.escape(r)}</li>" for r in evaluation["reasons"])
        still = f"still serving: {serving}" if serving else "nothing is serving yet"
        verdict = (f'<h2 style="color:#a00">Not blessed: nothing pushed</h2>'
                   f'<ul class="bad">{lines}</ul><p>{html.escape(still)}</p>')
    candidate = accuracy.get("candidate")
    baseline = (f"the latest blessed model ({html.escape(evaluation['baseline'])}), "
                f"accuracy {accuracy['baseline']:.3f}"
                if evaluation.get("baseline") and "baseline" in accuracy
                else "none: no earlier blessed model, so only the absolute threshold applied")
    return (f"{verdict}<p>Eval accuracy <b>{candidate:.3f}</b> on "
            f"{int(sum(evaluation['matrix'].values()))} eval images. Compared with: "
            f"{baseline}.</p>" if candidate is not None else verdict)


def _per_class(per_class: Dict[str, dict]) -> str:
    rows = "".join(
        f'<tr><td class="k">{html.escape(name)}</td>'
        f'<td><div class="bar" style="width:{max(1, round(200 * m["precision"]))}px"></div>'
        f'<div class="bar2" style="width:{max(1, round(200 * m["recall"]))}px"></div></td>'
        f'<td class="n">{m["precision"]:.3f}<br>{m["recall"]:.3f}</td>'
        f'<td class="n">{m["f1"]:.3f}</td><td class="n">{m["support"]}</td></tr>'
        for name, m in per_class.items())
    return ('<h2>Per class (argmax decisions)</h2><p><span style="color:#4a78b5">precision'
            '</span> / <span style="color:#d08a3c">recall</span></p><table><tr><th>class'
            '</th><th></th><th>P / R</th><th>F1</th><th>eval images</th></tr>'
            f"{rows}</table>")


def render(out_dir: str, evaluation: dict, *, pushed: Optional[dict], serving: Optional[str],
           curves: Dict[str, list], mistakes: Optional[dict],
           data: Optional[dict] = None) -> str:
    """Writes the run report into the local folder `out_dir`; returns index.html's path.

    Args:
      evaluation: blessing.evaluation_of's dict.
      pushed: {"pushed", "destination", "version"} of the Pusher's output, or None.
      serving: the model still serving when this one was not pushed, or None.
      curves: {metric: per-epoch values, "stage_starts": [epoch]} (the Trainer's history).
      mistakes: blessing.mistakes' dict (the most confident mistakes), or None.
      data: data_page.render's arguments but out_dir (the recorded verdict of the data gate
        and the artifacts it read); with them the data report's sections follow.
    """
    os.makedirs(out_dir, exist_ok=True)
    classes = evaluation["classes"]
    accuracy = evaluation["accuracy"]
    named = plots.confusion_png(evaluation["matrix"], classes,
                                os.path.join(out_dir, CONFUSION_PNG))
    tiles = plots.misclassified_png(evaluation["examples"], mistakes.get("misclassified", []),
                                    classes, os.path.join(out_dir, MISCLASSIFIED_PNG)) \
        if mistakes else []

    legend = "" if named else (
        "<p>The pictures show class ids (no installed font has every glyph of the names):</p>"
        "<ol start=\"0\" class=\"plain\">" + "".join(
            f"<li>{html.escape(c)}</li>" for c in classes) + "</ol>")
    sections = [
        "<h1>Run report</h1>",
        _verdict(evaluation, accuracy, pushed, serving),
        f'<h2>Confusion matrix (eval split)</h2><img src="{CONFUSION_PNG}" '
        f'alt="confusion matrix">{legend}',
        _per_class(evaluation["per_class"]),
        "<h2>Training curves</h2>"
        + ("<p>dashed line: fine-tuning starts</p>" if curves["stage_starts"] else "")
        + "".join(plots.curve_svg(name, {k: curves[k] for k in (name, f"val_{name}")
                                         if k in curves}, curves["stage_starts"])
                  for name in ("loss", "accuracy")),
    ]
    if mistakes:
        captions = "".join(
            f"<tr><td>{t['tile'] + 1}</td><td>{html.escape(t['filename'])}</td>"
            f"<td>{html.escape(classes[t['label']])}</td>"
            f"<td>{html.escape(classes[t['predicted']])}</td>"
            f"<td class=\"n\">{t['probability']:.3f}</td></tr>" for t in tiles)
        sections.append(
            f"<h2>Misclassified eval images ({mistakes['misclassified_total']} of "
            f"{mistakes['count']}; the {len(tiles)} most confident shown)</h2>"
            + (f'<img src="{MISCLASSIFIED_PNG}" alt="misclassified images"><table><tr><th>#'
               "</th><th>file</th><th>true</th><th>predicted</th><th>p</th></tr>"
               f"{captions}</table>" if tiles else "<p>none: every eval image was right</p>"))
    with open(os.path.join(out_dir, RUN_JSON), "w", encoding="utf-8") as f:
        json.dump({"evaluation": evaluation["evaluation"],
                   "blessed": evaluation["blessed"], "reasons": evaluation["reasons"],
                   "accuracy": accuracy, "baseline": evaluation.get("baseline"),
                   "classes": classes, "per_class": evaluation["per_class"],
                   "names_drawn": named, "pushed": pushed, "serving": serving,
                   "history": curves, "misclassified_tiles": tiles,
                   "misclassified_total": (mistakes or {}).get("misclassified_total")},
                  f, indent=1, ensure_ascii=False)

    if data is None:
        return write_page(out_dir, TITLE, sections)
    return data_page.render(out_dir, **data, lead=sections, title=TITLE)
