"""components/reports: the pictures and the pages on tiny inputs (the pages of real runs
are checked in test_local_runner.py, test_data_validation.py and the Kubeflow replay)."""
import json
import re

import numpy as np
from PIL import Image, ImageFont

from components.reports import data_page, page, plots, run_page
from tiny_shards import write_tiny_examples


def test_font_coverage_tells_a_glyph_from_the_notdef_box():
    bundled = ImageFont.load_default(13)
    assert plots.covers(bundled, "circle square 0123")
    assert not plots.covers(bundled, "猫")  # Pillow's font has no CJK: it would be a box


def test_unicode_class_names_are_drawn_only_with_a_font_that_has_them(tmp_path):
    classes = ["猫", "狗", "circle"]
    font, named = plots.font_for(classes)
    assert not named or plots.covers(font, "".join(classes))
    path = str(tmp_path / "m.png")
    drawn = plots.confusion_png({(0, 0): 3, (0, 1): 1, (1, 1): 2, (2, 0): 2}, classes, path)
    assert drawn == named
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_confusion_cells_are_shaded_by_share_of_the_actual_class(tmp_path):
    path = str(tmp_path / "m.png")
    plots.confusion_png({(0, 0): 10, (1, 0): 5, (1, 1): 5}, ["a", "b"], path)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # The darkest blue cell is the all-correct class; the off-diagonal half-share cell is red.
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 80)
    red = (pixels[..., 0] > 200) & (pixels[..., 2] < 200) & (pixels[..., 1] < 200)
    assert blue.sum() > 100 and red.sum() > 100
    assert np.argwhere(blue)[:, 0].mean() < np.argwhere(red)[:, 0].mean()  # row a above b


def test_curves_are_one_polyline_per_series_and_mark_where_a_stage_starts():
    svg = plots.curve_svg("loss", {"loss": [2.0, 1.5, 1.0], "val_loss": [2.1, 1.7, 1.2]}, [2])
    assert svg.count("<polyline") == 2 and "stroke-dasharray" in svg
    assert "no history" in plots.curve_svg("loss", {}, [])


def test_misclassified_grid_draws_exactly_the_listed_mistakes(tmp_path):
    write_tiny_examples(tmp_path / "examples")
    mistakes = [{"filename": "x/jpeg", "label": 0, "predicted": 1, "probability": 0.9},
                {"filename": "x/png", "label": 1, "predicted": 0, "probability": 0.7},
                {"filename": "not/there", "label": 0, "predicted": 1, "probability": 0.6}]
    path = str(tmp_path / "grid.png")
    tiles = plots.misclassified_png(str(tmp_path / "examples"), mistakes, ["a", "b"], path)
    assert [(t["filename"], t["tile"]) for t in tiles] == [("x/jpeg", 0), ("x/png", 1)]
    with Image.open(path) as image:
        image.load()
        assert image.size == (6 * (plots.MISTAKE_TILE + 4), plots.MISTAKE_TILE + 34 + 4)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    tile = plots.MISTAKE_TILE + 4
    assert pixels[2:plots.MISTAKE_TILE, 2:plots.MISTAKE_TILE].std() > 0  # an image, not blank
    assert (pixels[:, 2 * tile:] == 255).all()  # nothing after the two tiles found


def _evaluation(examples_uri: str) -> dict:
    return {"blessed": True, "reasons": [], "baseline": None, "examples": examples_uri,
            "classes": ["a", "b"], "accuracy": {"candidate": 0.75},
            "matrix": {(0, 0): 3, (0, 1): 1, (1, 1): 4}, "evaluation": "unused",
            "per_class": {"a": {"precision": 1.0, "recall": 0.75, "f1": 0.857, "support": 4},
                          "b": {"precision": 0.8, "recall": 1.0, "f1": 0.889, "support": 4}}}


def test_the_run_page_and_then_the_data_page_in_one_offline_file(tmp_path):
    write_tiny_examples(tmp_path / "examples")
    examples = str(tmp_path / "examples")
    mistakes = {"count": 8, "misclassified_total": 1, "misclassified": [
        {"filename": "x/jpeg", "label": 0, "predicted": 1, "probability": 0.9}]}
    ingest = {"classes": ["a", "b"], "data_root": "/d", "layout": "class_folders",
              "per_split": {"train": {"a": 4, "b": 4}}, "counts": {"written": 16}}
    out = tmp_path / "run"
    path = run_page.render(
        str(out), _evaluation(examples),
        pushed={"pushed": True, "destination": "/w/serving/7", "version": "7"}, serving=None,
        curves={"stage_starts": [], "loss": [1.0, 0.5], "val_loss": [1.1, 0.7]},
        mistakes=mistakes,
        data={"examples_uri": examples, "statistics_uri": None, "report": ingest,
              "blocking": [], "warnings": ["a <warning>"]})
    text = open(path, encoding="utf-8").read()
    order = [text.index(s) for s in ("Run report", "Blessed: pushed to /w/serving/7",
                                     "Confusion matrix", "Per class", "Training curves",
                                     "Misclassified eval images (1 of 8", "Data report",
                                     "a &lt;warning&gt;", "Class balance: train")]
    assert order == sorted(order)
    assert sorted(re.findall(r'src="([^"]+)"', text)) == sorted(
        [run_page.CONFUSION_PNG, run_page.MISCLASSIFIED_PNG, data_page.SAMPLES_PNG])
    saved = json.loads((out / run_page.RUN_JSON).read_text())
    assert saved["pushed"]["version"] == "7" and saved["misclassified_total"] == 1
    assert [t["filename"] for t in saved["misclassified_tiles"]] == ["x/jpeg"]
    one = page.single_file(str(out))  # what the KFP UI shows: the pictures inlined
    assert 'src="data:image/png;base64,' in one and 'src="samples.png"' not in one
    assert not re.search(r'(src|href)="(https?:)?//', one) and "<script" not in one


def test_a_run_page_without_data_or_mistakes_says_so(tmp_path):
    write_tiny_examples(tmp_path / "examples")
    evaluation = dict(_evaluation(str(tmp_path / "examples")), blessed=False,
                      reasons=["accuracy 0.75 < min_accuracy 0.9"])
    path = run_page.render(str(tmp_path / "run"), evaluation, pushed=None,
                           serving="/w/serving/3", curves={"stage_starts": []}, mistakes=None)
    text = open(path, encoding="utf-8").read()
    assert "Not blessed: nothing pushed" in text and "still serving: /w/serving/3" in text
    assert "accuracy 0.75 &lt; min_accuracy 0.9" in text
    assert "Data report" not in text and "Misclassified" not in text
    assert "loss: no history" in text


def test_bars_and_lists_escape_what_they_show():
    assert "&lt;b&gt;" in page.bars([("<b>", 3)]) and page.bars([]) == "<p>none</p>"
    assert page.bullets(["x & y"], "bad") == '<ul class="bad"><li>x &amp; y</li></ul>'
