"""Tests for trainer_module.model: real tf_keras EfficientNetB3 builds at 32 px, no mocks."""
from __future__ import annotations

import os
import socket
import time

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tf_keras

from trainer_module import model

S = 32


def _all_layers(layer):
    """Every layer nested under `layer` (Keras .layers is one level only)."""
    out = [layer]
    for child in getattr(layer, "layers", []):
        out.extend(_all_layers(child))
    return out


def _augmentation_types(layer):
    return {type(l).__name__ for l in _all_layers(layer) if type(l).__name__.startswith("Random")}


def test_arguments_checked_before_building():
    for kwargs, match in [({"num_classes": 1}, "num_classes=1"),
                          ({"num_classes": 2, "image_size": 16}, "image_size=16"),
                          ({"num_classes": 2, "dropout": 1.0}, "dropout=1.0")]:
        with pytest.raises(ValueError, match=match):
            model.build_model(image_size=kwargs.pop("image_size", S), **kwargs)
    with pytest.raises(ValueError, match="no such file"):
        model.build_model(2, image_size=S, weights="/nonexistent/b3_notop.h5")
    with pytest.raises(ValueError, match=r"num_blocks=8: must be in \[0, 7\]"):
        model.unfreeze_top_blocks(None, 8)


def test_augmentation_only_in_training_model_and_head_settings():
    training, inference, backbone = model.build_model(3, image_size=S, dropout=0.35)
    names = {l.name for l in training.layers}
    assert {"image", "to_float", "augmentation", "classifier"} <= names
    assert _augmentation_types(training) == {"RandomFlip", "RandomRotation", "RandomZoom",
                                             "RandomContrast"}
    assert _augmentation_types(inference) == set()
    assert "augmentation" not in {l.name for l in _all_layers(inference)}
    assert inference.get_layer("head_dropout").rate == 0.35
    assert inference.get_layer(model.BACKBONE_NAME) is backbone
    assert training.input.dtype == tf.uint8 and inference.input.dtype == tf.float32
    assert inference.output.shape.as_list() == [None, 3]
    # weights="none": nothing pretrained, so the whole backbone trains from the start
    assert backbone.trainable and len(backbone.trainable_weights) > 300
    norms = [l for l in backbone.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert norms and {l.momentum for l in norms} == {model.FROM_SCRATCH_BN_MOMENTUM}

    batch = np.random.default_rng(0).integers(0, 256, (2, S, S, 3)).astype(np.uint8)
    # In inference mode the augmentation is inactive: both models agree on the same pixels.
    np.testing.assert_allclose(training(batch, training=False),
                               inference(batch.astype(np.float32), training=False), atol=1e-6)

    no_aug, _, _ = model.build_model(3, image_size=S, augment=False)
    assert _augmentation_types(no_aug) == set()
    # The input zooms instead (make_dataset(random_crop=True)): the model must not zoom again.
    input_zooms, _, _ = model.build_model(3, image_size=S, random_crop=True)
    assert _augmentation_types(input_zooms) == {"RandomFlip", "RandomRotation",
                                                "RandomContrast"}


def test_weights_from_a_file_local_and_remote_then_two_stage_unfreeze(tmp_path):
    """Saves a B3 notop backbone's weights, rebuilds from that path, fine-tunes the top."""
    _, _, source = model.build_model(2, image_size=S)
    path = str(tmp_path / "efficientnetb3_notop.h5")
    source.save_weights(path)
    expected = source.get_weights()

    training, inference, backbone = model.build_model(2, image_size=S, weights=path)
    loaded = backbone.get_weights()
    assert len(loaded) == len(expected)
    for a, b in zip(loaded, expected):
        np.testing.assert_array_equal(a, b)

    # Stage 1: pretrained backbone frozen, only the Dense head trains.
    assert not backbone.trainable
    assert sorted(w.name for w in training.trainable_weights) == [
        "probabilities/bias:0", "probabilities/kernel:0"]

    # Stage 2: top 2 blocks (block6, block7) + top_conv open, every BatchNorm stays frozen.
    count = model.unfreeze_top_blocks(backbone, 2)
    trainable = {l.name for l in backbone.layers if l.trainable and l.trainable_weights}
    assert count == len([l for l in backbone.layers if l.trainable])
    assert "top_conv" in trainable and "block7a_expand_conv" in trainable
    assert "block6a_dwconv" in trainable
    assert not any(n.startswith(("block5", "block1", "stem")) for n in trainable)
    for layer in backbone.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
    weight_names = {w.name for w in training.trainable_weights}
    assert not any("_bn/" in n for n in weight_names)
    assert "probabilities/kernel:0" in weight_names
    assert model.unfreeze_top_blocks(backbone, 0) == 0
    assert len(training.trainable_weights) == 2  # head only again

    # A remote filesystem path (ram:// here, gs:// in production) is copied locally first.
    remote = "ram://imgpipe_weights/efficientnetb3_notop.h5"
    tf.io.gfile.makedirs(os.path.dirname(remote))
    tf.io.gfile.copy(path, remote, overwrite=True)
    with model.local_weights(remote) as local:
        assert "://" not in local and os.path.exists(local)
    assert not os.path.exists(os.path.dirname(local))  # the 44 MB copy does not pile up
    _, _, from_remote = model.build_model(2, image_size=S, weights=remote)
    for a, b in zip(from_remote.get_weights(), expected):
        np.testing.assert_array_equal(a, b)


def test_a_file_that_is_not_b3_weights_is_a_clear_runtime_error(tmp_path):
    bogus = tmp_path / "not_weights.h5"
    bogus.write_bytes(b"not an HDF5 file")
    with pytest.raises(RuntimeError, match="could not load weights"):
        model.build_model(2, image_size=S, weights=str(bogus))


def test_mixed_precision_keeps_the_softmax_in_float32():
    policy = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        _, inference, backbone = model.build_model(2, image_size=S, augment=False)
    finally:
        tf_keras.mixed_precision.set_global_policy(policy)
    assert backbone.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert inference.get_layer("probabilities").compute_dtype == "float32"
    assert inference.output.dtype == tf.float32


@pytest.fixture(name="silent_server")
def _silent_server():
    """http://127.0.0.1:port/ that accepts connections and never answers: a hanging network."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # the kernel completes handshakes; nobody ever reads or writes
    yield f"http://127.0.0.1:{server.getsockname()[1]}/{model.IMAGENET_FILE}"
    server.close()


@pytest.mark.parametrize("where", ["refused", "silent"])
def test_imagenet_unreachable_fails_fast_with_a_clear_message(monkeypatch, tmp_path,
                                                              silent_server, where):
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached efficientnetb3_notop.h5
    url = (f"http://127.0.0.1:{portpicker.pick_unused_port()}/x.h5" if where == "refused"
           else silent_server)
    monkeypatch.setattr(model, "IMAGENET_URL", url)
    monkeypatch.setattr(model, "NETWORK_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"weights='imagenet'.*unreachable.*path"):
        model.build_model(2, image_size=S, weights="imagenet")
    assert time.monotonic() - start < 5


def _online() -> bool:
    return model.url_reachable(model.IMAGENET_URL, timeout=3.0)


@pytest.mark.skipif(_online(), reason="the real offline failure needs a machine without network")
def test_imagenet_offline_here_fails_fast(monkeypatch, tmp_path):
    """The real thing: tf_keras's own download URL, on this offline machine."""
    monkeypatch.setenv("HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="imagenet"):
        model.build_model(2, image_size=S, weights="imagenet")
    assert time.monotonic() - start < 30


def test_assert_unnormalized_guards_against_double_normalization():
    pixels = np.random.default_rng(1).integers(0, 256, (2, S, S, 3))
    model.assert_unnormalized(pixels.astype(np.uint8))
    model.assert_unnormalized(tf.constant(pixels, tf.float32))
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        model.assert_unnormalized(tf.constant(pixels / 255.0, tf.float32))
    with pytest.raises(RuntimeError, match="normalizes twice"):
        model.assert_unnormalized(tf_keras.layers.Rescaling(1 / 255)(tf.constant(
            pixels, tf.float32)))


def test_autograph_leaves_tf_keras_internals_alone():
    """The backported DoNotConvert("tf_keras") rule: ~5x faster first traces of B3 here."""
    from tensorflow.python.autograph.impl import conversion  # pylint: disable=g-import-not-at-top

    model.skip_autograph_for_tf_keras()
    model.skip_autograph_for_tf_keras()  # idempotent
    from tensorflow.python.autograph.core import config as ag_config  # pylint: disable=g-import-not-at-top
    assert [getattr(r, "_prefix", None) for r in ag_config.CONVERSION_RULES].count(
        "tf_keras") == 1
    assert conversion.is_allowlisted(tf_keras.layers.Dense.call)
    assert conversion.is_allowlisted(tf_keras.Model.train_step)
