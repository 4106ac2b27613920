"""`make_dataset`: the fast tf.data input pipeline over Split-*/ TFRecord shards.

Works on any ImageExampleGen output, inside TFX (the Trainer's train/eval files) or outside
it (`imgpipe ingest` output). Per element it parses only `image` and `label`, then decodes
with `image_ops.decode_and_resize` (DCT-scaled JPEG decode when the source is >= 2x the
target). Images stay uint8 on the host, 4x fewer bytes to move than float32; the model
casts on the device.

Order of operations, and why:
  shards, shuffled (training)  -> parallel interleave (deterministic=False in training)
  [shuffle serialized records]  no cache: encoded bytes are ~5x smaller than pixels, so a
                                big buffer is cheap, and each epoch gets a new order
  parse + decode + resize       parallel (AUTOTUNE: min(16, threads); the model is off)
  [cache decoded uint8]         warm epochs skip reading and decoding entirely; random
                                augmentation runs after it, in the training model
  [or random_crop, no cache]    the model's random zoom done while decoding: a zoom-in
                                decodes only its window (cold epochs, data beyond a cache)
  [shuffle decoded images]      with a cache: shuffled after it, so epochs still differ
  repeat -> batch(drop_remainder) -> prefetch

Memory: no cache keeps memory flat in the dataset size (the shuffle buffer holds
`shuffle_buffer` encoded records, ~50 KB each at ImageNet size but ~1 MB for phone photos).
With a cache the shuffle buffer holds decoded images: shuffle_buffer * S * S * 3 bytes
(550 MB for 2048 at S=300), and cache="memory" holds the whole split decoded.
"""
from __future__ import annotations

import hashlib
import numbers
import os
from typing import Optional, Sequence, Union

import tensorflow as tf

from trainer_module import features, image_ops
from trainer_module.options import TrainOptions

AUTOTUNE = tf.data.AUTOTUNE
# Without tf.data's autotuning model, AUTOTUNE parallelism is min(16, the thread pool)
# and prefetch grows its own buffer. With it, deleting an iterator (fit does, after its
# last epoch) waits for the model thread's next wake-up, up to 60 s once the iterator has
# lived a minute or two (TF 2.16: RootDataset::Iterator::~Iterator joins a thread still in
# Model::OptimizeLoop's timed wait). Measured: BENCHMARKS.md, "The stall after fit".
_NO_AUTOTUNE_MODEL = tf.data.Options()
_NO_AUTOTUNE_MODEL.autotune.enabled = False
# Per open shard. 8 MB (the usual advice for GCS) cost +360 MB RSS with 16 parallel reads
# (interleave also opens the next shards ahead); 1 MB costs ~20 MB and reads as fast here.
_READ_BUFFER_BYTES = 1 << 20


def list_shards(file_pattern: Union[str, Sequence[str]]) -> list:
    """Glob(s) or Split-* folder(s) -> sorted shard paths.

    Raises:
      ValueError: nothing matches, or a folder is an Examples root rather than one split.
    """
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) \
        else list(file_pattern)
    files = []
    for pattern in map(os.fspath, patterns):
        if tf.io.gfile.isdir(pattern):
            # Listed, not globbed: a folder name may hold glob characters ("run[1]").
            names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(pattern))
            splits = [n for n in names if n.startswith("Split-")]
            if splits:
                raise ValueError(f"file_pattern={pattern!r} is the root of an Examples "
                                 f"artifact; give one split, e.g. "
                                 f"{os.path.join(pattern, splits[0])!r}.")
            files.extend(p for p in (os.path.join(pattern, n) for n in names)
                         if not tf.io.gfile.isdir(p))
        else:
            files.extend(sorted(tf.io.gfile.glob(pattern)))
    if not files:
        raise ValueError(f"file_pattern={file_pattern!r} matches no files; give a glob or a "
                         "Split-* folder of TFRecord shards.")
    return files


def shard_compression(files: list) -> str:
    """"GZIP" when every shard ends in .gz, "" when none does; ValueError when mixed."""
    kinds = {"GZIP" if f.endswith(".gz") else "" for f in files}
    if len(kinds) > 1:
        raise ValueError("file_pattern mixes .gz and uncompressed shards; give one kind.")
    return kinds.pop()




def _cache_path(prefix: str, files: list, image_size: int) -> str:
    """Keys a file-cache prefix by image size and the shard list, so a cache made from other
    shards or at another size is never read back by mistake."""
    digest = hashlib.sha1()
    for f in files:
        digest.update(f"{f}\0{tf.io.gfile.stat(f).length}\0".encode())
    folder = os.path.dirname(prefix)
    if folder:
        tf.io.gfile.makedirs(folder)
    return f"{prefix}-{image_size}px-{digest.hexdigest()[:12]}"


def parse_image_label(serialized: tf.Tensor) -> tuple:
    """Serialized tf.Example -> (encoded image scalar tf.string, label scalar int64)."""
    parsed = tf.io.parse_single_example(serialized, {
        features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    })
    return parsed[features.IMAGE_KEY], parsed[features.LABEL_KEY]


