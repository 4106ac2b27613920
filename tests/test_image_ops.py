"""Tests for trainer_module.image_ops: every op runs eagerly AND inside tf.data.map.

The two modes trace differently (tf.cond/switch_case become graph control flow, shapes
lose their static values), so an op can pass one and break in the other.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from helpers import encode, gif_and_bmp_variants, gif_with_screen, png_declaring
from trainer_module import image_ops, model

S = 32  # target side in these tests


def _gradient(h: int, w: int) -> np.ndarray:
    """Smooth RGB gradient: resizes and DCT scaling barely change it, so results compare."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1),
                     np.full_like(xx, 96)], -1).astype(np.uint8)


def _solid(h: int, w: int, rgb=(200, 40, 90)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def _animated_gif() -> bytes:
    frames = [Image.fromarray(_solid(20, 30, c)) for c in ((250, 0, 0), (0, 0, 250))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50,
                  loop=0)


def _both_modes(fn, data: bytes) -> np.ndarray:
    """Runs fn(bytes tensor) eagerly and inside tf.data.map; asserts equal static contract."""
    eager = fn(tf.constant(data))
    ds = tf.data.Dataset.from_tensors(tf.constant(data)).map(fn)
    assert ds.element_spec.shape.as_list() == [S, S, 3]
    assert ds.element_spec.dtype == tf.uint8
    mapped = next(iter(ds))
    assert eager.dtype == tf.uint8 and eager.shape == (S, S, 3)
    np.testing.assert_array_equal(eager.numpy(), mapped.numpy())
    return eager.numpy()


def _decode_and_resize(b):
    return image_ops.decode_and_resize(b, S)


# (name, bytes, expected mean colour or None)
FORMATS = [
    ("jpeg_rgb", encode(_solid(48, 64), "JPEG", quality=95), (200, 40, 90)),
    ("jpeg_gray", encode(np.full((40, 40), 77, np.uint8), "JPEG", quality=95), (77, 77, 77)),
    ("png_rgb", encode(_solid(20, 50), "PNG"), (200, 40, 90)),
    ("png_rgba", encode(np.dstack([_solid(30, 30), np.full((30, 30), 10, np.uint8)]), "PNG"),
     (200, 40, 90)),  # alpha is dropped, not composited onto a background
    ("png_gray", encode(np.full((25, 35), 123, np.uint8), "PNG"), (123, 123, 123)),
    ("png_gray16", encode(np.full((25, 35), 65535, np.uint16), "PNG"), (255, 255, 255)),
    ("gif_animated", _animated_gif(), (250, 0, 0)),  # first frame only
    ("bmp_rgb", encode(_solid(17, 23), "BMP"), (200, 40, 90)),
    ("bmp_rgba", encode(np.dstack([_solid(16, 16), np.full((16, 16), 7, np.uint8)]), "BMP"),
     (200, 40, 90)),
    ("jpeg_large", encode(_solid(8 * S + 5, 9 * S), "JPEG", quality=95), (200, 40, 90)),
]


@pytest.mark.parametrize("name,data,colour", FORMATS, ids=[f[0] for f in FORMATS])
def test_decode_and_resize_every_format(name, data, colour):
    out = _both_modes(_decode_and_resize, data)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), colour, atol=3)


@pytest.mark.parametrize("name,data,colour", FORMATS, ids=[f[0] for f in FORMATS])
def test_zoom_in_and_out_every_format(name, data, colour):
    for zoom in (0.9, 1.1):  # both branches: the decoded window, the mirrored border
        out = _both_modes(lambda b, z=zoom: image_ops.zoom_and_resize(b, S, z), data)
        np.testing.assert_allclose(out.reshape(-1, 3).mean(0), colour, atol=3)
    out = _both_modes(lambda b: image_ops.decode_random_zoom_and_resize(b, S, seed=1), data)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), colour, atol=3)


