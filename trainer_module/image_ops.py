"""The one decode/resize implementation.

Transform's preprocessing_fn, `make_dataset`, the serving signature and the reports all
call `decode_and_resize`, so training and serving cannot drift apart.

Contract: encoded JPEG/PNG/GIF/BMP bytes of any size -> uint8 [S, S, 3] in [0, 255].
The image is resized to S x S without keeping the aspect ratio (the whole object stays in
view, as image_dataset_from_directory does), bilinear, rounded half up.
Grayscale is expanded to RGB; an alpha channel is dropped (not composited); a GIF gives its
first frame. Normalization is *not* done here: EfficientNet rescales inside the model, and
dividing by 255 first silently ruins accuracy.

Cheap decode paths:
* JPEGs whose short side is at least 2x the target are decoded with libjpeg's DCT scaling
  (`ratio` 2, 4 or 8): the largest ratio that still leaves >= S pixels on the short side, so
  the final bilinear step never upsamples. libjpeg's scaled size is ceil(side / ratio) and
  the ratio is picked with floor(short_side / ratio) >= S, which is never more. This skips
  most of the inverse DCT, upsampling and colour conversion but not the entropy decoding,
  so it saves least on detailed, high-bitrate files: 1.14-1.3x less CPU on ~3 bit/pixel
  1800x1400 photos (BENCHMARKS.md). For sources far above S, downscaling once at ingest
  (`max_side`) pays more. It is also the better filter: a plain bilinear resize from 4x
  the target samples only a few of the source pixels. Images below 2S decode at full size.
* `decode_random_zoom_and_resize` (training only; `make_dataset(random_crop=True)`) is the
  model's RandomZoom(ZOOM_FACTOR) done while decoding: the same zoom distribution, centred,
  but a zoom-in decodes only its window (`tf.io.decode_and_crop_jpeg`, DCT-scaled the same
  way) and resamples it from the source, not from the already resized image. Nothing in
  eval or serving calls it.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

JPEG_RATIOS = (1, 2, 4, 8)  # the DCT scale factors libjpeg offers (1/1, 1/2, 1/4, 1/8)
# The training zoom: RandomZoom(height_factor=ZOOM_FACTOR) in the model, or the same zoom
# in the input (`decode_random_zoom_and_resize`); model.AUGMENTATION reads it from here.
ZOOM_FACTOR = 0.1


def is_jpeg(image_bytes: tf.Tensor) -> tf.Tensor:
    """Bool (elementwise): the bytes start with the JPEG SOI marker and a segment marker."""
    return tf.equal(tf.strings.substr(image_bytes, 0, 3), b"\xff\xd8\xff")


def is_decodable_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """Elementwise bool: the bytes start like JPEG, PNG, GIF or BMP, the formats decoded
    here (magic bytes only: a truncated file of the right format still passes)."""
    head = lambda n: tf.strings.substr(image_bytes, 0, n)  # noqa: E731  # shorter if short
    return (is_jpeg(image_bytes) | (head(8) == b"\x89PNG\r\n\x1a\n")
            | (head(4) == b"GIF8") | (head(2) == b"BM"))


def _header_ints(image_bytes: tf.Tensor, start: int, size: int, count: int,
                 big_endian: bool, signed: bool = False) -> tf.Tensor:
    """`count` unsigned (or signed) integers of `size` bytes from offset `start`, as int64;
    zeros where the bytes are shorter."""
    raw = tf.io.decode_raw(tf.strings.substr(image_bytes, start, size * count), tf.uint8,
                           fixed_length=size * count)
    raw = tf.reshape(tf.cast(raw, tf.int64), [count, size])
    weights = tf.constant([256 ** (size - 1 - i if big_endian else i) for i in range(size)],
                          tf.int64)
    values = tf.reduce_sum(raw * weights, axis=1)
    if signed:
        values = tf.where(values >= 2 ** (8 * size - 1), values - 2 ** (8 * size), values)
    return values


def _gif_frames(padded: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """int64 [8] of a GIF of `length` bytes (scalar tf.string, zero-padded by at least 16
    bytes past its end): the number of frames, the sum of every frame's width * height,
    the widest and the tallest frame, then the first frame's left, top, width and height.
    Walks the block structure (extensions and image data are skipped by their sub-block
    lengths): a loop step per 255 bytes of image data, and nothing is decoded."""
    def colour_table(packed):  # a colour table follows its descriptor when bit 7 is set
        return tf.where(packed >= 128, 3 * tf.bitwise.left_shift(
            tf.constant(1, tf.int64), packed % 8 + 1), tf.constant(0, tf.int64))

    def step(pos, in_blocks, state):
        # One read per step: the block's first byte, and the 9 bytes that follow it, which
        # an image descriptor fills with left, top, width, height (LE) and its flags.
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, pos, 10), tf.uint8,
                                       fixed_length=10), tf.int64)
        b = raw[0]
        descriptor = raw[1:9:2] + 256 * raw[2:9:2]  # left, top, width, height
        image_start = tf.logical_and(tf.logical_not(in_blocks), tf.equal(b, 0x2C))
        extension = tf.logical_and(tf.logical_not(in_blocks), tf.equal(b, 0x21))
        next_pos = tf.where(in_blocks, pos + 1 + b, tf.where(
            extension, pos + 2, tf.where(
                image_start, pos + 11 + colour_table(raw[9]), length)))  # else: the end
        first = tf.logical_and(image_start, tf.equal(state[0], 0))
        updated = tf.stack([
            state[0] + 1, state[1] + descriptor[2] * descriptor[3],
            tf.maximum(state[2], descriptor[2]), tf.maximum(state[3], descriptor[3])])
        state = tf.concat([tf.where(image_start, updated, state[:4]),
                           tf.where(first, descriptor, state[4:])], axis=0)
        return next_pos, tf.logical_or(tf.logical_and(in_blocks, b > 0),
                                       tf.logical_or(extension, image_start)), state

    start = 13 + colour_table(_header_ints(padded, 10, 1, 1, False)[0])
    # Reads reach 10 bytes past `pos`, which the padding keeps inside the string.
    _, _, state = tf.while_loop(
        lambda pos, in_blocks, state: pos < length, step,
        (start, tf.constant(False), tf.zeros([8], tf.int64)))
    return state


def header_facts(image_bytes: tf.Tensor):
    """(declared pixels int64, decodes as stored bool) of one encoded image (scalar
    tf.string), both read from its headers without decoding it; serving checks both before
    it decodes anything.

    Declared pixels, what decoding would produce; -1 for bytes of another format. JPEG: the
    frame header (tf.io.extract_jpeg_shape; a JPEG without one raises when run). PNG: IHDR.
    BMP: the info header (a negative height, a top-down bitmap, counts by its size). GIF:
    every frame's pixels added up, and at least the widest by the tallest frame and the
    logical screen: TF's GIF decoder reads every frame of the file (not only the first),
    onto a canvas of the largest frame's size whatever the screen declares. Sides count at
    most 2^31 each, so the product cannot overflow.

    Decodes as stored: False for the GIF and BMP variants that TF decodes to other pixels
    than the file holds, which ingest re-encodes to PNG instead of storing
    (components/image_example_gen/image_probe.py measured them): a GIF whose first frame is
    not at (0, 0), or is smaller than the screen or than a later frame; a BMP that is not
    uncompressed 24/32-bit or 8-bit with a grey-ramp palette, or whose size is not exactly
    what its header declares (TF ignores palettes and compression). True for every other
    byte string: JPEGs and PNGs decode as stored, and bad bytes fail in the decoder.
    """
    head = lambda n: tf.strings.substr(image_bytes, 0, n)  # noqa: E731
    # Zero padding: a header cut short reads as zeros instead of failing substr.
    padded = tf.strings.join([image_bytes, tf.constant(bytes(64))])
    length = tf.cast(tf.strings.length(image_bytes), tf.int64)

    def product(values):
        values = tf.minimum(tf.abs(values), 2 ** 31)
        return values[0] * values[1]

    def jpeg():
        return product(tf.cast(tf.io.extract_jpeg_shape(image_bytes), tf.int64)), True

    def png():
        return product(_header_ints(padded, 16, 4, 2, True)), True

    def gif():
        screen = _header_ints(padded, 6, 2, 2, False)
        frames = _gif_frames(padded, length)
        declared = tf.reduce_max(tf.stack([
            product(screen), frames[1], product(frames[2:4])]))
        left, top, width, height = tf.unstack(frames[4:8])
        as_stored = ((frames[0] > 0) & tf.equal(left, 0) & tf.equal(top, 0)
                     & (width >= screen[0]) & (height >= screen[1])
                     & tf.equal(frames[2], width) & tf.equal(frames[3], height))
        return declared, as_stored

    def bmp():
        offset, dib = tf.unstack(_header_ints(padded, 10, 4, 2, False))
        sides = _header_ints(padded, 18, 4, 2, False, signed=True)
        width, height = tf.unstack(sides)
        bits = _header_ints(padded, 28, 2, 1, False)[0]
        compression = _header_ints(padded, 30, 4, 1, False)[0]
        row = (bits // 8 * width + 3) // 4 * 4
        layout = ((length >= 34) & (dib >= 40) & tf.equal(compression, 0) & (width > 0)
                  & tf.not_equal(height, 0)
                  & tf.equal(length, offset + row * tf.abs(height)))
        as_stored = layout & (tf.equal(bits, 24) | tf.equal(bits, 32) | (
            tf.equal(bits, 8) & _grey_ramp_palette(padded, length, dib)))
        return product(sides), as_stored

    def other():
        return tf.constant(-1, tf.int64), True
    index = tf.where(is_jpeg(image_bytes), 0, tf.where(
        head(8) == b"\x89PNG\r\n\x1a\n", 1, tf.where(
            head(4) == b"GIF8", 2, tf.where(head(2) == b"BM", 3, 4))))
    declared, as_stored = tf.switch_case(
        index, [lambda f=f: tuple(tf.convert_to_tensor(v) for v in f())
                for f in (jpeg, png, gif, bmp, other)])
    return declared, as_stored


def declared_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """int64: header_facts' declared pixels."""
    return header_facts(image_bytes)[0]


