"""Tests for components.image_example_gen.ingest (IngestImages) and the `imgpipe ingest` CLI.

Real Beam, real TF, tiny generated images, no mocks. Most runs use the in-process
DirectRunner; one runs the default multi-process DirectRunner through the CLI.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import unicodedata
import uuid

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from components.image_example_gen import report as report_lib, shards
from components.image_example_gen import sources as sources_lib
from components.image_example_gen.ingest import IngestImages, IngestOptions, split_for_hash
from helpers import encode, png_declaring, write_file
from trainer_module import features

IN_MEMORY = ["--direct_running_mode=in_memory"]


# ---------------------------------------------------------------- image and tree helpers
def _pixels(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy + seed * 7) % 256], -1)
    return np.clip(base + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)


def _jpeg(seed: int, **kw) -> bytes:
    return encode(_pixels(seed, **kw), "JPEG", quality=90)


CAFE_NFD = unicodedata.normalize("NFD", "café")


def _zoo(root) -> dict:
    """A class-folder tree with every bad-input kind; returns {relpath: expected outcome}.

    Outcome: ("ingested", channels, transformed) | ("quarantined", reason) |
    ("skipped", reason).
    """
    rgb = lambda s: Image.fromarray(_pixels(s))  # noqa: E731
    p_trns = rgb(40).convert("P")
    expected: dict = {}

    def add(rel, data, outcome):
        write_file(root, rel, data)
        expected[rel] = outcome

    for i in range(8):
        add(f"cat/{i}.jpg", _jpeg(i), ("ingested", 3, None))
        add(f"golden retriever/{i}.jpg", _jpeg(100 + i), ("ingested", 3, None))
        add(f"{CAFE_NFD}/{i}.jpg", _jpeg(200 + i), ("ingested", 3, None))
    add("cat/cmyk.jpg", encode(rgb(30).convert("CMYK"), "JPEG"), ("ingested", 3, None))
    add("cat/sub/deeper/nested.png", encode(rgb(31), "PNG"), ("ingested", 3, None))
    add("猫/gray.png", encode(rgb(32).convert("L"), "PNG"), ("ingested", 1, None))
    add("猫/palette.png", encode(rgb(33).convert("P"), "PNG"), ("ingested", 3, None))
    add("猫/palette_trns.png", encode(p_trns, "PNG", transparency=0), ("ingested", 4, None))
    add("猫/rgba.png", encode(rgb(34).convert("RGBA"), "PNG"), ("ingested", 4, None))
    i16 = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80)
    add("猫/sixteen_bit.png", encode(i16, "PNG"), ("ingested", 1, None))
    add("猫/anim.gif", encode(rgb(35).convert("P"), "GIF", save_all=True,
                           append_images=[rgb(36).convert("P")]), ("ingested", 3, None))
    add("猫/img.bmp", encode(rgb(37), "BMP"), ("ingested", 3, None))
    add("猫/photo.webp", encode(rgb(38), "WEBP", lossless=True), ("ingested", 3, "reencoded_png"))
    add("猫/scan.tiff", encode(rgb(39), "TIFF"), ("ingested", 3, "reencoded_png"))
    add("猫/a.jpg", _jpeg(41), ("ingested", 3, None))
    add("猫/b.jpg", _jpeg(42), ("ingested", 3, None))
    # Bad files, each with an image extension.
    add("golden retriever/empty.jpg", b"", ("quarantined", "empty_file"))
    add("golden retriever/truncated.jpg", _jpeg(50)[:-300], ("quarantined", "truncated_or_corrupt"))
    add("golden retriever/notes.jpg", b"just some text\n", ("quarantined", "not_an_image"))
    add("golden retriever/bomb.png", png_declaring(20000, 20000),
        ("quarantined", "too_many_pixels"))
    # The same content under another label, and under a second name in its own class.
    add("golden retriever/cat_copy.jpg", _jpeg(1), ("ingested", 3, None))
    os.symlink(os.path.join(str(root), "cat", "0.jpg"), os.path.join(str(root), "cat", "link.jpg"))
    expected["cat/link.jpg"] = ("ingested", 3, None)
    os.symlink(os.path.join(str(root), "nowhere.jpg"), os.path.join(str(root), "cat", "broken.jpg"))
    expected["cat/broken.jpg"] = ("quarantined", "missing_file")
    os.symlink(str(root), os.path.join(str(root), "cat", "loop"))
    expected["cat/loop/"] = ("skipped", "symlink_loop")
    # Hidden and system files, a loose file, an empty class folder.
    add("cat/.DS_Store", b"\0\0\0\1Bud1", ("skipped", "hidden_or_system_file"))
    add("cat/._0.jpg", b"\0\5\26\7", ("skipped", "hidden_or_system_file"))
    add("猫/Thumbs.db", b"\xd0\xcf\x11\xe0", ("skipped", "hidden_or_system_file"))
    write_file(root, ".hidden/x.jpg", _jpeg(60))
    expected[".hidden/"] = ("skipped", "hidden_or_system_file")
    add("README.md", b"# data\n", ("skipped", "not_in_class_folder"))
    os.makedirs(os.path.join(str(root), "empty_class"))
    os.mkfifo(os.path.join(str(root), "cat", "pipe.jpg"))  # reading it must not hang
    expected["cat/pipe.jpg"] = ("quarantined", "unreadable")
    # Names that are not valid UTF-8 (Latin-1, from an old zip): skipped, escaped in the report.
    write_file(root, os.fsdecode(b"cat/caf\xe9.jpg"), _jpeg(61))
    expected["cat/caf\\xe9.jpg"] = ("skipped", "non_utf8_name")
    write_file(root, os.fsdecode(b"\xe9t\xe9/x.jpg"), _jpeg(62))
    expected["\\xe9t\\xe9/"] = ("skipped", "non_utf8_name")
    return expected


def _ingest(data_root, out, beam_args=None, **options) -> dict:
    opts = IngestOptions(data_root=str(data_root), **options)
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(
            beam_args or IN_MEMORY)) as p:
        _ = p | IngestImages(opts, str(out))
    with open(os.path.join(str(out), features.REPORT_FILE), encoding="utf-8") as f:
        return json.load(f)


_SPEC = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
         features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
         features.LABEL_NAME_KEY: tf.io.FixedLenFeature([], tf.string),
         features.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string),
         features.HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
         features.WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64),
         features.CHANNELS_KEY: tf.io.FixedLenFeature([], tf.int64),
         features.FORMAT_KEY: tf.io.FixedLenFeature([], tf.string)}


def _records(out) -> list:
    """Every stored example as a dict of Python values plus its split and shard."""
    rows = []
    for path in sorted(glob.glob(os.path.join(str(out), "Split-*", "*"))):
        split = os.path.basename(os.path.dirname(path))[len("Split-"):]
        compression = "GZIP" if path.endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(path, compression_type=compression):
            parsed = tf.io.parse_single_example(record, _SPEC)
            row = {k: v.numpy() for k, v in parsed.items()}
            for key in (features.LABEL_NAME_KEY, features.FILENAME_KEY, features.FORMAT_KEY):
                row[key] = row[key].decode("utf-8")
            rows.append(dict(row, split=split, shard=os.path.basename(path)))
    return rows


def _labels(out) -> list:
    with open(os.path.join(str(out), features.LABELS_FILE), encoding="utf-8") as f:
        return f.read().splitlines()


# ---------------------------------------------------------------------------- the zoo
@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo") / "data"
    expected = _zoo(root)
    out = tmp_path_factory.mktemp("zoo_out")
    report = _ingest(root, out, eval_fraction=0.3)
    return root, expected, out, report, _records(out)


def test_every_file_is_accounted_for_exactly_once(zoo):
    _, expected, _, report, records = zoo
    ingested = sorted(r[features.FILENAME_KEY] for r in records)
    quarantined = {e["path"]: e["reason"] for e in report["quarantined"]}
    skipped = {e["path"]: e["reason"] for e in report["skipped"]}
    assert len(ingested) == len(set(ingested))
    assert not set(ingested) & set(quarantined) and not set(quarantined) & set(skipped)
    assert sorted(ingested + list(quarantined) + list(skipped)) == sorted(expected)
    for rel, outcome in expected.items():
        if outcome[0] == "quarantined":
            assert quarantined[rel] == outcome[1], rel
        elif outcome[0] == "skipped":
            assert skipped[rel] == outcome[1], rel
    counts = report["counts"]
    assert counts == {"found": len(expected), "ingested": len(ingested),
                      "quarantined": len(quarantined), "skipped": len(skipped)}
    assert counts["found"] == counts["ingested"] + counts["quarantined"] + counts["skipped"]
    assert sum(report["per_class"].values()) == counts["ingested"]
    assert sum(sum(c.values()) for c in report["per_split"].values()) == counts["ingested"]
    assert report["empty_folders"] == ["empty_class/"]
    assert report["classes_without_images"] == []
    assert report["transformed"] == {"reencoded_png": 2}
    assert report["shards"]["train"]["records"] + report["shards"]["eval"]["records"] \
        == counts["ingested"]


def test_stored_images_decode_to_the_stored_shape(zoo):
    root, expected, _, _, records = zoo
    for r in records:
        rel = r[features.FILENAME_KEY]
        decoded = tf.io.decode_image(r[features.IMAGE_KEY], expand_animations=False)
        assert tuple(decoded.shape) == (r[features.HEIGHT_KEY], r[features.WIDTH_KEY],
                                        r[features.CHANNELS_KEY]), rel
        _, channels, transformed = expected[rel]
        assert r[features.CHANNELS_KEY] == channels, rel
        with open(os.path.join(str(root), rel), "rb") as f:
            original = f.read()
        if transformed is None:  # stored unchanged, format from the content
            assert r[features.IMAGE_KEY] == original, rel
            assert r[features.FORMAT_KEY] == os.path.splitext(rel)[1][1:].replace(
                "jpg", "jpeg"), rel
        else:
            assert r[features.FORMAT_KEY] == "png", rel


def test_labels_are_sorted_unicode_names_that_round_trip(zoo):
    _, _, out, report, records = zoo
    vocabulary = _labels(out)
    assert vocabulary == sorted(["cat", "café", "golden retriever", "猫"])
    assert report["classes"] == vocabulary
    for r in records:
        assert vocabulary[r[features.LABEL_KEY]] == r[features.LABEL_NAME_KEY]
        folder = r[features.FILENAME_KEY].split("/")[0]
        assert r[features.LABEL_NAME_KEY] == unicodedata.normalize("NFC", folder)
    assert any(r[features.LABEL_NAME_KEY] == "café" for r in records)


def test_duplicates_are_reported_and_never_cross_splits(zoo):
    _, _, _, report, records = zoo
    groups = {tuple(d["paths"]): d for d in report["duplicates"]}
    assert set(groups) == {("cat/0.jpg", "cat/link.jpg"),
                           ("cat/1.jpg", "golden retriever/cat_copy.jpg")}
    assert groups[("cat/1.jpg", "golden retriever/cat_copy.jpg")]["labels_conflict"]
    assert not groups[("cat/0.jpg", "cat/link.jpg")]["labels_conflict"]
    assert report["duplicate_summary"] == {"groups": 2, "files": 4, "labels_conflicts": 1,
                                           "crossing_splits": 0}
    split_of_content: dict = {}
    for r in records:
        sha = hashlib.sha256(r[features.IMAGE_KEY]).hexdigest()
        assert split_of_content.setdefault(sha, r["split"]) == r["split"]


def test_splits_are_deterministic_content_hashes(zoo, tmp_path):
    root, _, _, report, records = zoo
    again = _ingest(root, tmp_path / "again", eval_fraction=0.3, num_shards=2)
    assert again["per_split"] == report["per_split"]
    first = {r[features.FILENAME_KEY]: r["split"] for r in records}
    second = {r[features.FILENAME_KEY]: r["split"] for r in _records(tmp_path / "again")}
    assert first == second
    for rel, split in first.items():
        with open(os.path.join(str(root), rel), "rb") as f:
            assert split == split_for_hash(hashlib.sha256(f.read()).hexdigest(), 0.3, 0.0)
    assert set(first.values()) == {"train", "eval"}


def test_split_fractions_follow_the_content_hash():
    import random  # pylint: disable=g-import-not-at-top
    rng = random.Random(0)
    hashes = ["%064x" % rng.getrandbits(256) for _ in range(20000)]
    splits = [split_for_hash(h, 0.2, 0.1) for h in hashes]
    for split, fraction in (("train", 0.7), ("eval", 0.2), ("test", 0.1)):
        assert abs(splits.count(split) / len(splits) - fraction) < 0.015
    assert splits == [split_for_hash(h, 0.2, 0.1) for h in hashes]
    assert {split_for_hash(h, 0.2, 0.0) for h in hashes} == {"train", "eval"}


# ----------------------------------------------------------------- the other layouts
def test_pre_split_tree_keeps_its_splits(tmp_path):
    root = tmp_path / "split"
    for s, split_dir in enumerate(("train", "validation", "test")):
        for c, label in enumerate(("a", "b")):
            for i in range(2):
                write_file(root, f"{split_dir}/{label}/{i}.jpg", _jpeg(800 + 10 * s + 3 * c + i))
    write_file(root, "test/b/dup_of_train.jpg", open(root / "train/b/0.jpg", "rb").read())
    report = _ingest(root, tmp_path / "out", eval_fraction=0.5)
    assert report["layout"] == "pre_split"
    assert report["split_sizes"] == {"eval": 4, "test": 5, "train": 4}
    for r in _records(tmp_path / "out"):
        given = r[features.FILENAME_KEY].split("/")[0]
        assert r["split"] == {"validation": "eval"}.get(given, given)
    (dup,) = report["duplicates"]
    assert dup["crosses_splits"] and dup["splits"] == ["test", "train"]


def test_csv_manifest_with_relative_absolute_and_url_paths(tmp_path):
    remote = f"ram://manifest-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(remote)
    for i in range(3):
        with tf.io.gfile.GFile(f"{remote}/r{i}.jpg", "wb") as f:
            f.write(_jpeg(300 + i))
    write_file(tmp_path, "data/imgs/rel.jpg", _jpeg(310))
    write_file(tmp_path, "elsewhere/abs.png", encode(_pixels(311), "PNG"))
    absolute = str(tmp_path / "elsewhere" / "abs.png")
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text(
        "path,label,split\n"
        f"imgs/rel.jpg,狗,train\n{absolute},狗,validation\n"
        f"{remote}/r0.jpg,猫,\n{remote}/r1.jpg,猫,eval\n{remote}/r2.jpg,猫,test\n"
        "imgs/missing.jpg,猫,train\n"
        "no label here\n", encoding="utf-8")
    report = _ingest(manifest, tmp_path / "out")
    assert report["layout"] == "csv"
    assert report["classes"] == sorted(["狗", "猫"])
    assert report["counts"] == {"found": 7, "ingested": 5, "quarantined": 1, "skipped": 1}
    assert report["quarantined"][0]["path"] == "imgs/missing.jpg"
    assert report["quarantined"][0]["reason"] == "missing_file"
    assert report["skipped"] == [{"path": "manifest.csv:8", "reason": "malformed_manifest_row"}]
    splits = {r[features.FILENAME_KEY]: r["split"] for r in _records(tmp_path / "out")}
    assert splits[f"{remote}/r1.jpg"] == "eval" and splits[f"{remote}/r2.jpg"] == "test"
    assert splits["imgs/rel.jpg"] == "train" and splits[absolute] == "eval"


# ---------------------------------------------------------------------------- sharding
@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "data"
    for i in range(24):
        write_file(root, f"{'ab'[i % 2]}/{i}.jpg", _jpeg(500 + i, h=40, w=48))
    return root


def test_num_shards_gives_exactly_that_many_files(small_tree, tmp_path):
    out = tmp_path / "out"
    os.makedirs(out / "Split-train")
    (out / "Split-train" / "data_tfrecord-00007-of-00009").write_bytes(b"stale")
    report = _ingest(small_tree, out, eval_fraction=0.25, num_shards=10)
    for split in ("train", "eval"):
        files = sorted(os.listdir(out / f"Split-{split}"))
        assert files == [f"data_tfrecord-{i:05d}-of-00010" for i in range(10)]
        assert report["shards"][split]["files"] == 10
    assert report["split_sizes"]["eval"] < 10  # so some eval shards are empty, yet valid
    records = _records(out)
    assert len(records) == 24
    for r in records:  # shard j holds exactly the images whose content hash maps to j
        lane = int(hashlib.sha256(r[features.IMAGE_KEY]).hexdigest()[:8], 16) % 10
        assert int(r["shard"].split("-")[1]) == lane
    assert not [p for p in os.listdir(out) if p.startswith(".ingest-tmp")]


def test_target_shard_size_and_gzip(small_tree, tmp_path):
    out = tmp_path / "out"
    target_mb = 8000 / (1 << 20)  # ~8 KB: several records per shard, several shards
    report = _ingest(small_tree, out, eval_fraction=0.25, target_shard_mb=target_mb,
                     compression="gzip")
    records = _records(out)
    assert len(records) == 24
    biggest = max(len(r[features.IMAGE_KEY]) for r in records) + 400
    for split in ("train", "eval"):
        files = glob.glob(str(out / f"Split-{split}" / "*"))
        assert len(files) == report["shards"][split]["files"] >= 2
        assert all(f.endswith(".gz") for f in files)
        for path in files:
            raw = sum(len(r.numpy()) + 16 for r in tf.data.TFRecordDataset(path, "GZIP"))
            assert raw <= 8000 + biggest
    # Beam reads the same (possibly multi-member) gzip shards, as StatisticsGen will.
    with beam.Pipeline() as p:
        count = (p | beam.io.ReadFromTFRecord(str(out / "Split-*" / "*"))
                 | beam.combiners.Count.Globally())
        assert_that(count, equal_to([24]))


def test_plan_shards_packs_partial_files():
    t = lambda name, size, full=False, lane=0: shards.TempShard(  # noqa: E731
        "train", lane, name, size, 1, full)
    temps = [t("a", 100, True), t("b", 60), t("c", 50), t("d", 30), t("e", 20)]
    groups = [[x.path for x in g] for g in shards.plan_shards(temps, 0, 100)]
    assert groups == [["a"], ["b", "d"], ["c", "e"]]
    lanes = [t("x", 5, lane=1), t("y", 5, lane=1), t("z", 5, lane=0)]
    assert [[x.path for x in g] for g in shards.plan_shards(lanes, 3, 100)] == [
        ["z"], ["x", "y"], []]


# ------------------------------------------------------------- options and policies
def test_max_side_downscale_and_unsupported_quarantine(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        write_file(root, f"a/{i}.jpg", _jpeg(600 + i, h=120, w=200))
        write_file(root, f"b/{i}.png", encode(_pixels(610 + i, h=150, w=90), "PNG"))
    write_file(root, "b/x.webp", encode(_pixels(620), "WEBP"))
    report = _ingest(root, tmp_path / "out", max_side=64, unsupported_formats="quarantine")
    assert report["transformed"] == {"downscaled_jpeg_q90": 8}
    assert report["quarantined"] == [{"path": "b/x.webp", "reason": "unsupported_format:webp",
                                      "detail": report["quarantined"][0]["detail"]}]
    for r in _records(tmp_path / "out"):
        assert max(r[features.HEIGHT_KEY], r[features.WIDTH_KEY]) == 64
        assert r[features.FORMAT_KEY] == "jpeg"
    assert report["bytes"]["stored"] < report["bytes"]["source"]


@pytest.mark.parametrize("field, value, needle", [
    ("eval_fraction", 1.5, "eval_fraction"), ("num_shards", -1, "num_shards"),
    ("target_shard_mb", 0, "target_shard_mb"), ("compression", "zstd", "compression"),
    ("layout", "flat", "layout"), ("unsupported_formats", "drop", "unsupported"),
    ("max_side", 0, "max_side"), ("max_side", -3, "max_side"),
    ("jpeg_quality", 101, "jpeg_quality"), ("jpeg_quality", 0, "jpeg_quality"),
    ("max_pixels", 0, "max_pixels"), ("max_pixels", 1.5, "max_pixels"),
    ("verify_images", "yes", "verify_images"), ("data_root", "", "data_root"),
    ("target_shard_mb", float("inf"), "target_shard_mb"),
    ("target_shard_mb", float("nan"), "target_shard_mb")])
def test_options_are_validated(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        IngestOptions(**{"data_root": "/x", field: value})


def test_options_json_round_trip():
    options = IngestOptions(data_root="/x", num_shards=4, target_shard_mb=64.0)
    assert IngestOptions.from_json(options.to_json()) == options
    with pytest.raises(ValueError, match="unknown"):
        IngestOptions.from_json(json.dumps({"data_root": "/x", "shards": 3}))


def test_missing_data_root_fails_when_building_the_pipeline(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        with beam.Pipeline() as p:
            _ = p | IngestImages(IngestOptions(data_root=str(tmp_path / "nope")), str(tmp_path))


def test_output_folder_must_not_be_a_file_or_inside_the_data_root(small_tree, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_bytes(b"x")
    for output, needle in ((small_tree / "out", "inside data_root"), (small_tree, "inside"),
                           (a_file, "not a folder"), (a_file / "sub", "cannot be created")):
        with pytest.raises(ValueError, match=needle):
            with beam.Pipeline() as p:
                _ = p | IngestImages(IngestOptions(data_root=str(small_tree)), str(output))
    assert not (small_tree / "out").exists()  # refused, not created inside the data root


def test_manifest_data_root_must_be_a_readable_text_file(tmp_path):
    for name, data in (("images.zip", b"PK\x03\x04\x14\x00\x00\x00\x08\x00"),
                       ("utf16.csv", "path,label\na.jpg,cat\n".encode("utf-16"))):
        write_file(tmp_path, name, data)
        with pytest.raises(ValueError, match="not a CSV manifest"):
            sources_lib.detect_layout(str(tmp_path / name))
    os.mkfifo(tmp_path / "pipe.csv")  # must be refused, not read forever
    with pytest.raises(ValueError, match="cannot be read"):
        sources_lib.detect_layout(str(tmp_path / "pipe.csv"))


def test_manifest_headers_repeats_and_unparsable_rows_are_reported(tmp_path):
    for i in range(4):
        write_file(tmp_path, f"data/{i}.jpg", _jpeg(900 + i))
    manifest = tmp_path / "data" / "m.csv"
    huge = "x" * 200_000  # over the csv module's field size limit
    manifest.write_text("\n"  # a blank line before the header
                        "Filename,Class\n"
                        "0.jpg,cat\n1.jpg,cat\n2.jpg,dog\n3.jpg,dog\n"
                        "./0.jpg,dog\n"  # the same file again, under another label
                        f"\"{huge}\",dog\n"
                        "1.jpg,cat\n", encoding="utf-8")
    report = _ingest(manifest, tmp_path / "out", eval_fraction=0.25)
    assert report["classes"] == ["cat", "dog"]  # no phantom "Class" from the header
    assert report["counts"] == {"found": 7, "ingested": 4, "quarantined": 0, "skipped": 3}
    assert {(e["path"], e["reason"]) for e in report["skipped"]} == {
        ("m.csv:7", "repeated_manifest_row"), ("m.csv:8", "malformed_manifest_row"),
        ("m.csv:9", "repeated_manifest_row")}
    assert sorted(r[features.FILENAME_KEY] for r in _records(tmp_path / "out")) == [
        "0.jpg", "1.jpg", "2.jpg", "3.jpg"]


def test_train_and_test_tree_without_validation_carves_eval_from_train(tmp_path):
    root = tmp_path / "kaggle"
    for c, label in enumerate(("a", "b")):
        for i in range(10):
            write_file(root, f"train/{label}/{i}.jpg", _jpeg(1000 + 20 * c + i))
        for i in range(2):
            write_file(root, f"test/{label}/{i}.jpg", _jpeg(1100 + 20 * c + i))
    report = _ingest(root, tmp_path / "out", eval_fraction=0.3, test_fraction=0.2)
    assert report["layout"] == "pre_split" and report["classes"] == ["a", "b"]
    records = _records(tmp_path / "out")
    for r in records:
        given = r[features.FILENAME_KEY].split("/")[0]
        sha = hashlib.sha256(r[features.IMAGE_KEY]).hexdigest()
        assert r["split"] == ("test" if given == "test" else split_for_hash(sha, 0.3, 0.0))
    assert report["split_sizes"]["test"] == 4 and report["split_sizes"]["eval"] >= 1
    # A Roboflow-style export names its validation folder "valid".
    for i, label in enumerate(("a", "b")):
        write_file(tmp_path / "rf", f"train/{label}/{i}.jpg", _jpeg(1200 + i))
        write_file(tmp_path / "rf", f"valid/{label}/{i}.jpg", _jpeg(1210 + i))
    report = _ingest(tmp_path / "rf", tmp_path / "out_rf")
    assert report["layout"] == "pre_split" and report["classes"] == ["a", "b"]
    assert report["split_sizes"] == {"eval": 2, "train": 2}


def test_an_output_path_with_glob_characters_cleans_only_its_own_shards(small_tree, tmp_path):
    _ingest(small_tree, tmp_path / "run1", eval_fraction=0.25)
    before = sorted(glob.glob(str(tmp_path / "run1" / "Split-*" / "*")))
    _ingest(small_tree, tmp_path / "run[1]", eval_fraction=0.25, num_shards=3)
    _ingest(small_tree, tmp_path / "run[1]", eval_fraction=0.25, num_shards=2)
    assert sorted(glob.glob(str(tmp_path / "run1" / "Split-*" / "*"))) == before
    assert sorted(os.listdir(tmp_path / "run[1]" / "Split-train")) == [
        "data_tfrecord-00000-of-00002", "data_tfrecord-00001-of-00002"]


@pytest.mark.slow
def test_records_are_byte_identical_across_processes(tmp_path):
    """Protobuf map order varies between interpreters; shards must not. The same code runs
    here and in one child whose hash seed differs from this interpreter's."""
    code = ("import sys, hashlib\n"
            "from components.image_example_gen import image_probe, ingest, sources\n"
            "def digest(path):\n"
            "    data = open(path, 'rb').read()\n"
            "    c = sources.Candidate(path, 'cat/a.jpg', 'cat', '')\n"
            "    return hashlib.sha256(ingest._example(c, 0, image_probe.probe_image(data)))"
            ".hexdigest()\n"
            "if __name__ == '__main__':\n"
            "    print(digest(sys.argv[1]))")
    path = write_file(tmp_path, "a.jpg", _jpeg(77))
    here = {"__name__": "here"}
    exec(code, here)  # pylint: disable=exec-used
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"  # unset: a random one here
    child = subprocess.run([sys.executable, "-c", code, path],
                           env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    assert child == here["digest"](path)


# ----------------------------------------------------------------------------- the CLI
def _cli(args, capsys) -> tuple:
    from pipeline import cli  # pylint: disable=g-import-not-at-top
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", ["missing", "no_images", "one_class"])
def test_cli_errors_are_one_line(case, tmp_path, capsys):
    root = tmp_path / "data"
    if case == "no_images":
        write_file(root, "a/notes.jpg", b"text")
        write_file(root, "b/.DS_Store", b"x")
    elif case == "one_class":
        for i in range(3):
            write_file(root, f"only/{i}.jpg", _jpeg(700 + i))
    code, _, err = _cli(["ingest", "--data-root", str(root), "--output",
                         str(tmp_path / "out"), *IN_MEMORY], capsys)
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("imgpipe:")]
    assert len(lines) == 1, err[-2000:]
    assert {"missing": "does not exist", "no_images": "no images ingested",
            "one_class": "at least 2 classes"}[case] in lines[0]