def test_ratio_is_largest_that_keeps_short_side_at_least_target():
    sides = tf.range(1, 12 * S)
    ratios = np.array(image_ops.JPEG_RATIOS)[
        tf.map_fn(lambda s: image_ops.jpeg_ratio_index(s, S), sides).numpy()]
    for side, ratio in zip(sides.numpy(), ratios):
        if side < 2 * S:
            assert ratio == 1, side  # no DCT scaling below 2x the target
        else:
            assert math.ceil(side / ratio) >= S, (side, ratio)  # libjpeg's scaled size
            assert ratio == 8 or side // (2 * ratio) < S, (side, ratio)  # and the largest


@pytest.mark.parametrize("h,w,ratio", [(2 * S - 1, 5 * S, 1), (2 * S, 3 * S, 2),
                                       (4 * S + 3, 4 * S + 7, 4), (9 * S, 8 * S + 1, 8),
                                       (20 * S, 8 * S, 8)])
def test_large_jpeg_decodes_dct_scaled_never_below_target(h, w, ratio):
    data = tf.constant(encode(_gradient(h, w), "JPEG", quality=95))
    eager = image_ops.decode_image(data, S)
    mapped = next(iter(tf.data.Dataset.from_tensors(data).map(
        lambda b: image_ops.decode_image(b, S))))
    expected = (math.ceil(h / ratio), math.ceil(w / ratio), 3)
    assert eager.shape == expected and tuple(mapped.shape) == expected
    assert min(expected[:2]) >= S or ratio == 1


def test_dct_scaled_result_matches_a_full_decode():
    data = encode(_gradient(8 * S, 10 * S), "JPEG", quality=95)
    fast = _both_modes(_decode_and_resize, data).astype(np.float32)
    full = tf.io.decode_jpeg(data, channels=3)
    reference = tf.image.resize(full, [S, S], method="area").numpy()
    assert np.abs(fast - reference).mean() < 2.0


def test_without_image_size_decodes_full_size():
    data = tf.constant(encode(_gradient(5 * S, 6 * S), "JPEG"))
    assert image_ops.decode_image(data).shape == (5 * S, 6 * S, 3)


def test_crop_window_is_decoded_exactly_at_every_ratio():
    data = tf.constant(encode(_gradient(12 * S, 16 * S), "JPEG", quality=95))
    for window, ratio in (([8, 16, S + 3, S + 9], 1), ([40, 8, 5 * S, 4 * S + 1], 4)):
        window = tf.constant(window, tf.int32)
        crop = image_ops.decode_jpeg_scaled(data, S, crop_window=window)
        scaled = tf.io.decode_jpeg(data, channels=3, ratio=ratio)
        y, x, h, w = window.numpy()  # both ends rounded to the nearest scaled pixel
        y0, x0, y1, x1 = (round(v / ratio) for v in (y, x, y + h, x + w))
        np.testing.assert_array_equal(crop.numpy(), scaled[y0:y1, x0:x1].numpy())
        assert min(crop.shape[:2]) >= S


def test_zoom_windows_are_centred_inside_and_about_zoom_times_the_side():
    for h, w in ((90, 160), (363, 450), (7, 5), (1, 1)):
        for zoom in (0.5, 0.9, 0.95, 0.999):
            y, x, wh, ww = image_ops.zoom_window(tf.constant([h, w, 3]), zoom).numpy()
            assert (h - wh, w - ww) == (2 * y, 2 * x)  # centred: equal margins
            assert 1 <= wh <= h and 1 <= ww <= w
            assert abs(wh - zoom * h) <= 1 or wh == 1, (h, w, zoom, wh)
            assert abs(ww - zoom * w) <= 1 or ww == 1, (h, w, zoom, ww)


