"""Tests for trainer_module.dataset: make_dataset's contract, order, caches, errors, labels.

Most fixtures are shards written directly with tf.io.TFRecordWriter in the features.py
layout; one test reads real `IngestImages` output (in-process Beam, the same PTransform
`imgpipe ingest` runs). Each record's label is its own index, so order can be tracked.
"""
from __future__ import annotations

import collections
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf

from components.image_example_gen.ingest import IngestImages, IngestOptions
from pipeline.demo_data import generate_dataset
from trainer_module import dataset, features, image_ops, make_dataset
from helpers import encode
from tiny_shards import make_example

S = 24
N = 20


def _image(i: int) -> bytes:
    """Image i: a distinct solid colour, in a rotating format (JPEG, PNG RGBA, gray, GIF, BMP)."""
    colour = np.array([(37 * i) % 256, (91 * i + 50) % 256, (11 * i + 200) % 256], np.uint8)
    rgb = np.broadcast_to(colour, (30 + i, 40, 3)).copy()
    kind = i % 5
    if kind == 1:
        return encode(np.dstack([rgb, np.full(rgb.shape[:2], 99, np.uint8)]), "PNG")
    if kind == 2:
        return encode(rgb[..., 0].copy(), "PNG")
    if kind == 3:
        return encode(rgb, "GIF")
    if kind == 4:
        return encode(rgb, "BMP")
    return encode(rgb if i % 2 else np.broadcast_to(colour, (5 * S, 6 * S, 3)).copy(), "JPEG")


def _example(image: bytes, label: int) -> bytes:
    return make_example(image, label, f"class{label}", "jpeg", (1, 1))


def _write_shards(root, n: int = N, num_shards: int = 3, gzip: bool = False) -> str:
    """Writes root/Split-train/ shards of n records (label i = record i) and labels.txt."""
    folder = os.path.join(str(root), "Split-train")
    os.makedirs(folder, exist_ok=True)
    suffix, options = (".gz", "GZIP") if gzip else ("", None)
    for s in range(num_shards):
        path = os.path.join(folder, f"data_tfrecord-{s:05d}-of-{num_shards:05d}{suffix}")
        with tf.io.TFRecordWriter(path, options=options) as writer:
            for i in range(s, n, num_shards):
                writer.write(_example(_image(i), i))
    with open(os.path.join(str(root), features.LABELS_FILE), "w", encoding="utf-8") as f:
        f.write("".join(f"class{i}\n" for i in range(n)))
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return _write_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def reference():
    """label -> the image decode_and_resize gives for record `label`."""
    return {i: image_ops.decode_and_resize(tf.constant(_image(i)), S).numpy() for i in range(N)}


def _epochs(ds, epochs: int, per_epoch: int = N) -> list:
    """Label order of each of `epochs` epochs of a repeated batch_size=1 dataset."""
    labels = [int(y[0]) for _, y in ds.take(epochs * per_epoch)]
    return [labels[e * per_epoch:(e + 1) * per_epoch] for e in range(epochs)]


def test_contract_dtypes_shapes_and_static_batch(shards, reference):
    ds = make_dataset(shards, image_size=S, batch_size=4, training=True, seed=0)
    assert ds.element_spec[0].shape.as_list() == [4, S, S, 3]  # drop_remainder in training
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.int64
    assert ds.element_spec[1].shape.as_list() == [4]
    images, labels = next(iter(ds))
    for image, label in zip(images.numpy(), labels.numpy()):
        np.testing.assert_array_equal(image, reference[label])


def test_eval_reads_every_record_once_in_order_with_partial_batch(shards, reference):
    ds = make_dataset(shards, image_size=S, batch_size=6, training=False)
    assert ds.element_spec[0].shape.as_list() == [None, S, S, 3]
    batches = list(ds)
    assert [len(y) for _, y in batches] == [6, 6, 6, 2]
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(labels) == list(range(N))
    again = np.concatenate([y.numpy() for _, y in make_dataset(
        shards, image_size=S, batch_size=6, training=False)])
    np.testing.assert_array_equal(labels, again)  # deterministic
    for (images, ys) in batches:
        for image, label in zip(images.numpy(), ys.numpy()):
            np.testing.assert_array_equal(image, reference[label])


