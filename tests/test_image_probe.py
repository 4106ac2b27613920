"""Tests for components.image_example_gen.image_probe with real TF + Pillow, tiny in-memory images."""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import encode, png_declaring
from trainer_module import features
from components.image_example_gen.image_probe import (
    FORMATS_TF_DECODES, ProbeResult, probe_image, sniff_format)

H, W = 24, 32


def _array(h=H, w=W, seed=0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 4 % 256], -1)
    noise = np.random.default_rng(seed).integers(0, 40, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _rgb(h=H, w=W, seed=0) -> Image.Image:
    return Image.fromarray(_array(h, w, seed))


def _rgba() -> Image.Image:
    im = _rgb().convert("RGBA")
    im.putalpha(Image.fromarray(_array()[..., 0]))  # real alpha: some encoders drop an opaque one
    return im


def _p_with_transparency() -> Image.Image:
    p = _rgb().convert("P")
    p.info["transparency"] = 0
    return p


def _animated_gif() -> bytes:
    frames = [_rgb(seed=s).convert("P") for s in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def _gif_frame_inside_screen() -> bytes:
    """A valid GIF whose first frame covers only part of its logical screen."""
    data = bytearray(encode(_rgb().convert("P").crop((0, 0, W - 8, H - 8)), "GIF"))
    struct.pack_into("<HH", data, 6, W, H)  # the logical screen: W x H
    struct.pack_into("<HH", data, data.index(b"\x2c") + 1, 4, 4)  # the frame at (4, 4)
    return bytes(data)


def _ycck_jpeg() -> bytes:
    data = bytearray(encode(_rgb().convert("CMYK"), "JPEG"))
    i = data.find(b"Adobe")
    data[i + 11] = 2  # Adobe APP14 transform flag: 2 = YCCK
    return bytes(data)


def _png_i16() -> bytes:
    arr = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 80)
    return encode(Image.fromarray(arr), "PNG")


# name -> (bytes factory, stored format, source format, channels, transformed)
VALID = {
    "jpeg_rgb": (lambda: encode(_rgb(), "JPEG"), "jpeg", "jpeg", 3, None),
    "jpeg_gray": (lambda: encode(_rgb().convert("L"), "JPEG"), "jpeg", "jpeg", 1, None),
    "jpeg_cmyk": (lambda: encode(_rgb().convert("CMYK"), "JPEG"), "jpeg", "jpeg", 3, None),
    "jpeg_ycck": (_ycck_jpeg, "jpeg", "jpeg", 3, None),
    "jpeg_progressive": (lambda: encode(_rgb(), "JPEG", progressive=True), "jpeg", "jpeg", 3, None),
    "png_rgb": (lambda: encode(_rgb(), "PNG"), "png", "png", 3, None),
    "png_rgba": (lambda: encode(_rgba(), "PNG"), "png", "png", 4, None),
    "png_l": (lambda: encode(_rgb().convert("L"), "PNG"), "png", "png", 1, None),
    "png_la": (lambda: encode(_rgb().convert("LA"), "PNG"), "png", "png", 2, None),
    "png_1bit": (lambda: encode(_rgb().convert("1"), "PNG"), "png", "png", 1, None),
    "png_palette": (lambda: encode(_rgb().convert("P"), "PNG"), "png", "png", 3, None),
    "png_palette_trns": (lambda: encode(_p_with_transparency(), "PNG", transparency=0), "png", "png", 4, None),
    "png_l_trns": (lambda: encode(_rgb().convert("L"), "PNG", transparency=7), "png", "png", 1, None),
    "png_i16": (_png_i16, "png", "png", 1, None),
    "gif_static": (lambda: encode(_rgb().convert("P"), "GIF"), "gif", "gif", 3, None),
    "gif_trns": (lambda: encode(_rgb().convert("P"), "GIF", transparency=0), "gif", "gif", 3, None),
    "gif_animated": (_animated_gif, "gif", "gif", 3, None),
    # TF would return only the frame's rectangle, not the header's size.
    "gif_frame_inside_screen": (_gif_frame_inside_screen, "png", "gif", 3, "reencoded_png"),
    "bmp_rgb": (lambda: encode(_rgb(), "BMP"), "bmp", "bmp", 3, None),
    "bmp_rgba": (lambda: encode(_rgb().convert("RGBA"), "BMP"), "bmp", "bmp", 4, None),
    "bmp_gray": (lambda: encode(_rgb().convert("L"), "BMP"), "bmp", "bmp", 1, None),
    # TF returns palette indices for palette BMPs, so they are re-encoded.
    "bmp_palette": (lambda: encode(_rgb().convert("P"), "BMP"), "png", "bmp", 3, "reencoded_png"),
    "bmp_1bit": (lambda: encode(_rgb().convert("1"), "BMP"), "png", "bmp", 1, "reencoded_png"),
    "webp": (lambda: encode(_rgb(), "WEBP", lossless=True), "png", "webp", 3, "reencoded_png"),
    "webp_rgba": (lambda: encode(_rgba(), "WEBP"), "png", "webp", 4, "reencoded_png"),
    "tiff": (lambda: encode(_rgb(), "TIFF"), "png", "tiff", 3, "reencoded_png"),
    "tiff_cmyk": (lambda: encode(_rgb().convert("CMYK"), "TIFF"), "png", "tiff", 3, "reencoded_png"),
    "tiff_i16": (lambda: encode(Image.open(io.BytesIO(_png_i16())), "TIFF"),
                 "png", "tiff", 1, "reencoded_png"),
}


def _assert_tf_consistent(r: ProbeResult) -> np.ndarray:
    assert r.ok, r
    assert r.reason is None and r.format in FORMATS_TF_DECODES
    assert sniff_format(r.image_bytes) == r.format
    decoded = tf.io.decode_image(r.image_bytes, expand_animations=False)
    assert decoded.dtype == tf.uint8
    assert tuple(decoded.shape) == (r.height, r.width, r.channels)
    return decoded.numpy()


@pytest.fixture(scope="module")
def valid_bytes():
    return {name: spec[0]() for name, spec in VALID.items()}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_images(name, valid_bytes):
    data = valid_bytes[name]
    _, fmt, source, channels, transformed = VALID[name]
    results = [probe_image(data, verify=v) for v in (True, False)]
    for r in results:
        _assert_tf_consistent(r)
        assert (r.format, r.source_format, r.channels, r.transformed) == (fmt, source, channels, transformed)
        assert (r.height, r.width) == (H, W)
        if transformed is None:
            assert r.image_bytes == data
    assert [(r.height, r.width, r.channels) for r in results][0] == \
        [(r.height, r.width, r.channels) for r in results][1]


def test_cmyk_jpeg_colours_are_right_in_tf(valid_bytes):
    decoded = _assert_tf_consistent(probe_image(valid_bytes["jpeg_cmyk"]))
    assert np.abs(decoded.astype(int) - _array()).mean() < 8


def test_lossless_reencode_keeps_pixels(valid_bytes):
    decoded = _assert_tf_consistent(probe_image(valid_bytes["webp"]))
    np.testing.assert_array_equal(decoded, _array())
    decoded16 = _assert_tf_consistent(probe_image(valid_bytes["tiff_i16"]))
    original = np.asarray(Image.open(io.BytesIO(_png_i16()))).astype(int)
    assert np.abs(decoded16[..., 0].astype(int) - original // 257).max() <= 1


def test_sniff_uses_content_not_name():
    png = encode(_rgb(), "PNG")  # e.g. saved as photo.jpg
    assert sniff_format(png) == "png"
    r = probe_image(png)
    assert (r.format, r.source_format, r.transformed) == ("png", "png", None)
    assert sniff_format(encode(_rgb(), "JPEG")) == "jpeg"
    assert sniff_format(b"BMW is a car brand, not a bitmap.") is None
    assert sniff_format(b"") is None
    assert sniff_format(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "heic"


@pytest.mark.parametrize("verify", [True, False])
def test_empty_and_not_an_image(verify):
    assert probe_image(b"", verify=verify).reason == "empty_file"
    r = probe_image(b"this is a text file named cat.jpg\n" * 10, verify=verify)
    assert (r.ok, r.reason, r.image_bytes) == (False, "not_an_image", None)
    assert r.detail


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("name,cut", [("jpeg_rgb", 0.5), ("jpeg_rgb", 2), ("jpeg_progressive", 0.5),
                                      ("png_rgb", 0.5), ("png_rgb", 12), ("bmp_rgb", 0.5),
                                      ("webp", 0.5), ("gif_static", 0.5)])
def test_truncated(valid_bytes, name, cut, verify):
    data = valid_bytes[name]
    keep = int(len(data) * cut) if isinstance(cut, float) else len(data) - cut
    r = probe_image(data[:keep], verify=verify)
    assert (r.ok, r.reason) == (False, "truncated_or_corrupt"), r


@pytest.mark.parametrize("verify", [True, False])
def test_jpeg_end_marker_check_is_structural(verify):
    # An EOI inside a comment (like an EXIF thumbnail's) must not hide a truncated scan...
    data = encode(_rgb(), "JPEG", comment=b"\xff\xd9 not the end")
    assert probe_image(data, verify=verify).ok
    assert probe_image(data[: len(data) // 2], verify=verify).reason == "truncated_or_corrupt"
    # ...and bytes appended after a complete image (TF ignores them) are fine.
    padded = data + b"\x00" * 64 + b"trailer"
    r = probe_image(padded, verify=verify)
    assert r.ok and r.image_bytes == padded


def _jpeg_with_declared_size(width: int, height: int) -> bytes:
    data = bytearray(encode(_rgb(), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("data", [png_declaring(20000, 20000), _jpeg_with_declared_size(30000, 30000),
                                  png_declaring(10000, 9000)])
def test_decompression_bomb_rejected_from_header_without_pil_warning(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for verify in (True, False):
            r = probe_image(data, verify=verify)
            assert (r.ok, r.reason) == (False, "too_many_pixels"), r


def test_max_pixels_argument():
    data = encode(_rgb(), "PNG")
    assert probe_image(data, max_pixels=H * W).ok
    assert probe_image(data, max_pixels=H * W - 1).reason == "too_many_pixels"
    assert features.MAX_PIXELS == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("name", ["webp", "tiff", "bmp_palette"])
def test_unsupported_quarantine(name, valid_bytes):
    r = probe_image(valid_bytes[name], unsupported="quarantine")
    assert (r.ok, r.reason) == (False, f"unsupported_format:{VALID[name][2]}")
    assert r.source_format == VALID[name][2]


def test_format_without_decoder_is_quarantined():
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    r = probe_image(heic)
    assert not r.ok and r.reason in ("unsupported_format:heic", "truncated_or_corrupt")


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("name,fmt,channels,transformed", [
    ("jpeg_rgb", "jpeg", 3, "downscaled_jpeg_q90"),
    ("jpeg_gray", "jpeg", 1, "downscaled_jpeg_q90"),
    ("jpeg_cmyk", "jpeg", 3, "downscaled_jpeg_q90"),
    ("png_i16", "jpeg", 1, "downscaled_jpeg_q90"),
    ("png_palette", "jpeg", 3, "downscaled_jpeg_q90"),
    ("gif_animated", "jpeg", 3, "downscaled_jpeg_q90"),
    ("webp", "jpeg", 3, "downscaled_jpeg_q90"),
    ("png_rgba", "png", 4, "downscaled_png"),
    ("png_la", "png", 2, "downscaled_png"),
])
def test_max_side_downscale(valid_bytes, name, fmt, channels, transformed, verify):
    r = probe_image(valid_bytes[name], max_side=16, verify=verify)
    _assert_tf_consistent(r)
    assert (r.format, r.channels, r.transformed) == (fmt, channels, transformed)
    assert r.source_format == VALID[name][2]
    assert (r.height, r.width) == (12, 16)  # 24x32 keeps its 3:4 aspect


def test_max_side_large_jpeg_uses_quality_and_keeps_aspect():
    data = encode(_rgb(360, 450), "JPEG", quality=95)
    r = probe_image(data, max_side=100, jpeg_quality=75)
    _assert_tf_consistent(r)
    assert (r.width, r.height, r.transformed) == (100, 80, "downscaled_jpeg_q75")


@pytest.mark.parametrize("max_side", [W, W + 1, 4096])
def test_max_side_noop_when_small(valid_bytes, max_side):
    data = valid_bytes["jpeg_rgb"]
    r = probe_image(data, max_side=max_side)
    assert r.ok and r.transformed is None and r.image_bytes == data


def test_non_bytes_data_raises():
    with pytest.raises(ValueError, match="data"):
        probe_image("not bytes")


def test_result_is_frozen():
    r = probe_image(b"")
    with pytest.raises(Exception):
        r.ok = True  # type: ignore[misc]
