"""pipeline/predict.py and `imgpipe predict` on one really trained and exported B3 (32 px,
3 classes, 2 steps from a saved backbone weights file): the session fixture `tiny_model`
(conftest.py), whose export test_export.py checks."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli, predict
from tiny_shards import CLASSES, encode, gif_and_bmp_variants, image_array, png_declaring
from trainer_module import export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tiny_model):
    return tiny_model.serving_dir  # workdir/serving/17


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    files = []
    for i, (fmt, ext) in enumerate([("JPEG", "jpg"), ("PNG", "png"), ("JPEG", "jpg"),
                                    ("PNG", "png"), ("JPEG", "jpg")]):
        path = folder / ("sub" if i % 2 else "") / f"img{i}.{ext}"
        path.write_bytes(encode(image_array(i % 3, 30 + i, 41, seed=i), fmt))
        files.append(str(path))
    (folder / ".hidden.jpg").write_bytes(b"not even an image")
    return folder, sorted(files)


def _direct(model_dir, paths):
    serve = tf.saved_model.load(model_dir).signatures[export.SERVING_SIGNATURE]
    data = [open(p, "rb").read() for p in paths]
    return serve(image_bytes=tf.constant(data))


def test_results_are_serving_default_exactly_in_any_batch_size(model_dir, images):
    folder, files = images
    expected = _direct(model_dir, files)
    for batch_size in (64, 2):
        results = list(predict.predict(model_dir, [str(folder)], batch_size=batch_size,
                                       top_k=3))
        assert sorted(r["path"] for r in results) == files  # hidden file skipped
        by_path = {r["path"]: r for r in results}
        for i, path in enumerate(files):
            assert by_path[path]["label"] == expected["label"][i].numpy().decode()
            probs = expected["probabilities"][i].numpy()
            assert by_path[path]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
            assert [n for n, _ in by_path[path]["top"]] == \
                [CLASSES[j] for j in probs.argsort()[::-1][:3]]  # names from labels.txt


def test_bad_files_get_their_own_error_and_the_rest_are_classified(model_dir, images, tmp_path):
    folder, files = images
    good = open(files[0], "rb").read()
    (folder / "truncated.jpg").write_bytes(good[:len(good) // 3])
    (folder / "notes.txt").write_text("hello")
    (folder / "empty.png").write_bytes(b"")
    (folder / "huge.png").write_bytes(png_declaring(20000, 20000))
    (folder / "palette.bmp").write_bytes(gif_and_bmp_variants()["bmp 8-bit palette*"])
    os.symlink(str(tmp_path / "gone.jpg"), str(folder / "dangling.jpg"))
    results = {os.path.basename(r["path"]): r
               for r in predict.predict(model_dir, [str(folder)], batch_size=3)}
    assert results["truncated.jpg"]["error"] == "cannot be decoded (truncated or corrupt)"
    assert results["notes.txt"]["error"] == "not a JPEG, PNG, GIF or BMP image"
    assert results["empty.png"]["error"] == "not a JPEG, PNG, GIF or BMP image"
    assert results["dangling.jpg"]["error"].startswith("cannot read:")
    assert results["huge.png"]["error"] == \
        "larger than the model's limit of 89,478,485 pixels (refused before decoding)"
    assert results["palette.bmp"]["error"].startswith("a GIF or BMP variant TensorFlow decodes "
                                                      "wrongly")
    assert sum("label" in r for r in results.values()) == len(files)


def test_symlinked_folders_are_walked_and_loops_and_pipes_get_an_error(model_dir, images,
                                                                        tmp_path):
    folder, files = images
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(files[0], elsewhere / "linked.jpg")
    os.symlink(str(elsewhere), str(folder / "more"))  # a linked folder, as ingest follows
    os.symlink(str(folder), str(elsewhere / "back"))  # ... whose link back is a loop
    os.mkfifo(str(folder / "pipe.jpg"))  # opening it would block forever
    results = {os.path.relpath(r["path"], str(folder)): r
               for r in predict.predict(model_dir, [str(folder)], batch_size=4)}
    assert "label" in results[os.path.join("more", "linked.jpg")]
    assert results[os.path.join("more", "back")]["error"] == \
        "cannot read: a folder reached again through a symlink loop"
    assert results["pipe.jpg"]["error"] == \
        "cannot read: not a regular file (a pipe, socket or device)"
    assert sum("label" in r for r in results.values()) == len(files) + 1
    assert len(results) == len(files) + 3


def test_cli_lines_json_and_exit_status(model_dir, images, capsys):
    folder, files = images
    workdir = os.path.dirname(os.path.dirname(model_dir))
    assert cli.main(["predict", "--workdir", workdir, files[0], files[1]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == files[:2]
    path, label, probability = lines[0].split("\t")
    assert label in CLASSES and 0.0 < float(probability) <= 1.0
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert cli.main(["predict", "--model", model_dir, "--json", "--top-k", "2",
                     str(folder)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    parsed = [json.loads(l) for l in out]
    assert len(parsed) == len(files) + 1
    assert [p for p in parsed if "error" in p][0]["path"].endswith("bad.jpg")
    assert all(len(p["top"]) == 2 for p in parsed if "top" in p)


def test_model_choice_and_a_model_without_a_vocabulary_file(model_dir, images, tmp_path):
    with pytest.raises(ValueError, match="no pushed model"):
        predict.latest_model(str(tmp_path))
    for version in ("3", "12", "tmp"):
        (tmp_path / "serving" / version).mkdir(parents=True)
    assert predict.latest_model(str(tmp_path)) == str(tmp_path / "serving" / "12")
    old = str(tmp_path / "old_model")
    shutil.copytree(model_dir, old)
    os.remove(os.path.join(old, export.LABELS_ASSET))  # exported before labels.txt existed
    (result,) = predict.predict(old, [images[1][0]], top_k=3)
    names = [n for n, _ in result["top"]]
    assert names[0] == result["label"] and all(n.startswith("class ") for n in names[1:])
    assert np.isclose(sum(p for _, p in result["top"]), 1.0, atol=1e-4)
