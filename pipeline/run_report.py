"""The run report: what the Evaluator decided and where the model fails, on one offline page.

Built after every local run from what MLMD recorded (`build(workdir)`; `imgpipe report`
rebuilds it), into workdir/reports/run-<Evaluator execution id>/:

  index.html            the verdict and the baseline it was compared with, the confusion
                        matrix, per-class precision/recall bars, training curves (inline SVG,
                        both stages, from the Trainer's history) and the misclassified grid,
                        followed by the data report's sections (the same page, extended)
  confusion_matrix.png  argmax confusion matrix of the evaluated model, rows = actual class
  misclassified.png     the eval images the exported model got wrong, most confident first,
                        each captioned true -> predicted and the probability
  run.json              the numbers behind the page, and the grid's tiles in order

Inputs: the Evaluator's metrics and plots (TFMA; the grid's mistakes are its
MostConfidentMistakes metric), the Trainer's model_run folder (checkpoints/<stage>.done.json
histories), the Pusher's output and the DataGate's recorded inputs. Nothing is recomputed
with the model.

Class names are drawn into the PNGs only with a font that has every glyph they need
(Pillow's bundled font, else a system font such as DejaVu or Noto CJK); otherwise the PNGs
show class ids and the page, which any browser renders in full Unicode, gives the legend.
"""
from __future__ import annotations

import glob
import html
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from ml_metadata.proto import metadata_store_pb2

from pipeline import blessing, history
from trainer_module import features

CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"
RUN_JSON = "run.json"
GRID_TILES = 24
TILE = 112
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


