"""SavedModel export with the two serving signatures.

serving_default(image_bytes: tf.string [None])  encoded JPEG/PNG/GIF/BMP of any size
  -> probabilities float32 [None, C], label tf.string [None] (class name)
  The `_bytes` suffix lets TF Serving's REST API take {"b64": ...} inputs.
from_examples(examples: tf.string [None])       serialized tf.Examples with `image`
  (`label` optional) -> the same outputs; used by TFMA on the raw eval split. It runs the
  Transform graph (decode -> resize) when one is given, so evaluation exercises the exact
  Transform output; otherwise the same image_ops decode as serving_default.
The class vocabulary is a constant inside the graph: the model alone maps ids to names.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import tensorflow as tf

from trainer_module import features, image_ops, model
# The serving contract's names live in the contract module; re-exported for callers here.
from trainer_module.features import (  # pylint: disable=unused-import
    EXAMPLES_INPUT_KEY, EXAMPLES_SIGNATURE, LABEL_OUTPUT_KEY, LABELS_ASSET, PROBABILITIES_KEY,
    SERVING_INPUT_KEY, SERVING_SIGNATURE)


def _parse(examples: tf.Tensor) -> dict:
    # Shapes as the curated schema states them ([1]), which the Transform graph expects;
    # a missing label (serving-time examples) becomes -1.
    return tf.io.parse_example(examples, {
        features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
        features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64, default_value=[-1]),
    })


def _check_transform_output(tft_layer, sample_examples, image_size: int) -> None:
    """The Transform graph must produce [B, S, S, 3] pixels in [0, 255] for this model."""
    pixels = tft_layer(_parse(sample_examples))[features.TRANSFORMED_IMAGE_KEY]
    if tuple(pixels.shape[1:]) != (image_size, image_size, 3):
        raise RuntimeError(
            f"the Transform graph outputs {features.TRANSFORMED_IMAGE_KEY} of shape "
            f"{tuple(pixels.shape)} but the model takes {image_size}x{image_size}x3: give "
            "Transform and Trainer the same image_size.")
    model.assert_unnormalized(pixels)


def _outputs_function(inference_model, class_names: Sequence[str], image_size: int):
    """The traced tf.function both signatures call: float32 pixels [B, S, S, 3] in [0, 255]
    -> {probabilities [B, C] float32, label [B] string}.

    One trace of the network for both signatures (a trace per signature cost seconds each).
    """
    vocabulary = tf.constant(list(class_names), dtype=tf.string)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)],
                 autograph=False)
    def outputs(pixels):
        # An empty request must give empty outputs; TF's CPU depthwise convolution rejects
        # a batch of 0 ("input depth must be evenly divisible by filter depth").
        probabilities = tf.cond(
            tf.shape(pixels)[0] > 0,
            lambda: tf.cast(inference_model(pixels, training=False), tf.float32),
            lambda: tf.zeros([0, len(class_names)], tf.float32))
        names = tf.gather(vocabulary, tf.argmax(probabilities, axis=-1))
        return {PROBABILITIES_KEY: probabilities, LABEL_OUTPUT_KEY: names}

    return outputs


def export_model(inference_model, class_names: Sequence[str], image_size: int,
                 export_dir: str, transform_output_dir: Optional[str] = None,
                 sample_examples: Optional[tf.Tensor] = None,
                 max_pixels: int = features.MAX_PIXELS) -> str:
    """Saves `inference_model` with both signatures to `export_dir`; returns export_dir.

    Args:
      inference_model: float32 [B, S, S, 3] in [0, 255] -> probabilities [B, C].
      class_names: the vocabulary, index i -> name of class i.
      image_size: S.
      export_dir: SavedModel directory.
      transform_output_dir: Transform output; from_examples then runs its graph.
      sample_examples: a few serialized raw tf.Examples to check the Transform graph
        against the model (size, [0, 255] range) before saving.
      max_pixels: serving_default refuses, before decoding anything, a request with an
        image whose header declares more pixels (InvalidArgumentError naming the indices):
        one 20000 x 20000 PNG would otherwise take ~1.2 GB to decode. It refuses the same
        way the GIF and BMP variants TF decodes wrongly (image_ops.header_facts).

    Raises:
      RuntimeError: the Transform graph's output does not fit the model.
    """
    _outputs = _outputs_function(inference_model, class_names, image_size)
    tft_layer = None
    if transform_output_dir:
        import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
        tft_layer = tft.TFTransformOutput(transform_output_dir).transform_features_layer()
        inference_model.tft_layer = tft_layer  # tracked, so its assets are saved
        if sample_examples is not None:
            _check_transform_output(tft_layer, sample_examples, image_size)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT_KEY)],
                 autograph=False)
    def serve_image_bytes(image_bytes):
        # Name the offending elements: a decode error inside the batch would not.
        bad = tf.where(tf.logical_not(image_ops.is_decodable_format(image_bytes)))[:, 0]
        check = tf.debugging.Assert(
            tf.equal(tf.size(bad), 0),
            ["image_bytes holds elements that are not JPEG, PNG, GIF or BMP (empty, another "
             "format, or not an image); their indices:", bad], summarize=20)
        with tf.control_dependencies([check]):
            declared, as_stored = tf.map_fn(
                image_ops.header_facts, image_bytes,
                fn_output_signature=(tf.int64, tf.bool))
        large = tf.where(declared > max_pixels)[:, 0]
        limit = tf.debugging.Assert(
            tf.equal(tf.size(large), 0),
            [f"image_bytes holds elements whose header declares more than {max_pixels} "
             "pixels, the model's limit (refused before decoding); their indices:", large],
            summarize=20)
        # Ingest re-encoded such files to PNG, so the model never saw what TF makes of them.
        variant = tf.where(tf.logical_not(as_stored))[:, 0]
        faithful = tf.debugging.Assert(
            tf.equal(tf.size(variant), 0),
            ["image_bytes holds GIF or BMP variants that TensorFlow decodes to other pixels "
             "than the file holds (palette, RLE or 1/4/16-bit BMP; a GIF whose first frame "
             "does not fill its screen): send them as PNG; their indices:", variant],
            summarize=20)
        with tf.control_dependencies([limit, faithful]):
            pixels = tf.cast(image_ops.decode_and_resize_batch(image_bytes, image_size),
                             tf.float32)
        return _outputs(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT_KEY)],
                 autograph=False)
    def serve_examples(examples):
        parsed = _parse(examples)
        if tft_layer is not None:
            pixels = tft_layer(parsed)[features.TRANSFORMED_IMAGE_KEY]
        else:
            pixels = tf.cast(image_ops.decode_and_resize_batch(
                parsed[features.IMAGE_KEY], image_size), tf.float32)
        return _outputs(pixels)

    # save_traces=False: Keras would otherwise trace every one of B3's ~390 layers, which
    # doubles the export time; the model still loads with tf_keras (from layer configs).
    # experimental_custom_gradients=False: TF's swish has a custom gradient, and tracing it
    # for each of B3's activations was ~45% of the export; serving never takes gradients,
    # and tf_keras.models.load_model rebuilds trainable layers from their configs.
    inference_model.save(
        export_dir, save_format="tf", save_traces=False,
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
        signatures={SERVING_SIGNATURE: serve_image_bytes, EXAMPLES_SIGNATURE: serve_examples})
    tf.io.gfile.makedirs(os.path.join(export_dir, os.path.dirname(LABELS_ASSET)))
    with tf.io.gfile.GFile(os.path.join(export_dir, LABELS_ASSET), "w") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    return export_dir