def _waves(h: int, w: int) -> np.ndarray:
    """Sine waves over two gradients: a geometric error of a pixel changes many values."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r = 128 + 100 * np.sin(2 * np.pi * 3 * xx / w) * np.cos(2 * np.pi * 2 * yy / h)
    return np.clip(np.stack([r, 255 * xx / w, 255 * yy / h], -1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fmt,h,w", [("PNG", 128, 192), ("JPEG", 96, 128), ("JPEG", 320, 448)])
def test_zoom_matches_the_models_random_zoom_on_the_resized_image(fmt, h, w):
    """zoom_and_resize(z) == RandomZoom fixed at z on decode_and_resize's output, closer than
    a zoom 0.03 off (PNG; JPEG without and with DCT scaling; zoom in and out)."""
    side = 64  # enough pixels to resolve the geometry
    data = tf.constant(encode(_waves(h, w), fmt, **({"quality": 95} if fmt == "JPEG" else {})))
    resized = tf.cast(image_ops.decode_and_resize(data, side)[None], tf.float32)
    for zoom in (0.9, 0.95, 1.05, 1.1):
        ours = image_ops.zoom_and_resize(data, side, zoom).numpy().astype(np.float32)
        error = {z: np.abs(ours - tf_keras.layers.RandomZoom((z - 1, z - 1))(
            resized, training=True)[0].numpy()).mean() for z in (zoom - 0.03, zoom, zoom + 0.03)}
        assert error[zoom] < 2.0, (zoom, error)
        assert error[zoom] < 0.5 * min(error[zoom - 0.03], error[zoom + 0.03]), (zoom, error)


def _square_zooms(images: np.ndarray, square: int) -> np.ndarray:
    """Zoom of each image of a centred white square on black: square side / side shown."""
    middle = images[:, images.shape[1] // 2, :, 0].astype(np.float64)
    return square / (middle.sum(axis=1) / 255)


def test_random_zoom_has_the_distribution_of_the_models_random_zoom():
    side, square, draws = 128, 64, 200
    image = np.zeros((side, side, 3), np.uint8)
    image[32:96, 32:96] = 255
    data = tf.constant(encode(image, "PNG"))
    ours = _square_zooms(np.stack([image_ops.decode_random_zoom_and_resize(
        data, side, seed=7).numpy() for _ in range(draws)]), square)
    layer = getattr(tf_keras.layers, "RandomZoom")(**dict(model.AUGMENTATION)["RandomZoom"])
    theirs = _square_zooms(layer(tf.constant(np.stack([image] * draws), tf.float32),
                                 training=True).numpy(), square)
    low, high = 1 - image_ops.ZOOM_FACTOR, 1 + image_ops.ZOOM_FACTOR
    for zooms in (ours, theirs):  # U[low, high]: quantiles within 5 standard errors
        assert low - 0.01 < zooms.min() and zooms.max() < high + 0.01
        expected = low + (high - low) * np.array([0.1, 0.5, 0.9])
        np.testing.assert_allclose(np.quantile(zooms, [0.1, 0.5, 0.9]), expected, atol=0.025)
    with pytest.raises(ValueError, match="factor=1.0"):
        image_ops.decode_random_zoom_and_resize(data, side, factor=1.0)


def test_batch_accepts_b_and_b1_and_matches_single():
    images = [encode(_gradient(40, 60), "JPEG"), encode(_solid(20, 20), "PNG")]
    single = np.stack([_decode_and_resize(tf.constant(b)).numpy() for b in images])
    flat = image_ops.decode_and_resize_batch(tf.constant(images), S)
    column = tf.function(lambda t: image_ops.decode_and_resize_batch(t, S))(
        tf.constant([[b] for b in images]))
    np.testing.assert_array_equal(flat.numpy(), single)
    np.testing.assert_array_equal(column.numpy(), single)


def test_white_image_stays_255():
    out = _both_modes(_decode_and_resize, encode(_solid(50, 50, (255, 255, 255)), "PNG"))
    assert out.min() == 255


def test_corrupt_bytes_raise_in_both_modes():
    bad = tf.constant(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(tf.errors.InvalidArgumentError):
        _decode_and_resize(bad)
    with pytest.raises(tf.errors.InvalidArgumentError):
        next(iter(tf.data.Dataset.from_tensors(bad).map(_decode_and_resize)))


def test_is_decodable_format_checks_magic_bytes_elementwise():
    image = _gradient(6, 9)
    good = [encode(image, fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP")]
    bad = [b"", b"\xff\xd8", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00", b"just text",
           encode(image, "WEBP")]
    got = image_ops.is_decodable_format(tf.constant(good + bad)).numpy().tolist()
    assert got == [True] * len(good) + [False] * len(bad)


def _bmp_top_down(h: int, w: int) -> bytes:
    """A BMP whose info header stores a negative height (rows top-down)."""
    import struct  # pylint: disable=g-import-not-at-top
    data = bytearray(encode(_solid(h, w), "BMP"))
    data[22:26] = struct.pack("<i", -h)
    return bytes(data)


def test_a_gif_declares_every_frame_whatever_its_screen_says():
    """TF's GIF decoder reads every frame, onto a canvas of the largest frame's size; a
    screen of 1 x 1 must not let a 600 x 400 frame (or many frames) past the limit."""
    frame = Image.fromarray(_gradient(400, 600)).convert("P")
    single = encode(frame, "GIF")
    assert int(image_ops.declared_pixels(tf.constant(gif_with_screen(single, 1, 1)))) == \
        600 * 400
    frames = [frame.point(lambda v, k=k: (v + 37 * k) % 256) for k in range(4)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    declared = int(image_ops.declared_pixels(tf.constant(gif_with_screen(animated, 1, 1))))
    assert declared == 4 * 600 * 400
    for cut in (7, 13, 40, len(animated) // 2):  # truncated: a number, never an error
        assert int(image_ops.declared_pixels(tf.constant(animated[:cut]))) >= 0


def test_decodes_as_stored_agrees_with_what_ingest_stores_unchanged():
    """Serving refuses exactly the GIF/BMP layouts that ingest does not store as they are
    (it re-encodes them, having measured that TF decodes them to other pixels)."""
    from components.image_example_gen import image_probe  # pylint: disable=g-import-not-at-top
    for name, data in gif_and_bmp_variants().items():
        probe = image_probe.probe_image(data)
        stored_unchanged = probe.ok and probe.image_bytes == data
        assert stored_unchanged == (not name.endswith("*")), name
        as_stored = tf.function(image_ops.decodes_as_stored)(tf.constant(data))
        assert bool(as_stored) == stored_unchanged, name
        if stored_unchanged and name != "jpeg":  # lossless: TF decodes what Pillow reads
            pixels = image_ops.decode_image(tf.constant(data)).numpy()
            expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            np.testing.assert_array_equal(pixels, expected, err_msg=name)


def test_declared_pixels_reads_each_header_without_decoding():
    cases = [(encode(_solid(48, 64), "JPEG"), 48 * 64),
             (encode(np.full((40, 30), 7, np.uint8), "JPEG"), 40 * 30),
             (encode(_solid(20, 50), "PNG"), 20 * 50),
             (_animated_gif(), 2 * 20 * 30),  # TF's GIF decoder reads every frame
             (encode(_solid(17, 23), "BMP"), 17 * 23),
             (_bmp_top_down(9, 11), 9 * 11),
             (png_declaring(20000, 20000), 20000 * 20000),  # the header is all it reads
             (png_declaring(70000, 70000), 70000 * 70000),  # beyond int32
             (png_declaring(2 ** 32 - 1, 2 ** 32 - 1), 2 ** 62),  # sides clamped: no overflow
             (b"just text", -1), (b"", -1), (encode(_solid(5, 5), "WEBP"), -1)]
    for data, expected in cases:
        assert int(image_ops.declared_pixels(tf.constant(data))) == expected
        mapped = tf.data.Dataset.from_tensors(tf.constant(data)).map(image_ops.declared_pixels)
        assert int(next(iter(mapped))) == expected