def test_training_reshuffles_every_epoch(shards):
    ds = make_dataset(shards, image_size=S, batch_size=1, training=True, seed=3,
                      deterministic=True)
    epochs = _epochs(ds, 3)
    for order in epochs:
        assert sorted(order) == list(range(N))  # each epoch sees every record once
    assert len({tuple(order) for order in epochs}) == 3
    assert epochs[0] != sorted(epochs[0])


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_cache_keeps_images_and_still_reshuffles(shards, reference, tmp_path, kind):
    cache = "memory" if kind == "memory" else str(tmp_path / "cache" / "train")
    ds = make_dataset(shards, image_size=S, batch_size=1, training=True, cache=cache, seed=5,
                      deterministic=True)
    seen, orders = {}, []
    for image, label in ds.take(3 * N):
        seen.setdefault(int(label[0]), []).append(image[0].numpy())
        orders.append(int(label[0]))
    assert len({tuple(orders[e * N:(e + 1) * N]) for e in range(3)}) == 3
    for label, images in seen.items():
        assert len(images) == 3
        for image in images:
            np.testing.assert_array_equal(image, reference[label])
    if kind == "file":
        written = os.listdir(tmp_path / "cache")
        assert any(name.startswith(f"train-{S}px-") and name.endswith(".index")
                   for name in written), written
        # A fresh pipeline reads the finished cache back; another size gets its own files.
        again = make_dataset(shards, image_size=S, batch_size=N, training=False, cache=cache)
        images, labels = next(iter(again))
        for image, label in zip(images.numpy(), labels.numpy()):
            np.testing.assert_array_equal(image, reference[label])
        bigger = make_dataset(shards, image_size=S + 8, batch_size=N, training=False,
                              cache=cache)
        assert next(iter(bigger))[0].shape == (N, S + 8, S + 8, 3)


def test_gzip_shards_and_lists_of_patterns(tmp_path, reference):
    folder = _write_shards(tmp_path, num_shards=2, gzip=True)
    assert all(name.endswith(".gz") for name in os.listdir(folder))
    patterns = [os.path.join(folder, "*-00000-*"), os.path.join(folder, "*-00001-*")]
    for pattern in (folder, os.path.join(folder, "*"), patterns):
        labels = np.concatenate([y.numpy() for _, y in make_dataset(
            pattern, image_size=S, batch_size=8, training=False)])
        assert sorted(labels) == list(range(N))


def test_random_crop_is_training_only_and_gives_the_contract(shards, reference):
    ds = make_dataset(shards, image_size=S, batch_size=5, training=True, random_crop=True,
                      seed=1)
    images, labels = next(iter(ds))
    assert images.shape == (5, S, S, 3) and images.dtype == tf.uint8
    for image, label in zip(images.numpy(), labels.numpy()):  # solid colours stay solid
        np.testing.assert_allclose(image.mean((0, 1)), reference[label].mean((0, 1)), atol=3)
    with pytest.raises(ValueError, match="random_crop"):
        make_dataset(shards, image_size=S, batch_size=5, training=False, random_crop=True)
    with pytest.raises(ValueError, match="random_crop"):
        make_dataset(shards, image_size=S, batch_size=5, training=True, random_crop=True,
                     cache="memory")


