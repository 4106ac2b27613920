"""Transform's preprocessing_fn: decode -> resize -> EfficientNet's input range.

Runs in Transform with `materialize=False`, so only the transform graph is written: decoded
pixels never reach disk. The same `image_ops.decode_and_resize` feeds `make_dataset` and the
serving signature, so Transform, training and serving share one implementation.

Output contract:
  image_xf  float32 [B, S, S, 3] in [0, 255]  (EfficientNet rescales and normalizes itself;
            scaling here as well would normalize twice and silently ruin accuracy)
  label     int64 [B]
"""
from __future__ import annotations

import numbers

import tensorflow as tf

from trainer_module import features, image_ops
from trainer_module.options import TrainOptions

DEFAULT_IMAGE_SIZE = TrainOptions.image_size
# The range the backbone expects its float input in. tf_keras EfficientNet starts with its
# own Rescaling(1/255) + Normalization, so it wants raw [0, 255] pixels: a plain cast.
BACKBONE_INPUT_RANGE = (0.0, 255.0)


def image_size_from_config(custom_config: dict | None) -> int:
    """`custom_config['image_size']` (default TrainOptions'); ValueError unless an int >= 1."""
    value = (custom_config or {}).get("image_size", DEFAULT_IMAGE_SIZE)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"custom_config['image_size']={value!r}: must be an int >= 1.")
    return int(value)


def transform_images(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """tf.string [B] or [B, 1] -> float32 [B, S, S, 3] in BACKBONE_INPUT_RANGE ([0, 255])."""
    return tf.cast(image_ops.decode_and_resize_batch(image_bytes, image_size), tf.float32)


def preprocessing_fn(inputs: dict, custom_config: dict | None = None) -> dict:
    """TFT preprocessing_fn: {image tf.string [B, 1], label int64 [B, 1]} -> the contract above.

    `custom_config['image_size']` sets S (default TrainOptions.image_size).
    """
    image_size = image_size_from_config(custom_config)
    return {
        features.TRANSFORMED_IMAGE_KEY: transform_images(inputs[features.IMAGE_KEY], image_size),
        features.LABEL_KEY: tf.reshape(inputs[features.LABEL_KEY], [-1]),
    }
