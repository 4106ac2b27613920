"""Decide, per file, whether raw bytes are ingested (possibly re-encoded) or quarantined.

`probe_image(data)` never raises on bad data and does no I/O; it returns a `ProbeResult`.
When `ok`, `image_bytes` is what to store and `tf.io.decode_image(image_bytes,
expand_animations=False)` yields uint8 of shape (height, width, channels). The original
bytes are returned unchanged whenever TensorFlow decodes them correctly and no downscale
applies. The format always comes from magic bytes, never from the file name.

Measured with TF 2.16.2 (and pinned by tests/test_image_probe.py):
* CMYK and YCCK JPEGs decode in TF to 3 channels with correct colours (TF's jpeg_mem
  converts CMYK->RGB itself, honouring Adobe inversion), so they are stored unchanged with
  channels=3; "cmyk_to_rgb_jpeg" is never needed.
* Any truncation of a JPEG (even just the EOI marker) or a PNG (even just IEND) makes TF's
  decode fail, so verify=True catches it. verify=False instead checks the end markers.
* Channels TF returns: JPEG L=1, RGB/CMYK/YCCK=3; PNG gray (any depth, even with tRNS)=1,
  gray+alpha=2, RGB=3, RGBA=4, palette=3 or 4 with tRNS; 16-bit PNGs decode to uint8; GIF=3
  always (transparency dropped, first frame only; a first frame smaller than the GIF's
  logical screen decodes to the frame's size, so such GIFs are re-encoded to PNG at the
  screen size); BMP 24-bit=3, 32-bit=4, 8-bit=1.
* TF's BMP decoder ignores palettes and compression and requires the exact file size, so
  only uncompressed 24/32-bit and grayscale-ramp 8-bit BMPs are stored as-is; other BMPs
  (palette, 1/4/16-bit, RLE, trailing bytes) count as unsupported.
* TF 2.16 decode_image rejects WebP, TIFF and everything else Pillow reads. With
  unsupported="reencode" they are decoded by Pillow (first frame) and stored as lossless PNG
  ("reencoded_png"); with "quarantine" the reason is "unsupported_format:<fmt>".

max_side: larger images are downscaled (Pillow draft + LANCZOS, aspect kept) and stored as
JPEG at jpeg_quality ("downscaled_jpeg_q90"), except images with alpha, which become PNG
("downscaled_png") so transparency survives. EXIF orientation is never applied: TF ignores
it too, so training sees the same pixels either way.

Quarantine reasons: empty_file, not_an_image, truncated_or_corrupt, too_many_pixels,
unsupported_format:<fmt>, header_mismatch (TF's decoded shape disagrees with the header).
"""
from __future__ import annotations

import dataclasses
import io
import struct

import numpy as np
from PIL import Image

from components.image_example_gen.options import IngestOptions
from trainer_module import features

FORMATS_TF_DECODES = ("jpeg", "png", "gif", "bmp")
# probe_image's defaults are IngestOptions' (declared and validated there, once).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(IngestOptions)}
_PIL_NAMES = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP",
              "tiff": "TIFF", "avif": "AVIF", "heic": "HEIF", "jpeg2000": "JPEG2000",
              "ico": "ICO", "psd": "PSD", "ppm": "PPM", "qoi": "QOI", "dds": "DDS"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> TF channels (3: +tRNS)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str | None = None
    detail: str | None = None
    image_bytes: bytes | None = None
    format: str | None = None
    source_format: str | None = None
    height: int | None = None
    width: int | None = None
    channels: int | None = None
    transformed: str | None = None