def decodes_as_stored(image_bytes: tf.Tensor) -> tf.Tensor:
    """Bool: header_facts' "decodes as stored"."""
    return header_facts(image_bytes)[1]


def _grey_ramp_palette(padded: tf.Tensor, length: tf.Tensor, dib: tf.Tensor) -> tf.Tensor:
    """An 8-bit BMP's palette maps every index i to grey (i, i, i), so TF's decoder, which
    returns the indices, returns the right pixels (Pillow's test for its mode "L")."""
    colours = _header_ints(padded, 46, 4, 1, False)[0]
    colours = tf.where(tf.equal(colours, 0), tf.constant(256, tf.int64), colours)
    start = 14 + dib
    valid = (colours > 2) & (colours <= 256) & (start + 4 * colours <= length)
    count = tf.where(valid, colours, tf.constant(1, tf.int64))
    start = tf.where(valid, start, tf.constant(0, tf.int64))
    table = tf.io.decode_raw(tf.strings.substr(padded, start, 4 * count), tf.uint8,
                             fixed_length=tf.cast(4 * count, tf.int32))
    table = tf.reshape(tf.cast(table, tf.int64), [-1, 4])[:, :3]
    return valid & tf.reduce_all(tf.equal(table, tf.range(count)[:, None]))


def jpeg_ratio_index(short_side: tf.Tensor, image_size: int) -> tf.Tensor:
    """Index into JPEG_RATIOS of the largest ratio r with short_side // r >= image_size."""
    short_side = tf.cast(short_side, tf.int32)
    index = tf.constant(0, tf.int32)
    for i, ratio in enumerate(JPEG_RATIOS[1:], start=1):
        index = tf.where(short_side // ratio >= image_size, tf.constant(i, tf.int32), index)
    return index


def decode_jpeg_scaled(image_bytes: tf.Tensor, image_size: int,
                       crop_window: Optional[tf.Tensor] = None) -> tf.Tensor:
    """JPEG -> uint8 [h, w, 3], DCT-scaled so the short side (of the crop) stays >= S.

    crop_window: optional int32 [y, x, height, width] in full-size pixel coordinates.
    """
    if crop_window is None:
        shape = tf.io.extract_jpeg_shape(image_bytes)
        index = jpeg_ratio_index(tf.minimum(shape[0], shape[1]), image_size)
        branches = [lambda r=r: tf.io.decode_jpeg(image_bytes, channels=3, ratio=r)
                    for r in JPEG_RATIOS]
    else:
        crop_window = tf.cast(crop_window, tf.int32)
        index = jpeg_ratio_index(tf.minimum(crop_window[2], crop_window[3]), image_size)
        start, end = crop_window[:2], crop_window[:2] + crop_window[2:]

        def scaled(r):
            # With ratio > 1 TF crops in the scaled image, so the window is scaled too: both
            # ends rounded to the nearest scaled pixel (so a centred window stays centred).
            # That keeps it inside the ceil(side / r) scaled image and, as
            # round(e / r) - round(s / r) >= floor((e - s) / r), (by the choice of r) >= S.
            first, last = (2 * start + r) // (2 * r), (2 * end + r) // (2 * r)
            return tf.concat([first, last - first], 0)
        branches = [lambda r=r: tf.io.decode_and_crop_jpeg(
            image_bytes, scaled(r), channels=3, ratio=r) for r in JPEG_RATIOS]
    return tf.switch_case(index, branches)


def _decode_any(image_bytes: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_image(image_bytes: tf.Tensor, image_size: Optional[int] = None) -> tf.Tensor:
    """Decodes one encoded image to uint8 [H, W, 3].

    Args:
      image_bytes: scalar tf.string, encoded JPEG, PNG, GIF (first frame) or BMP.
      image_size: target side; when given, JPEGs with a short side >= 2 * image_size are
        DCT-downscaled while decoding, never below `image_size` on the short side.

    Raises:
      tf.errors.InvalidArgumentError (when run): bytes no decoder accepts.
    """
    if image_size is None:
        return _decode_any(image_bytes)
    image = tf.cond(is_jpeg(image_bytes),
                    lambda: decode_jpeg_scaled(image_bytes, image_size),
                    lambda: _decode_any(image_bytes))
    image.set_shape([None, None, 3])
    return image


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 [S, S, 3], bilinear (half-pixel centres), rounded half up."""
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear")
    # Bilinear weights are convex, so values stay in [0, 255] (up to float error): adding
    # 0.5 and truncating rounds without the two extra passes of round + clip.
    resized = tf.cast(resized + 0.5, tf.uint8)
    resized.set_shape([image_size, image_size, 3])
    return resized


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded bytes (scalar tf.string) -> uint8 [S, S, 3]. See the module docstring."""
    return resize(decode_image(image_bytes, image_size), image_size)


def decode_and_resize_batch(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """tf.string [B] or [B, 1] -> uint8 [B, S, S, 3]; for batched callers (serving, Transform)."""
    image_bytes = tf.reshape(image_bytes, [-1])
    return tf.map_fn(
        lambda b: decode_and_resize(b, image_size), image_bytes,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))


def _zoom_margins(sides: tf.Tensor, zoom: tf.Tensor) -> tf.Tensor:
    """int32 [2]: whole pixels that a zoom by `zoom` takes off (zoom < 1) or adds (zoom > 1)
    at each end of [H, W]: round(side * |1 - zoom| / 2), equal at both ends, so the result
    stays exactly centred."""
    sides = tf.cast(sides, tf.float32)
    return tf.cast(tf.round(sides * tf.abs(1.0 - tf.cast(zoom, tf.float32)) / 2), tf.int32)


def zoom_window(image_shape: tf.Tensor, zoom: tf.Tensor) -> tf.Tensor:
    """int32 [y, x, height, width]: the centred window of about zoom * (H, W) that a zoom-in
    by `zoom` (< 1) keeps of an [H, W, ...] image (at least 1 pixel a side)."""
    sides = tf.cast(image_shape[:2], tf.int32)
    margins = tf.minimum(_zoom_margins(sides, zoom), (sides - 1) // 2)
    return tf.concat([margins, sides - 2 * margins], 0)


def _reflect_pad(image: tf.Tensor, margins: tf.Tensor) -> tf.Tensor:
    """Pads [H, W, C] by margins [y, x] (each <= its side) at both ends of each axis,
    mirrored with the edge pixel repeated (d c b a | a b c d | d c b a), as Keras'
    fill_mode="reflect" does. tf.pad(mode="SYMMETRIC") does the same but measured ~10x
    slower on uint8 here."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    image = tf.concat([tf.reverse(image[:margins[0]], [0]), image,
                       tf.reverse(image[h - margins[0]:], [0])], 0)
    return tf.concat([tf.reverse(image[:, :margins[1]], [1]), image,
                      tf.reverse(image[:, w - margins[1]:], [1])], 1)


def zoom_and_resize(image_bytes: tf.Tensor, image_size: int, zoom: tf.Tensor) -> tf.Tensor:
    """Encoded bytes -> uint8 [S, S, 3]: the centred zoom * (H, W) window of the image,
    mirrored beyond its edges, resized to S x S.

    That is RandomZoom(height_factor) with this zoom (both axes alike, bilinear,
    fill_mode="reflect") applied to `decode_and_resize`'s output, up to rounding the window
    to whole (DCT-scaled) source pixels, but resampled once, from the source:
    * zoom < 1 (zoom in): only the window is decoded (JPEG: `decode_and_crop_jpeg`,
      DCT-scaled when the window is >= 2S; other formats: decoded whole, then sliced);
    * zoom >= 1 (zoom out): the whole image is decoded (DCT-scaled when >= 2S) and mirrored
      out to the window.

    Args:
      zoom: scalar float in (0, 2): the fraction of each side the output shows.
    """
    zoom = tf.cast(zoom, tf.float32)

    def zoom_in():
        def jpeg():
            window = zoom_window(tf.io.extract_jpeg_shape(image_bytes), zoom)
            return decode_jpeg_scaled(image_bytes, image_size, crop_window=window)

        def other():
            image = _decode_any(image_bytes)
            window = zoom_window(tf.shape(image), zoom)
            return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

        return tf.cond(is_jpeg(image_bytes), jpeg, other)

    def zoom_out():
        image = decode_image(image_bytes, image_size)
        sides = tf.shape(image)[:2]
        return _reflect_pad(image, tf.minimum(_zoom_margins(sides, zoom), sides))

    image = tf.cond(zoom < 1.0, zoom_in, zoom_out)
    image.set_shape([None, None, 3])
    return resize(image, image_size)


def decode_random_zoom_and_resize(image_bytes: tf.Tensor, image_size: int, *,
                                  factor: float = ZOOM_FACTOR,
                                  seed: Optional[int] = None) -> tf.Tensor:
    """Training-only augmentation: `zoom_and_resize` with zoom ~ U[1 - factor, 1 + factor],
    the distribution of RandomZoom(height_factor=factor). uint8 [S, S, 3].

    Never use it for evaluation or serving: they call `decode_and_resize`.

    Raises:
      ValueError: factor outside [0, 1).
    """
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"factor={factor!r}: must be in [0, 1).")
    zoom = tf.random.uniform([], 1.0 - factor, 1.0 + factor, seed=seed)
    return zoom_and_resize(image_bytes, image_size, zoom)
