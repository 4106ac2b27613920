"""pipeline/run_report.py: the pictures and the page's parts on tiny inputs (the report of a
real run, with a real Evaluator and Trainer, is checked in test_local_runner.py)."""
import json
import os

import numpy as np
from PIL import Image, ImageFont

from helpers import mlmd_store
from pipeline import run_report
from tiny_shards import write_tiny_examples


def test_font_coverage_tells_a_glyph_from_the_notdef_box():
    bundled = ImageFont.load_default(13)
    assert run_report.covers(bundled, "circle square 0123")
    assert not run_report.covers(bundled, "猫")  # Pillow's font has no CJK: it would be a box


def test_unicode_class_names_are_drawn_only_with_a_font_that_has_them(tmp_path):
    classes = ["猫", "狗", "circle"]
    font, named = run_report.font_for(classes)
    assert not named or run_report.covers(font, "".join(classes))
    path = str(tmp_path / "m.png")
    drawn = run_report.confusion_png({(0, 0): 3, (0, 1): 1, (1, 1): 2, (2, 0): 2}, classes, path)
    assert drawn == named
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_confusion_cells_are_shaded_by_share_of_the_actual_class(tmp_path):
    path = str(tmp_path / "m.png")
    run_report.confusion_png({(0, 0): 10, (1, 0): 5, (1, 1): 5}, ["a", "b"], path)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # The darkest blue cell is the all-correct class; the off-diagonal half-share cell is red.
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 80)
    red = (pixels[..., 0] > 200) & (pixels[..., 2] < 200) & (pixels[..., 1] < 200)
    assert blue.sum() > 100 and red.sum() > 100
    assert np.argwhere(blue)[:, 0].mean() < np.argwhere(red)[:, 0].mean()  # row a above b


def test_training_history_joins_both_stages(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "head.done.json").write_text(json.dumps(
        {"epoch": [0, 1], "loss": [2.0, 1.5], "val_accuracy": [0.4, 0.5]}))
    (checkpoints / "fine_tune.done.json").write_text(json.dumps(
        {"epoch": [2], "loss": [1.0], "val_accuracy": [0.7]}))
    history = run_report.training_history(str(tmp_path))
    assert history == {"stage_starts": [2], "loss": [2.0, 1.5, 1.0],
                       "val_accuracy": [0.4, 0.5, 0.7]}
    svg = run_report.curve_svg("loss", {"loss": history["loss"]}, history["stage_starts"])
    assert svg.count("<polyline") == 1 and svg.count(",") >= 3
    assert "stroke-dasharray" in svg  # where fine-tuning starts


def test_misclassified_grid_draws_exactly_the_listed_mistakes(tmp_path):
    write_tiny_examples(tmp_path / "examples")
    mistakes = [{"filename": "x/jpeg", "label": 0, "predicted": 1, "probability": 0.9},
                {"filename": "x/png", "label": 1, "predicted": 0, "probability": 0.7},
                {"filename": "not/there", "label": 0, "predicted": 1, "probability": 0.6}]
    path = str(tmp_path / "grid.png")
    tiles = run_report.misclassified_png(str(tmp_path / "examples"), mistakes, ["a", "b"], path)
    assert [(t["filename"], t["tile"]) for t in tiles] == [("x/jpeg", 0), ("x/png", 1)]
    with Image.open(path) as image:
        image.load()
        assert image.size == (6 * (run_report.TILE + 4), run_report.TILE + 34 + 4)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    tile = run_report.TILE + 4
    assert pixels[2:run_report.TILE, 2:run_report.TILE].std() > 0  # an image, not blank
    assert (pixels[:, 2 * tile:] == 255).all()  # nothing after the two tiles found


def test_no_evaluation_yet_means_no_report(tmp_path):
    mlmd_store(tmp_path)  # an empty, real store
    assert run_report.build(str(tmp_path)) is None
    assert not os.path.exists(tmp_path / "reports")
