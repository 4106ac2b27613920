"""Tiny ImageExampleGen-shaped data for the trainer tests (not a test module).

`write_tiny_examples(root)` writes, as ImageExampleGen does:
  root/labels.txt, root/ingest_report.json {"per_split": {split: {class: count}}}
  root/Split-<split>/data_tfrecord-00000-of-00001.gz   tf.Examples (features.py layout)
Class i is a bright square on a dark background (i=0), the reverse (i=1), or a mid-grey
field with noise (i=2): learnable at 32 px, different sizes, JPEG and PNG mixed.
"""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import tensorflow as tf

from helpers import encode, gif_and_bmp_variants, gif_declaring, png_declaring  # noqa: F401  (the trainer tests take them from here)
from trainer_module import features

CLASSES = ("bright", "dark", "grey")


def image_array(class_index: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, class_index, height, width])
    base = {0: 30, 1: 220, 2: 128}[class_index]
    img = np.full((height, width, 3), base, np.int32)
    if class_index < 2:
        top, left = height // 4, width // 4
        img[top:top + height // 2, left:left + width // 2] = 255 - base
    img += rng.integers(-20, 21, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_example(image_bytes: bytes, label: int, name: str, fmt: str, shape,
                 filename: str = "") -> bytes:
    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: b(image_bytes), features.LABEL_KEY: i(label),
        features.LABEL_NAME_KEY: b(name.encode()), features.FILENAME_KEY: b((filename or "x/" + fmt).encode()),
        features.HEIGHT_KEY: i(shape[0]), features.WIDTH_KEY: i(shape[1]),
        features.CHANNELS_KEY: i(3), features.FORMAT_KEY: b(fmt.encode()),
    })).SerializeToString()


def write_tiny_examples(root, *, num_classes: int = 2, per_class: int = 4,
                        splits=(features.TRAIN_SPLIT, features.EVAL_SPLIT)) -> dict:
    """Writes the layout above; returns {split: shard file pattern}."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    classes = CLASSES[:num_classes]
    with open(os.path.join(root, features.LABELS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(classes) + "\n")
    patterns, report = {}, {}
    for s, split in enumerate(splits):
        folder = os.path.join(root, f"Split-{split}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for k in range(per_class):
                for c, name in enumerate(classes):
                    h, w = 24 + 8 * k, 40 + 4 * c
                    fmt = "jpeg" if (k + c) % 2 == 0 else "png"
                    writer.write(make_example(encode(image_array(c, h, w, s), fmt.upper()),
                                              c, name, fmt, (h, w)))
        patterns[split] = os.path.join(folder, "*")
        report[split] = {name: per_class for name in classes}
    with open(os.path.join(root, features.REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump({"per_split": report}, f)
    return patterns


SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "components", "data_validation", "schema_template.pbtxt")


def write_transform_graph(out_dir, temp_dir, *, image_size: int, num_classes: int = 2,
                          preprocessing_fn=None) -> str:
    """Runs preprocessing_fn (default: the project's) through tft_beam.AnalyzeDataset on a
    few raw examples typed by the curated schema; writes the transform graph to `out_dir`."""
    import functools  # pylint: disable=g-import-not-at-top

    import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
    from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
    from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
    from tensorflow_transform.tf_metadata import dataset_metadata  # pylint: disable=g-import-not-at-top

    from trainer_module import preprocessing  # pylint: disable=g-import-not-at-top

    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    raw = []
    for c in range(num_classes):
        array = image_array(c, 30, 20, seed=9)
        raw.append({
            features.IMAGE_KEY: [encode(array, "PNG")], features.LABEL_KEY: [c],
            features.LABEL_NAME_KEY: [CLASSES[c].encode()], features.FILENAME_KEY: [b"f.png"],
            features.HEIGHT_KEY: [30], features.WIDTH_KEY: [20], features.CHANNELS_KEY: [3],
            features.FORMAT_KEY: [b"png"],
        })
    fn = functools.partial(preprocessing_fn or preprocessing.preprocessing_fn,
                           custom_config={"image_size": image_size})
    with tft_beam.Context(temp_dir=str(temp_dir), force_tf_compat_v1=False):
        transform_fn = ((raw, dataset_metadata.DatasetMetadata(schema))
                        | tft_beam.AnalyzeDataset(fn))
        _ = transform_fn | tft_beam.WriteTransformFn(str(out_dir))
    return str(out_dir)


def write_backbone_weights(path, *, image_size: int) -> str:
    """Saves a (randomly initialised) EfficientNetB3 include_top=False weights file, standing
    in for the ImageNet file: train_and_export(weights=path) then takes the pretrained path
    (frozen backbone, two-stage fine-tuning), which also traces much faster on CPU."""
    from trainer_module import model  # pylint: disable=g-import-not-at-top

    _, _, backbone = model.build_model(2, image_size=image_size, augment=False)
    backbone.save_weights(str(path))
    return str(path)


def train_tiny_model(root, *, image_size: int = 32, num_classes: int = 3):
    """Really trains EfficientNetB3 (2 steps at image_size, from write_backbone_weights'
    file) on write_tiny_examples and exports it with a Transform graph into a workdir layout:
    root/work/serving/17. backup_interval_s=None, as in a local run."""
    from trainer_module import train  # pylint: disable=g-import-not-at-top

    patterns = write_tiny_examples(root / "data", num_classes=num_classes)
    transform_dir = write_transform_graph(root / "transform_graph", root / "tft_tmp",
                                          image_size=image_size, num_classes=num_classes)
    serving_dir = str(root / "work" / "serving" / "17")
    train.train_and_export(
        [patterns["train"]], [patterns["eval"]], model_run_dir=str(root / "model_run"),
        serving_model_dir=serving_dir, transform_output_dir=transform_dir,
        image_size=image_size, batch_size=4, epochs=1, train_steps=2, eval_steps=1,
        weights=write_backbone_weights(root / "b3_notop.h5", image_size=image_size),
        backup_interval_s=None)
    built = tiny_model_at(root, num_classes=num_classes)
    assert (built.serving_dir, built.patterns, built.transform_dir) == (
        serving_dir, patterns, transform_dir)
    return built


def tiny_model_at(root, *, num_classes: int = 3):
    """What train_tiny_model(root) returns, for a model it has already built there."""
    import types  # pylint: disable=g-import-not-at-top

    root = pathlib.Path(root)
    splits = (features.TRAIN_SPLIT, features.EVAL_SPLIT)
    return types.SimpleNamespace(
        root=root, serving_dir=str(root / "work" / "serving" / "17"),
        patterns={s: os.path.join(str(root / "data"), f"Split-{s}", "*") for s in splits},
        transform_dir=str(root / "transform_graph"), classes=CLASSES[:num_classes])