def sniff_format(data: bytes) -> str | None:
    """Format from magic bytes only (never the file extension), or None if unrecognised."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    # "BM" alone would match text files; also require a known DIB header size.
    if head[:2] == b"BM" and len(head) >= 18 and \
            struct.unpack_from("<I", head, 14)[0] in (12, 16, 40, 52, 56, 64, 108, 124):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "heic"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head[:4] == b"\xff\x4f\xff\x51":
        return "jpeg2000"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jxl"
    if head[:4] == b"8BPS":
        return "psd"
    if head[:4] == b"qoif":
        return "qoi"
    if head[:4] == b"DDS ":
        return "dds"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and head[4:6] not in (b"", b"\x00\x00"):
        return "ico"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return "ppm"
    return None


def _why(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[-1]
    return f"{type(err).__name__}: {text[:200]}"


def _fail(reason: str, detail: str, source_format: str | None = None) -> ProbeResult:
    return ProbeResult(ok=False, reason=reason, detail=detail, source_format=source_format)


def _pil_open(data: bytes, fmt: str):
    """Header-only open via the format's plugin, or None if Pillow cannot read `fmt`.

    Image.open() is bypassed on purpose: its DecompressionBombWarning/Error would fire on
    PIL's global limit; we apply `max_pixels` ourselves, before any decode.
    """
    name = _PIL_NAMES.get(fmt)
    if name is None:
        return None
    if name not in Image.OPEN:
        Image.init()  # registers every plugin (webp, tiff, ...); a no-op once done
    entry = Image.OPEN.get(name)
    return entry[0](io.BytesIO(data), "") if entry else None


def _tf_channels(fmt: str, im, data: bytes) -> int | None:
    """Channels TF's decode_image returns for these unchanged bytes; None if TF can't
    decode them correctly (see the module docstring for the measurements)."""
    if fmt == "jpeg":
        return {"L": 1, "RGB": 3, "CMYK": 3}.get(im.mode)
    if fmt == "png":
        channels = _PNG_CHANNELS.get(data[25]) if len(data) > 25 else None
        if channels == 3 and data[25] == 3 and "transparency" in im.info:
            return 4
        return channels
    if fmt == "gif":
        # TF decodes only the first frame's rectangle; when that is smaller than the
        # logical screen, the header's size is not what TF returns, so re-encode instead.
        return 3 if im.tile and tuple(im.tile[0][1]) == (0, 0, *im.size) else None
    if fmt == "bmp" and len(data) >= 34:
        offset, dib, width, height = struct.unpack_from("<IIii", data, 10)
        bpp, compression = struct.unpack_from("<HI", data, 28)
        if dib < 40 or compression != 0 or width <= 0 or height == 0:
            return None
        if bpp not in (24, 32) and not (bpp == 8 and im.mode == "L"):
            return None
        row = (bpp // 8 * width + 3) // 4 * 4
        return bpp // 8 if len(data) == offset + row * abs(height) else None
    return None


def _looks_complete(fmt: str, data: bytes) -> bool:
    """Cheap end-marker check standing in for a full decode when verify=False."""
    if fmt == "png":
        return data.rfind(b"IEND") > 33
    if fmt == "gif":
        return data.rstrip(b"\x00").endswith(b";")
    if fmt == "jpeg":
        # EOI must follow the first SOS. Walking the segments skips EXIF thumbnails (which
        # carry their own EOI); entropy-coded data can't hold FFD9 since FF is byte-stuffed.
        i, n = 2, len(data)
        while i + 4 <= n and data[i] == 0xFF:
            marker = data[i + 1]
            if marker == 0xDA:
                return data.rfind(b"\xff\xd9", i) != -1
            i += 1 if marker == 0xFF else 2 + int.from_bytes(data[i + 2:i + 4], "big")
        return False
    return True


def _to_8bit(im: Image.Image, keep_16bit: bool, keep_alpha: bool) -> Image.Image:
    """Convert to L/LA/RGB/RGBA (or I;16 for lossless PNG output)."""
    mode = im.mode
    if mode.startswith("I"):
        arr = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        if keep_16bit:
            return Image.fromarray(arr.astype(np.uint16))
        return Image.fromarray((arr >> 8).astype(np.uint8))  # as TF's 16->8 bit decode
    if mode in ("1", "L", "F"):
        return im.convert("L")
    has_alpha = mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info)
    if has_alpha and keep_alpha:
        return im.convert("LA" if mode in ("LA", "La") else "RGBA")
    return im.convert("RGB")


def _reencode(im, fmt, target, jpeg_quality):
    """Full Pillow decode (+ downscale to `target`) -> (bytes, format, transformed)."""
    if target is not None and fmt == "jpeg":
        # Let libjpeg skip work via DCT scaling, staying >= 2x the target for quality.
        im.draft(None, (target[0] * 2, target[1] * 2))
    im.load()  # raises on truncated data (ImageFile.LOAD_TRUNCATED_IMAGES is False)
    keep_alpha = fmt != "gif"  # TF drops GIF transparency; keep the same pixels
    im = _to_8bit(im, keep_16bit=target is None, keep_alpha=keep_alpha)
    out = io.BytesIO()
    if target is None:
        im.save(out, "PNG")
        return out.getvalue(), "png", "reencoded_png"
    im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if im.mode in ("LA", "RGBA"):
        im.save(out, "PNG")
        return out.getvalue(), "png", "downscaled_png"
    im.save(out, "JPEG", quality=jpeg_quality)
    return out.getvalue(), "jpeg", f"downscaled_jpeg_q{jpeg_quality}"


def _tf_decode_shape(data: bytes):
    """(shape, None) from the decoder training uses, or (None, error message)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  # only when verifying
    try:
        image = tf.io.decode_image(data, expand_animations=False)
    except (tf.errors.OpError, ValueError) as err:
        return None, _why(err)
    if image.dtype != tf.uint8:
        return None, f"decoded dtype {image.dtype.name}, expected uint8"
    return tuple(int(d) for d in image.shape), None


