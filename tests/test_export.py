"""Tests for trainer_module.export on one really trained and exported EfficientNetB3.

The session fixture `tiny_model` (conftest.py; test_predict.py checks the same model) builds a
real Transform graph (tft_beam.AnalyzeDataset over the project's preprocessing_fn and
curated schema), trains 3 classes 2 steps at 32 px with `train_and_export` from a saved B3
notop weights file (the pretrained path), and exports with from_examples running that
graph. The tests then feed the SavedModel images of other sizes and formats. (The
from_examples path without a Transform graph is checked on the multi-worker model in
test_train.py.)
"""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tiny_shards import CLASSES, encode, gif_and_bmp_variants, gif_declaring, image_array, \
    make_example, png_declaring, write_transform_graph
from trainer_module import export, features, model, preprocessing, train

S = 32  # the image size tiny_model is trained at
K = len(CLASSES)  # it has all of tiny_shards' classes
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="exported")
def _exported(tiny_model):
    return types.SimpleNamespace(**vars(tiny_model),
                                 loaded=tf.saved_model.load(tiny_model.serving_dir))


def test_a_run_that_nothing_restarts_keeps_its_history_but_no_restart_state(exported):
    """backup_interval_s=None (local runs): the history the run report draws is written;
    the backup and the stage-end weights, which only a restarted execution reads, are not."""
    run = exported.root / "model_run"
    history = json.loads((run / "checkpoints" / "head.done.json").read_text())
    assert history["epoch"] == [0] and len(history["val_accuracy"]) == 1
    assert not list((run / "checkpoints").glob("head.weights*"))
    assert not (run / "backup_head").exists()
    timings = json.loads((run / train.TIMINGS_FILE).read_text())
    assert timings["backups_head"] == [] and timings["weights_head"] == 0


def _images():
    """A JPEG and a PNG of sizes other than the 32 px training size, one per class."""
    return [encode(image_array(0, 57, 41, seed=5), "JPEG"),
            encode(image_array(1, 23, 90, seed=6), "PNG")]


def _examples(images, with_label: bool):
    out = []
    for i, data in enumerate(images):
        serialized = make_example(data, i, CLASSES[i], "x", (1, 1))
        if not with_label:
            example = tf.train.Example.FromString(serialized)
            del example.features.feature[features.LABEL_KEY]
            serialized = example.SerializeToString()
        out.append(serialized)
    return tf.constant(out)


def test_signature_contracts(exported):
    serving = exported.loaded.signatures[export.SERVING_SIGNATURE]
    examples = exported.loaded.signatures[export.EXAMPLES_SIGNATURE]
    assert serving.structured_input_signature[1] == {
        "image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")}
    assert examples.structured_input_signature[1] == {
        "examples": tf.TensorSpec([None], tf.string, name="examples")}
    for fn in (serving, examples):
        outputs = fn.structured_outputs
        assert set(outputs) == {"probabilities", "label"}
        assert outputs["probabilities"].dtype == tf.float32
        assert outputs["probabilities"].shape.as_list() == [None, K]
        assert outputs["label"].dtype == tf.string and outputs["label"].shape.as_list() == [None]


def test_serving_takes_jpeg_and_png_of_any_size_and_names_the_class(exported):
    out = exported.loaded.signatures[export.SERVING_SIGNATURE](
        image_bytes=tf.constant(_images()))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (2, K)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The vocabulary lives in the graph: names, not ids, with no labels.txt at hand.
    expected = [CLASSES[i].encode() for i in probabilities.argmax(axis=1)]
    assert out["label"].numpy().tolist() == expected
    for name, key in ((export.SERVING_SIGNATURE, "image_bytes"),
                      (export.EXAMPLES_SIGNATURE, "examples")):  # an empty request
        empty = exported.loaded.signatures[name](**{key: tf.constant([], tf.string)})
        assert empty["probabilities"].shape == (0, K) and empty["label"].shape == (0,)
    # A request with undecodable elements names them.
    images = _images()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not JPEG, PNG.*\[1 3\]"):
        exported.loaded.signatures[export.SERVING_SIGNATURE](
            image_bytes=tf.constant([images[0], b"", images[1], b"RIFF....WEBPVP8 "]))