def _check_args(image_size, batch_size, shuffle_buffer, num_parallel_reads, cache, training,
                random_crop):
    for name, value in (("image_size", image_size), ("batch_size", batch_size),
                        ("shuffle_buffer", shuffle_buffer),
                        ("num_parallel_reads", num_parallel_reads)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}={value!r}: must be an int >= 1.")
    if cache is not None and not isinstance(cache, (str, os.PathLike)):
        raise ValueError(f"cache={cache!r}: give None, 'memory' or a file path prefix.")
    if isinstance(cache, str) and cache.endswith("/"):
        raise ValueError(f"cache={cache!r}: give 'memory' or a file path prefix, not a folder.")
    if random_crop and not training:
        raise ValueError("random_crop=True needs training=True: a random crop is augmentation "
                         "and must never reach evaluation or serving.")
    if random_crop and cache:
        raise ValueError(f"random_crop=True with cache={cache!r} would freeze one crop per "
                         "image for every epoch; use one or the other.")


def make_dataset(file_pattern: Union[str, Sequence[str]], *, image_size: int,
                 batch_size: int, training: bool,
                 shuffle_buffer: int = TrainOptions.shuffle_buffer,
                 cache: Optional[str] = None, repeat: Optional[bool] = None,
                 drop_remainder: Optional[bool] = None, seed: Optional[int] = None,
                 options: Optional[tf.data.Options] = None, random_crop: bool = False,
                 deterministic: Optional[bool] = None,
                 num_parallel_reads: int = 16) -> tf.data.Dataset:
    """Builds the input pipeline (see the module docstring for the order and memory).

    Args:
      file_pattern: glob(s) or Split-* folder(s) of TFRecord shards (.gz read as GZIP).
      image_size: output side S.
      batch_size: global batch size.
      training: shuffle (reshuffled every epoch), repeat and non-deterministic order.
      shuffle_buffer: elements in the shuffle buffer (training only).
      cache: None/"none", "memory", or a file path prefix: caches decoded uint8 images. A
        file cache is written on the first full pass as <prefix>-<S>px-<shards digest>*;
        give each process its own prefix. TF 2.16 logs "did not fully read the dataset
        being cached" for every completed file cache: a false alarm (tensorflow#60174).
      repeat: defaults to `training`.
      drop_remainder: defaults to `training` (full, static-shape batches for TPU/XLA).
      seed: shuffle (and random zoom) seed, for reproducible tests.
      options: extra tf.data.Options, applied last (`autotune.enabled=True` brings back
        tf.data's autotuning model, which is off here: see _NO_AUTOTUNE_MODEL).
      random_crop: training only: each image gets the model's random zoom
        (image_ops.decode_random_zoom_and_resize: RandomZoom(ZOOM_FACTOR)'s distribution);
        a zoom-in decodes only its window of a JPEG. Build the model with
        build_model(random_crop=True) then, so it does not zoom twice. Not with a cache.
      deterministic: element order of parallel steps; defaults to `not training`.
      num_parallel_reads: shards read at once.

    Returns:
      tf.data.Dataset of (images uint8 [B, S, S, 3], labels int64 [B]); B is static when
      drop_remainder is True.

    Raises:
      ValueError: bad arguments or a pattern matching nothing.
    """
    cache = None if cache in (None, "", "none") else cache
    _check_args(image_size, batch_size, shuffle_buffer, num_parallel_reads, cache, training,
                random_crop)
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    deterministic = (not training) if deterministic is None else deterministic
    files = list_shards(file_pattern)
    compression = shard_compression(files)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression,
                                          buffer_size=_READ_BUFFER_BYTES),
        cycle_length=min(len(files), num_parallel_reads),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if training and not cache:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    if random_crop:
        def decode(image_bytes):
            return image_ops.decode_random_zoom_and_resize(image_bytes, image_size, seed=seed)
    else:
        def decode(image_bytes):
            return image_ops.decode_and_resize(image_bytes, image_size)

    def parse_and_decode(serialized):
        image_bytes, label = parse_image_label(serialized)
        return decode(image_bytes), label

    ds = ds.map(parse_and_decode, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if cache:
        ds = ds.cache() if cache == "memory" else ds.cache(
            _cache_path(os.fspath(cache), files, image_size))
        if training:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                  deterministic=deterministic).with_options(_NO_AUTOTUNE_MODEL)
    if options is not None:
        ds = ds.with_options(options)
    return ds.prefetch(AUTOTUNE)


def artifact_file(file_pattern: Union[str, Sequence[str]], name: str) -> str:
    """Path of `name` (labels.txt, ingest_report.json) in the folder holding the Split-*/ shards."""
    first = list_shards(file_pattern)[0]
    return os.path.join(os.path.dirname(os.path.dirname(first)), name)


def read_labels(file_pattern: Union[str, Sequence[str]]) -> list:
    """Class names for shards under <root>/Split-*/: reads <root>/labels.txt.

    Raises:
      ValueError: the pattern matches nothing.
      RuntimeError: no labels.txt next to the Split-* folder.
    """
    path = artifact_file(file_pattern, features.LABELS_FILE)
    if not tf.io.gfile.exists(path):
        raise RuntimeError(f"no {features.LABELS_FILE} at {path}: the shards must come from "
                           "ImageExampleGen or `imgpipe ingest`.")
    with tf.io.gfile.GFile(path, "rb") as f:
        return [line.decode("utf-8") for line in f.read().splitlines()]