def probe_image(data: bytes, *, verify: bool = _DEFAULTS["verify_images"],
                max_pixels: int = _DEFAULTS["max_pixels"],
                max_side: int | None = _DEFAULTS["max_side"],
                jpeg_quality: int = _DEFAULTS["jpeg_quality"],
                unsupported: str = _DEFAULTS["unsupported_formats"]) -> ProbeResult:
    """Ingest-or-quarantine decision for one file's raw bytes (see the module docstring).

    The settings are IngestOptions' (validated there); `data` must be bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        return _fail("empty_file", "The file is empty (0 bytes).")
    fmt = sniff_format(data)
    if fmt is None:
        return _fail("not_an_image", "The content does not start with any known image signature.")
    try:
        try:
            im = _pil_open(data, fmt)
        except Image.DecompressionBombError as err:
            return _fail("too_many_pixels", _why(err), fmt)
        except Exception as err:  # any header parse failure is this file's problem
            return _fail("truncated_or_corrupt", f"Unreadable {fmt} header ({_why(err)}).", fmt)
        if im is None:
            return _fail(f"unsupported_format:{fmt}", f"No decoder available for {fmt}.", fmt)
        width, height = im.size
        if width <= 0 or height <= 0:
            return _fail("truncated_or_corrupt", f"Header declares a {width}x{height} image.", fmt)
        if width * height > max_pixels:
            return _fail("too_many_pixels", f"Header declares {width}x{height} = {width * height} "
                         f"pixels, over the limit of {max_pixels}.", fmt)
        channels = _tf_channels(fmt, im, data) if fmt in FORMATS_TF_DECODES else None
        if channels is None and unsupported == "quarantine":
            return _fail(f"unsupported_format:{fmt}",
                         f"TensorFlow cannot decode this {fmt} ({im.mode}) and re-encoding is off.", fmt)
        target = None
        if max_side is not None and max(width, height) > max_side:
            scale = max_side / max(width, height)
            target = (min(max_side, max(1, round(width * scale))),
                      min(max_side, max(1, round(height * scale))))

        if channels is None or target is not None:
            try:
                out, out_fmt, transformed = _reencode(im, fmt, target, jpeg_quality)
            except Image.DecompressionBombError as err:
                return _fail("too_many_pixels", _why(err), fmt)
            except Exception as err:  # truncated/corrupt pixel data, whatever Pillow raises
                return _fail("truncated_or_corrupt",
                             f"Pillow could not decode the {fmt} data ({_why(err)}).", fmt)
            head = _pil_open(out, out_fmt)
            width, height = head.size
            channels = _tf_channels(out_fmt, head, out)
        else:
            out, out_fmt, transformed = data, fmt, None

        if verify:
            shape, error = _tf_decode_shape(out)
            if shape is None:
                return _fail("truncated_or_corrupt",
                             f"TensorFlow could not decode the {out_fmt} ({error}).", fmt)
            if shape != (height, width, channels):
                return _fail("header_mismatch", f"TensorFlow decoded shape {shape}, the header "
                             f"says {(height, width, channels)}.", fmt)
        elif transformed is None and not _looks_complete(fmt, data):
            return _fail("truncated_or_corrupt", f"The {fmt} data ends before its end marker.", fmt)
    except Exception as err:  # last resort: never let one bad file fail the Beam bundle
        return _fail("truncated_or_corrupt", f"Unexpected error while probing ({_why(err)}).", fmt)
    return ProbeResult(ok=True, reason=None, detail=None, image_bytes=out, format=out_fmt,
                       source_format=fmt, height=height, width=width, channels=channels,
                       transformed=transformed)