@pytest.mark.parametrize("with_label", [True, False])
def test_both_signatures_agree_through_the_transform_graph(exported, with_label):
    images = _images()
    served = exported.loaded.signatures[export.SERVING_SIGNATURE](
        image_bytes=tf.constant(images))
    evaluated = exported.loaded.signatures[export.EXAMPLES_SIGNATURE](
        examples=_examples(images, with_label))
    np.testing.assert_array_equal(served["probabilities"].numpy(),
                                  evaluated["probabilities"].numpy())
    assert served["label"].numpy().tolist() == evaluated["label"].numpy().tolist()
    # the model is not constant: the two images get different outputs
    assert np.ptp(served["probabilities"].numpy()[:, 0]) > 0


def test_exported_model_is_the_inference_model_and_loads_in_tf_keras(exported):
    """TFMA loads the SavedModel with tf_keras first: it must load, without augmentation."""
    keras_model = tf_keras.models.load_model(exported.serving_dir)
    kinds = set()
    stack = [keras_model]
    while stack:
        layer = stack.pop()
        kinds.add(type(layer).__name__)
        stack.extend(getattr(layer, "layers", []))
    assert not {k for k in kinds if k.startswith("Random")}, kinds
    assert "augmentation" not in {l.name for l in keras_model.layers}
    assert keras_model.input.dtype == tf.float32
    assert {export.SERVING_SIGNATURE, export.EXAMPLES_SIGNATURE} <= set(keras_model.signatures)


def _scaled_preprocessing_fn(inputs, custom_config=None):
    out = preprocessing.preprocessing_fn(inputs, custom_config)
    out[features.TRANSFORMED_IMAGE_KEY] = out[features.TRANSFORMED_IMAGE_KEY] / 255.0
    return out


def test_export_refuses_a_transform_graph_that_does_not_fit(exported, tmp_path):
    _, inference_model, _ = model.build_model(2, image_size=S)
    sample = _examples(_images(), with_label=True)
    with pytest.raises(RuntimeError, match="same image_size"):
        export.export_model(inference_model, CLASSES[:2], S + 8, str(tmp_path / "a"),
                            exported.transform_dir, sample_examples=sample)
    scaled = write_transform_graph(tmp_path / "scaled", tmp_path / "tmp", image_size=S,
                                   preprocessing_fn=_scaled_preprocessing_fn)
    with pytest.raises(RuntimeError, match="normalizes twice"):
        export.export_model(inference_model, CLASSES[:2], S, str(tmp_path / "b"), scaled,
                            sample_examples=sample)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_serving_refuses_an_image_above_the_pixel_limit_before_decoding(exported):
    """The ingest's max_pixels (default) travels with the model: a 20000 x 20000 PNG would
    take ~1.2 GB to decode. Its header alone is sent here, so a decode would fail otherwise."""
    serve = exported.loaded.signatures[export.SERVING_SIGNATURE]
    good = _images()
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        serve(image_bytes=tf.constant([good[0], png_declaring(20000, 20000), good[1]]))
    assert f"declares more than {features.MAX_PIXELS} pixels" in err.value.message
    assert "their indices:" in err.value.message and "[1]" in err.value.message
    side = int(features.MAX_PIXELS ** 0.5)  # at the limit: decoded as usual
    assert serve(image_bytes=tf.constant([good[0], png_declaring(side, side, rows=side)]))[
        "probabilities"].shape == (2, K)


def test_serving_refuses_what_it_would_decode_wrongly_and_gifs_hiding_large_frames(exported):
    """GIF/BMP layouts that TF decodes to other pixels than the file holds (ingest
    re-encodes them, so the model never saw TF's version) are refused, naming them; a GIF
    whose 1 x 1 screen hides a 9500 x 9500 frame is refused by the pixel limit."""
    serve = exported.loaded.signatures[export.SERVING_SIGNATURE]
    good = _images()
    variants = gif_and_bmp_variants()
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        serve(image_bytes=tf.constant([good[0], variants["bmp 8-bit palette*"], good[1],
                                       variants["gif frame smaller than its screen*"]]))
    assert "decodes to other pixels than the file holds" in err.value.message
    assert "their indices:" in err.value.message and "[1 3]" in err.value.message
    fine = [data for name, data in variants.items() if not name.endswith("*")]
    assert serve(image_bytes=tf.constant(fine))["probabilities"].shape == (len(fine), K)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        serve(image_bytes=tf.constant([good[0], gif_declaring(9500, 9500)]))
    assert f"declares more than {features.MAX_PIXELS} pixels" in err.value.message
    assert "[1]" in err.value.message
