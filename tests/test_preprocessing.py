"""Tests for trainer_module.preprocessing: EfficientNet's [0, 255] range, run for real in TFT.

The guard against double normalization is the point: a white image must come out as 255,
not 1.0, and the colleague's `model.assert_unnormalized` must reject [0, 1] input.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
from tfx.utils import io_utils
from tensorflow_metadata.proto.v0 import schema_pb2

from helpers import encode
from trainer_module import features, image_ops, model, preprocessing

S = 16
SCHEMA = os.path.join(os.path.dirname(__file__), os.pardir, "components", "data_validation",
                      "schema_template.pbtxt")


WHITE = encode(np.full((40, 30, 3), 255, np.uint8), "JPEG")
GRADIENT = encode(np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (20, 1, 3)),
                   "PNG")


def _inputs(images, labels):
    return {features.IMAGE_KEY: tf.constant([[b] for b in images]),  # [B, 1], as the schema says
            features.LABEL_KEY: tf.constant([[y] for y in labels], tf.int64)}


def test_white_is_255_not_1_and_contract():
    out = preprocessing.preprocessing_fn(_inputs([WHITE, GRADIENT], [1, 0]), {"image_size": S})
    pixels = out[features.TRANSFORMED_IMAGE_KEY]
    assert pixels.dtype == tf.float32 and pixels.shape == (2, S, S, 3)
    assert float(tf.reduce_min(pixels[0])) == 255.0  # not 1.0: no division by 255 here
    assert preprocessing.BACKBONE_INPUT_RANGE == (0.0, 255.0)
    assert out[features.LABEL_KEY].numpy().tolist() == [1, 0]
    # the same implementation as make_dataset and serving: identical pixels
    expected = image_ops.decode_and_resize(tf.constant(GRADIENT), S).numpy()
    np.testing.assert_array_equal(pixels[1].numpy(), expected.astype(np.float32))
    model.assert_unnormalized(pixels)  # accepted as is


def test_assert_unnormalized_rejects_scaled_input():
    pixels = preprocessing.preprocessing_fn(_inputs([WHITE], [0]), {"image_size": S})[
        features.TRANSFORMED_IMAGE_KEY]
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        model.assert_unnormalized(pixels / 255.0)


def test_image_size_comes_from_custom_config_and_is_checked():
    out = preprocessing.preprocessing_fn(_inputs([WHITE], [0]), None)
    assert out[features.TRANSFORMED_IMAGE_KEY].shape[1:] == (300, 300, 3)
    for bad in (0, "300", 2.5, True):
        with pytest.raises(ValueError, match="image_size"):
            preprocessing.preprocessing_fn(_inputs([WHITE], [0]), {"image_size": bad})


def test_runs_in_tft_beam_with_the_curated_schema(tmp_path):
    """AnalyzeAndTransformDataset on real examples, then the saved graph reloaded."""
    schema = io_utils.parse_pbtxt_file(SCHEMA, schema_pb2.Schema())
    metadata = dataset_metadata.DatasetMetadata(schema)
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    assert spec[features.IMAGE_KEY].shape == [1]
    raw = [{features.IMAGE_KEY: [image], features.LABEL_KEY: [label],
            features.LABEL_NAME_KEY: [b"x"], features.FILENAME_KEY: [b"x"],
            features.HEIGHT_KEY: [1], features.WIDTH_KEY: [1], features.CHANNELS_KEY: [3],
            features.FORMAT_KEY: [b"jpeg"]}
           for image, label in ((WHITE, 1), (GRADIENT, 0))]

    def fn(inputs):
        return preprocessing.preprocessing_fn(inputs, {"image_size": S})

    with tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
        (transformed, _), transform_fn = (
            (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(fn))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "tft"))
    by_label = {int(row[features.LABEL_KEY]): np.asarray(row[features.TRANSFORMED_IMAGE_KEY])
                for row in transformed}
    assert by_label[1].shape == (S, S, 3) and by_label[1].min() == 255.0
    np.testing.assert_array_equal(
        by_label[0], image_ops.decode_and_resize(tf.constant(GRADIENT), S).numpy())

    # The written graph (what the Trainer's from_examples signature runs) gives the same.
    output = tft.TFTransformOutput(str(tmp_path / "tft"))
    assert output.transformed_feature_spec()[features.TRANSFORMED_IMAGE_KEY].dtype == tf.float32
    served = output.transform_raw_features(
        {features.IMAGE_KEY: tf.constant([[GRADIENT], [WHITE]]),
         features.LABEL_KEY: tf.constant([[0], [1]], tf.int64)}, drop_unused_features=True)
    np.testing.assert_array_equal(served[features.TRANSFORMED_IMAGE_KEY][0].numpy(), by_label[0])
    assert float(tf.reduce_min(served[features.TRANSFORMED_IMAGE_KEY][1])) == 255.0
