"""EfficientNetB3 classifier, built from data.

`build_model` returns two models sharing weights:
  training model   uint8 [B, S, S, 3] -> cast -> augmentation -> inference model
  inference model  float32 [B, S, S, 3] in [0, 255] -> EfficientNetB3 (rescales and
                   normalizes internally) -> dropout -> softmax float32 [B, C]
Only the inference model is exported, so augmentation never reaches eval or serving.
Layer names are stable: "efficientnetb3", "head_dropout", "probabilities", "augmentation".

Fine-tuning (pretrained weights): stage 1 trains the head on a frozen backbone; stage 2
(`unfreeze_top_blocks`) opens the top N of the 7 blocks plus top_conv, BatchNorm kept frozen.
The backbone always runs with training=False, so BatchNorm statistics never move.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import urllib.request

import tensorflow as tf
import tf_keras

from trainer_module import image_ops
from trainer_module.options import TrainOptions

BACKBONE_NAME = "efficientnetb3"
FROM_SCRATCH_BN_MOMENTUM = 0.9
NUM_BLOCKS = 7  # EfficientNet stages block1 .. block7
AUGMENTATION = (  # (layer class, kwargs); data, so it can be read and changed in one place
    ("RandomFlip", {"mode": "horizontal"}),
    ("RandomRotation", {"factor": 0.05}),
    # Left out when the input zooms instead (build_model(random_crop=True)): the same zoom
    # distribution, done while decoding (image_ops.decode_random_zoom_and_resize). It then
    # comes before flip and rotation; all three act about the centre, so they commute, and
    # only the corners a rotation uncovers differ: mirrored from the zoom window, not from
    # the image beyond it.
    ("RandomZoom", {"height_factor": image_ops.ZOOM_FACTOR}),
    ("RandomContrast", {"factor": 0.1}),
)
# The file tf_keras fetches for weights="imagenet" (and caches under ~/.keras/models).
IMAGENET_FILE = "efficientnetb3_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/keras-applications/" + IMAGENET_FILE
NETWORK_TIMEOUT_S = 5.0  # bounds the probe, and each socket operation of the download x6


@contextlib.contextmanager
def local_weights(weights):
    """Maps the `weights` setting to what tf_keras.applications accepts, for a `with` block.

    Args:
      weights: None/"none" (random init), "imagenet", or the path of an EfficientNetB3
        include_top=False weights file, local or on any tf.io.gfile filesystem (gs://...).

    Yields:
      None, "imagenet", or a local file path. A remote file is copied to a temporary folder
      that is deleted when the block ends (B3's file is 44 MB; every Trainer run makes one).

    Raises:
      ValueError: a path that does not exist.
    """
    if weights in (None, "", "none"):
        yield None
        return
    if weights == "imagenet":
        yield "imagenet"
        return
    if not tf.io.gfile.exists(weights):
        raise ValueError(f"weights={weights!r}: no such file; use none, imagenet, or a path "
                         "to an EfficientNetB3 (include_top=False) weights file.")
    if "://" not in weights:
        yield weights
        return
    with tempfile.TemporaryDirectory(prefix="imgpipe_weights_") as folder:
        local = os.path.join(folder, os.path.basename(weights))
        tf.io.gfile.copy(weights, local, overwrite=True)
        yield local


def _imagenet_cached() -> bool:
    # Where tf_keras.utils.get_file looks: ~/.keras, or /tmp/.keras when that is not writable.
    base = os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.exists(os.path.join(base, "models", IMAGENET_FILE))


def url_reachable(url: str, timeout: float) -> bool:
    """True when `url` answers a HEAD request with 2xx/3xx within `timeout` per operation.

    A bare TCP connect proves little (sandbox proxies accept any connection), and
    urlretrieve has no timeout at all, so this is the bounded check before a download.
    """
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                    timeout=timeout) as response:
            return 200 <= response.status < 400
    except (OSError, ValueError):  # URLError, HTTPError, socket timeouts are OSErrors
        return False


def _load_backbone(image_size: int, weights):
    return tf_keras.applications.EfficientNetB3(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3),
        pooling="avg")


def _backbone(image_size: int, weights):
    if weights is None:
        return _load_backbone(image_size, None)
    if weights != "imagenet":
        try:
            return _load_backbone(image_size, weights)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"could not load weights {weights!r} into EfficientNetB3 "
                               f"include_top=False ({err}).") from err
    # urlretrieve has no timeout: on a network that drops packets it would hang for minutes,
    # so probe first (unless cached) and bound every socket operation of the download.
    if not _imagenet_cached() and not url_reachable(IMAGENET_URL, NETWORK_TIMEOUT_S):
        raise RuntimeError(
            f"weights='imagenet' needs to download {IMAGENET_URL}, which is unreachable "
            "(offline?). Download the file elsewhere and pass its path (local or gs://) as "
            "weights.")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S * 6)
    try:
        return _load_backbone(image_size, weights)
    except Exception as err:  # the download error type varies with the failure
        raise RuntimeError(
            f"weights='imagenet': getting {IMAGENET_FILE} failed ({type(err).__name__}: "
            f"{err}). Download the file elsewhere and pass its path as weights.") from err
    finally:
        socket.setdefaulttimeout(previous)


def skip_autograph_for_tf_keras() -> None:
    """Backports TensorFlow's later AutoGraph rule DoNotConvert("tf_keras").

    TF 2.16 leaves `keras` alone but not the renamed `tf_keras`, so every trace re-converts
    tf_keras internals through AutoGraph's AST passes. Measured here on B3 at 32 px (CPU
    seconds): first training step 31 -> 6, first evaluation 7 -> 1.5, export 22 -> 12.
    tf_keras is Keras 2.15 code, written for the rule. Idempotent; no-op if TF moves it.
    """
    try:
        from tensorflow.python.autograph.core import config as ag_config  # pylint: disable=g-import-not-at-top
    except ImportError:
        return
    rules = getattr(ag_config, "CONVERSION_RULES", None)
    if rules is None or any(getattr(r, "_prefix", None) == "tf_keras" for r in rules):
        return
    ag_config.CONVERSION_RULES = tuple(rules) + (ag_config.DoNotConvert("tf_keras"),)


def augmentation(random_crop: bool = False, dtype=None):
    """The training augmentation, AUGMENTATION's layers in order, as one Sequential named
    "augmentation": float [B, S, S, 3] in [0, 255] -> the same, active only with
    training=True. random_crop leaves RandomZoom out (the input zooms while decoding).
    dtype: the layers' dtype; None follows the global (mixed precision) policy."""
    return tf_keras.Sequential(
        [getattr(tf_keras.layers, cls)(**kwargs, dtype=dtype) for cls, kwargs in AUGMENTATION
         if not (random_crop and cls == "RandomZoom")],
        name="augmentation")


def build_model(num_classes: int, *, image_size: int = TrainOptions.image_size,
                weights: str = TrainOptions.weights, dropout: float = TrainOptions.dropout,
                augment: bool = TrainOptions.augment, random_crop: bool = False):
    """Returns (training_model, inference_model, backbone); see the module docstring.

    random_crop: the training input already zooms (make_dataset(random_crop=True)), so the
    augmentation leaves RandomZoom out; flip, rotation and contrast stay.

    Pretrained weights: the backbone starts frozen (stage 1 trains the head only).
    weights="none": the backbone trains from the start (nothing pretrained to protect).
    Build under the strategy's scope and after the mixed-precision policy is set.

    Raises:
      ValueError: num_classes < 2, image_size < 32, dropout outside [0, 1), a missing
        weights path.
      RuntimeError: imagenet weights cannot be downloaded, or the file does not fit.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: need at least 2.")
    if image_size < 32:
        raise ValueError(f"image_size={image_size}: EfficientNetB3 needs at least 32.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout}: must be in [0, 1).")
    skip_autograph_for_tf_keras()  # before anything traces the model (fit, export)
    with local_weights(weights) as resolved:
        backbone = _backbone(image_size, resolved)
    backbone._name = BACKBONE_NAME  # pylint: disable=protected-access
    pretrained = resolved is not None
    backbone.trainable = not pretrained
    if not pretrained:
        # Keras' BatchNorm momentum 0.99 needs hundreds of steps before its inference
        # statistics match training; short from-scratch runs (the demo: ~400 steps) then
        # evaluate near chance. Measured on the demo data: eval accuracy 0.53 -> 0.70.
        for layer in backbone.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.momentum = FROM_SCRATCH_BN_MOMENTUM

    pixels = tf_keras.Input((image_size, image_size, 3), dtype=tf.float32, name="pixels")
    x = backbone(pixels, training=False) if pretrained else backbone(pixels)
    x = tf_keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = tf_keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                    name="probabilities")(x)
    inference_model = tf_keras.Model(pixels, outputs, name="classifier")

    images = tf_keras.Input((image_size, image_size, 3), dtype=tf.uint8, name="image")
    x = tf_keras.layers.Lambda(lambda t: tf.cast(t, tf.float32), name="to_float")(images)
    if augment:
        x = augmentation(random_crop)(x)
    training_model = tf_keras.Model(images, inference_model(x), name="training_model")
    return training_model, inference_model, backbone


def unfreeze_top_blocks(backbone, num_blocks: int) -> int:
    """Stage 2: makes the top `num_blocks` blocks (and top_conv) trainable, BatchNorm frozen.

    Everything else (stem, lower blocks, every BatchNormalization) is frozen. Recompile
    the model afterwards for the change to take effect.

    Returns:
      The number of layers made trainable.

    Raises:
      ValueError: num_blocks outside [0, 7].
    """
    if not 0 <= num_blocks <= NUM_BLOCKS:
        raise ValueError(f"num_blocks={num_blocks}: must be in [0, {NUM_BLOCKS}].")
    first = NUM_BLOCKS - num_blocks + 1
    prefixes = tuple(f"block{i}" for i in range(first, NUM_BLOCKS + 1)) + ("top_",)
    backbone.trainable = True
    count = 0
    for layer in backbone.layers:
        trainable = (num_blocks > 0 and layer.name.startswith(prefixes)
                     and not isinstance(layer, tf_keras.layers.BatchNormalization))
        layer.trainable = trainable
        count += int(trainable)
    return count


def assert_unnormalized(images) -> None:
    """Guards against double normalization: EfficientNet expects [0, 255], not [0, 1].

    Integer batches always pass. A float batch whose maximum is <= 1 fails (an all-black
    float batch would too: check a batch with real images).

    Raises:
      RuntimeError: a float batch already scaled to [0, 1].
    """
    images = tf.convert_to_tensor(images)
    if images.dtype.is_floating and float(tf.reduce_max(images)) <= 1.0:
        raise RuntimeError(
            "input images are in [0, 1]: EfficientNet rescales internally, so dividing by "
            "255 before it normalizes twice and ruins accuracy. Feed [0, 255] pixels.")