@pytest.mark.slow
def test_cli_multi_process_run_matches_in_process_run(small_tree, tmp_path):
    """The default runner mode, launched in a fresh process as a user does. Its launcher
    never imports TensorFlow or TFX for local paths (~8 s of start-up; sources.py)."""
    launcher = ("import json, sys\nfrom pipeline import cli\nrc = cli.main(sys.argv[1:])\n"
                "print(json.dumps({'rc': rc, 'loaded': sorted(m for m in ('tensorflow', 'tfx')"
                " if m in sys.modules)}))")
    proc = subprocess.run(
        [sys.executable, "-c", launcher, "ingest", "--data-root", str(small_tree), "--output",
         str(tmp_path / "mp"), "--set", "eval_fraction=0.2",
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=600, check=False)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) >= 2, proc.stderr[-3000:]
    assert json.loads(lines[-1]) == {"rc": 0, "loaded": []}
    summary = next(json.loads(l) for l in lines if l.startswith('{"output"'))
    assert summary["ingested"] == 24 and summary["classes"] == 2
    reference = _ingest(small_tree, tmp_path / "ref", eval_fraction=0.2)
    with open(tmp_path / "mp" / features.REPORT_FILE, encoding="utf-8") as f:
        assert json.load(f)["per_split"] == reference["per_split"]
    mp = {r[features.FILENAME_KEY]: (r["split"], r[features.IMAGE_KEY])
          for r in _records(tmp_path / "mp")}
    assert mp == {r[features.FILENAME_KEY]: (r["split"], r[features.IMAGE_KEY])
                  for r in _records(tmp_path / "ref")}
    report_lib.finish_output(str(tmp_path / "mp"))  # passes the same checks as in TFX