# ---------------------------------------------------------------- pictures

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
    from trainer_module import dataset, features, image_ops  # pylint: disable=g-import-not-at-top
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
                feature[features.IMAGE_KEY].bytes_list.value[0], TILE).numpy()
    tiles = [dict(mistakes[i], tile=t) for t, i in enumerate(sorted(found))]
    columns = 6
    rows = max(1, -(-len(tiles) // columns))
    caption = 34
    font, named = font_for(classes, 11)
    image = Image.new("RGB", (columns * (TILE + 4), rows * (TILE + caption + 4)), "white")
    draw = ImageDraw.Draw(image)
    for t, tile in enumerate(tiles):
        x, y = (t % columns) * (TILE + 4), (t // columns) * (TILE + caption + 4)
        image.paste(Image.fromarray(found[sorted(found)[t]]), (x + 2, y + 2))
        true, pred = ((classes[tile["label"]], classes[tile["predicted"]]) if named
                      else (str(tile["label"]), str(tile["predicted"])))
        draw.text((x + 2, y + TILE + 4), f"true {true}", fill=(0, 110, 0), font=font)
        draw.text((x + 2, y + TILE + 17), f"-> {pred} {tile['probability']:.2f}",
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


# ---------------------------------------------------------------- inputs

def training_history(model_run_uri: str) -> Dict[str, list]:
    """{metric: per-epoch values} over both stages, and "stage_starts" (epoch indexes)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from trainer_module import train  # pylint: disable=g-import-not-at-top
    out: Dict[str, list] = {"stage_starts": []}
    for stage in (train.HEAD, train.FINE_TUNE):
        path = os.path.join(model_run_uri, "checkpoints", f"{stage}.done.json")
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path, "r") as f:
            stage_history = json.load(f)
        first = max((len(v) for k, v in out.items() if k != "stage_starts"), default=0)
        if first:
            out["stage_starts"].append(first)
        for key, values in stage_history.items():
            if key != "epoch":
                out.setdefault(key, []).extend(float(v) for v in values)
    return out


def _producer_outputs(store, artifact_uri: str) -> Dict[str, str]:
    """Output URIs of the execution that wrote the artifact at `artifact_uri`."""
    artifacts = store.get_artifacts_by_uri(artifact_uri) if artifact_uri else []
    if not artifacts:
        return {}
    events = [e for e in store.get_events_by_artifact_ids([a.id for a in artifacts])
              if e.type == metadata_store_pb2.Event.OUTPUT]
    return history.artifact_uris(store, events[0].execution_id,
                                 metadata_store_pb2.Event.OUTPUT) if events else {}


def _pushed(store) -> Optional[dict]:
    pusher = history.latest_execution(store, "Pusher")
    if pusher is None:
        return None
    uri = history.artifact_uris(store, pusher.id, metadata_store_pb2.Event.OUTPUT).get(
        "pushed_model")
    props = history.artifact_properties(store, uri) if uri else {}
    if not props:
        return None
    return {"pushed": bool(props.get("pushed")), "destination": props.get("pushed_destination"),
            "version": props.get("pushed_version")}


# ---------------------------------------------------------------- the page

def _verdict_section(evaluation: dict, accuracy: dict, pushed: Optional[dict],
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


def _per_class_section(per_class: Dict[str, dict]) -> str:
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


def build(workdir: str, reports_dir: Optional[str] = None,
          evaluation: Optional[dict] = None) -> Optional[str]:
    """Renders the report of the latest evaluated run; returns index.html's path, or None
    when no Evaluator has run in `workdir` yet. `evaluation`: blessing.last_evaluation's
    result when the caller already has it."""
    evaluation = evaluation or blessing.last_evaluation(workdir)
    if evaluation is None:
        return None
    store = history.open_store(features.metadata_path(workdir))
    out_dir = os.path.join(reports_dir or features.reports_dir(workdir),
                           f"run-{evaluation['id']}")
    serving_root = features.serving_dir(workdir)
    versions = sorted((v for v in os.listdir(serving_root) if v.isdigit()), key=int) \
        if os.path.isdir(serving_root) else []
    gate = history.latest_execution(store, "DataGate")
    return render(out_dir, evaluation, pushed=_pushed(store),
                  serving=os.path.join(serving_root, versions[-1]) if versions else None,
                  model_run=_producer_outputs(store, evaluation["model"] or "").get(
                      "model_run"),
                  gate_inputs=history.artifact_uris(store, gate.id,
                                                    metadata_store_pb2.Event.INPUT)
                  if gate else None,
                  gate_properties=history.properties(gate) if gate else None)


def render(out_dir: str, evaluation: dict, *, pushed: Optional[dict], serving: Optional[str],
           model_run: Optional[str], gate_inputs: Optional[Dict[str, str]] = None,
           gate_properties: Optional[dict] = None) -> str:
    """Writes the run report into the local folder `out_dir`; returns index.html's path.

    Args:
      evaluation: blessing.evaluation_of's dict.
      pushed: {"pushed", "destination", "version"} of the Pusher's output, or None.
      serving: the model still serving when this one was not pushed, or None.
      model_run: the Trainer's model_run URI (training curves), or None.
      gate_inputs, gate_properties: the DataGate's input URIs (examples, statistics, schema,
        anomalies) and properties; with them the data report's sections follow.
    """
    from components.data_validation import executor as data_executor  # pylint: disable=g-import-not-at-top
    os.makedirs(out_dir, exist_ok=True)
    classes = evaluation["classes"]
    accuracy = evaluation["accuracy"]
    named = confusion_png(evaluation["matrix"], classes, os.path.join(out_dir, CONFUSION_PNG))
    curves = training_history(model_run) if model_run else {"stage_starts": []}
    predictions = blessing.mistakes(evaluation["evaluation"]) or {}
    tiles = misclassified_png(evaluation["examples"], predictions.get("misclassified", []),
                              classes, os.path.join(out_dir, MISCLASSIFIED_PNG)) \
        if predictions else []

    legend = "" if named else (
        "<p>The pictures show class ids (no installed font has every glyph of the names):</p>"
        "<ol start=\"0\" class=\"plain\">" + "".join(
            f"<li>{html.escape(c)}</li>" for c in classes) + "</ol>")
    sections = [
        "<h1>Run report</h1>",
        _verdict_section(evaluation, accuracy, pushed, serving),
        f'<h2>Confusion matrix (eval split)</h2><img src="{CONFUSION_PNG}" '
        f'alt="confusion matrix">{legend}',
        _per_class_section(evaluation["per_class"]),
        "<h2>Training curves</h2>"
        + ("<p>dashed line: fine-tuning starts</p>" if curves["stage_starts"] else "")
        + curve_svg("loss", {k: curves[k] for k in ("loss", "val_loss") if k in curves},
                    curves["stage_starts"])
        + curve_svg("accuracy", {k: curves[k] for k in ("accuracy", "val_accuracy")
                                 if k in curves}, curves["stage_starts"]),
    ]
    if predictions:
        captions = "".join(
            f"<tr><td>{t['tile'] + 1}</td><td>{html.escape(t['filename'])}</td>"
            f"<td>{html.escape(classes[t['label']])}</td>"
            f"<td>{html.escape(classes[t['predicted']])}</td>"
            f"<td class=\"n\">{t['probability']:.3f}</td></tr>" for t in tiles)
        sections.append(
            f"<h2>Misclassified eval images ({predictions['misclassified_total']} of "
            f"{predictions['count']}; the {len(tiles)} most confident shown)</h2>"
            + (f'<img src="{MISCLASSIFIED_PNG}" alt="misclassified images"><table><tr><th>#'
               "</th><th>file</th><th>true</th><th>predicted</th><th>p</th></tr>"
               f"{captions}</table>" if tiles else "<p>none: every eval image was right</p>"))
    with open(os.path.join(out_dir, RUN_JSON), "w", encoding="utf-8") as f:
        json.dump({"blessed": evaluation["blessed"], "reasons": evaluation["reasons"],
                   "accuracy": accuracy, "baseline": evaluation.get("baseline"),
                   "classes": classes, "per_class": evaluation["per_class"],
                   "names_drawn": named, "pushed": pushed, "serving": serving,
                   "history": curves, "misclassified_tiles": tiles,
                   "misclassified_total": predictions.get("misclassified_total")},
                  f, indent=1, ensure_ascii=False)

    if gate_inputs is None:
        from components.data_validation import data_report  # pylint: disable=g-import-not-at-top
        return data_report.write_page(out_dir, "imgpipe run report", sections)
    return data_executor.evaluate(
        examples_uri=gate_inputs["examples"], statistics_uri=gate_inputs["statistics"],
        schema_uri=gate_inputs["schema"], anomalies_uri=gate_inputs["anomalies"],
        out_dir=out_dir, exec_properties=gate_properties, lead=sections,
        title="imgpipe run report")["report"]