def test_random_crop_zooms_each_image_in_and_out_every_epoch(tmp_path):
    """The model's random zoom, done in the input: a centred white bar (in a JPEG and a PNG)
    shows zoomed by U[0.9, 1.1], a new zoom for each image in every epoch."""
    folder = os.path.join(str(tmp_path), "Split-train")
    os.makedirs(folder)
    side = 96  # upsampled from 48 x 64, so the bar's edges blend and its width reads finely
    square = np.zeros((48, 64, 3), np.uint8)
    square[16:32, 16:48] = 255  # half the width: side / 2 wide at zoom 1
    with tf.io.TFRecordWriter(os.path.join(folder, "data_tfrecord-00000-of-00001")) as writer:
        writer.write(_example(encode(square, "JPEG", quality=95), 0))
        writer.write(_example(encode(square, "PNG"), 1))
    ds = make_dataset(folder, image_size=side, batch_size=2, training=True, random_crop=True)
    zooms = collections.defaultdict(list)
    for images, labels in ds.take(60):
        for image, label in zip(images.numpy(), labels.numpy()):
            middle = image[side // 2, :, 0].astype(np.float64) / 255
            zooms[int(label)].append((side / 2) / middle.sum())
    for label, values in zooms.items():  # both sides of 1, within the range
        assert min(values) < 0.97 and max(values) > 1.03, (label, values)
        assert 0.88 < min(values) and max(values) < 1.12, (label, values)


def test_errors_name_the_problem(shards, tmp_path):
    with pytest.raises(ValueError, match="matches no files"):
        make_dataset(str(tmp_path / "nothing" / "*"), image_size=S, batch_size=2,
                     training=False)
    with pytest.raises(ValueError, match="give one split"):
        make_dataset(os.path.dirname(shards), image_size=S, batch_size=2, training=False)
    for bad in ({"image_size": 0}, {"batch_size": -1}, {"shuffle_buffer": 0},
                {"num_parallel_reads": 0}, {"image_size": 2.5}, {"cache": "somewhere/"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_dataset(shards, **{"image_size": S, "batch_size": 2, "training": True, **bad})
    gz = _write_shards(tmp_path / "mixed", num_shards=1, gzip=True)
    _write_shards(tmp_path / "mixed", num_shards=1)
    with pytest.raises(ValueError, match="mixes"):
        make_dataset(gz, image_size=S, batch_size=2, training=False)
    with pytest.raises(RuntimeError, match="labels.txt"):
        os.remove(tmp_path / "mixed" / features.LABELS_FILE)
        dataset.read_labels(gz)


def test_a_split_folder_whose_path_holds_glob_characters(tmp_path):
    folder = _write_shards(tmp_path / "run[1]", num_shards=2)
    assert dataset.list_shards(folder) == [
        os.path.join(folder, f"data_tfrecord-{s:05d}-of-00002") for s in range(2)]


def test_real_ingest_output_round_trips_labels(tmp_path):
    """generate_dataset -> IngestImages (as `imgpipe ingest`) -> make_dataset + read_labels."""
    counts = generate_dataset(tmp_path / "images", images_per_class=6, min_side=40,
                              max_side=90)
    out = str(tmp_path / "examples")
    options = IngestOptions(data_root=str(tmp_path / "images"), eval_fraction=0.3,
                            compression="gzip")
    with beam.Pipeline() as pipeline:
        _ = pipeline | IngestImages(options, out)
    names = dataset.read_labels(os.path.join(out, "Split-train", "*"))
    assert names == sorted(counts)
    total = collections.Counter()
    for split in ("train", "eval"):
        folder = os.path.join(out, f"Split-{split}")
        for images, labels in make_dataset(folder, image_size=S, batch_size=4,
                                           training=False):
            assert images.dtype == tf.uint8 and images.shape[1:] == (S, S, 3)
            total.update(names[int(label)] for label in labels)
        # the label ids agree with each record's own label_name
        for record in tf.data.TFRecordDataset(tf.io.gfile.glob(folder + "/*"), "GZIP"):
            parsed = tf.io.parse_single_example(record, {
                features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
                features.LABEL_NAME_KEY: tf.io.FixedLenFeature([], tf.string)})
            assert names[int(parsed[features.LABEL_KEY])] == \
                parsed[features.LABEL_NAME_KEY].numpy().decode()
    assert dict(total) == counts


def test_runs_without_the_autotuning_model_unless_the_caller_asks(shards):
    """tf.data's autotuning model thread makes deleting a long-lived iterator wait up to
    60 s (TF 2.16; BENCHMARKS.md, "The stall after fit"), so make_dataset turns it off, in
    both modes and through the Trainer's later .map(); options passed in come last."""
    for training in (True, False):
        ds = dataset.make_dataset(shards, image_size=S, batch_size=2, training=training)
        assert ds.options().autotune.enabled is False
        assert ds.map(lambda x, y: (x, y)).options().autotune.enabled is False
    again = tf.data.Options()
    again.autotune.enabled = True
    ds = dataset.make_dataset(shards, image_size=S, batch_size=2, training=True,
                              options=again)
    assert ds.options().autotune.enabled is True
    images, labels = next(iter(ds))
    assert images.shape == (2, S, S, 3) and labels.shape == (2,)
