"""Tests for components.image_example_gen.sources: layouts, listing on Beam, manifests, fingerprint.

Real Beam (in-process DirectRunner) and real files; `assert_that` checks the PTransform.
"""
from __future__ import annotations

import os
import time
import unicodedata
import uuid

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from components.image_example_gen import sources
from components.image_example_gen.sources import Candidate, Skipped


def _touch(path, data: bytes = b"x") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


_COLLECTED: dict = {}  # the in-process runner runs DoFns in this interpreter


def _keep(items, key):
    _COLLECTED[key] = sorted(items)


def _listed(data_root: str, layout: str) -> dict:
    """Runs ListImageFiles and returns its three outputs as sorted lists."""
    token = uuid.uuid4().hex
    with beam.Pipeline() as p:
        listed = p | sources.ListImageFiles(data_root, layout)
        for key in ("candidates", "skipped", "empty_folders"):
            _ = (listed[key] | f"List{key}" >> beam.combiners.ToList()
                 | f"Keep{key}" >> beam.Map(_keep, f"{token}/{key}"))
    return {key: _COLLECTED.pop(f"{token}/{key}")
            for key in ("candidates", "skipped", "empty_folders")}


@pytest.fixture()
def class_tree(tmp_path):
    root = tmp_path / "data"
    nfd_cafe = unicodedata.normalize("NFD", "café")
    files = {
        "cat/a.jpg": b"1", "cat/2023/deep/b.jpg": b"2", "猫/c.png": b"3",
        "golden retriever/d.jpg": b"4", f"{nfd_cafe}/e.jpg": b"5",
        "cat/.DS_Store": b"6", "cat/._a.jpg": b"7", "cat/Thumbs.db": b"8",
        "猫/desktop.ini": b"9", ".git/config": b"10", "loose.jpg": b"11",
        "only_hidden/.DS_Store": b"12",
    }
    for rel, data in files.items():
        _touch(root / rel, data)
    os.makedirs(root / "empty")
    os.symlink(root, root / "cat" / "loop")  # a directory loop back to the data root
    os.symlink(root / "cat" / "a.jpg", root / "猫" / "link.jpg")  # a file symlink
    return root


def test_class_folders_listing(class_tree):
    got = _listed(str(class_tree), "class_folders")
    root = str(class_tree)
    cafe_dir = unicodedata.normalize("NFD", "café")
    assert got["candidates"] == sorted([
        Candidate(f"{root}/cat/2023/deep/b.jpg", "cat/2023/deep/b.jpg", "cat", ""),
        Candidate(f"{root}/cat/a.jpg", "cat/a.jpg", "cat", ""),
        Candidate(f"{root}/{cafe_dir}/e.jpg", f"{cafe_dir}/e.jpg", "café", ""),
        Candidate(f"{root}/golden retriever/d.jpg", "golden retriever/d.jpg",
                  "golden retriever", ""),
        Candidate(f"{root}/猫/c.png", "猫/c.png", "猫", ""),
        Candidate(f"{root}/猫/link.jpg", "猫/link.jpg", "猫", ""),
    ])
    assert got["skipped"] == sorted([
        Skipped(".git/", "hidden_or_system_file"),
        Skipped("cat/.DS_Store", "hidden_or_system_file"),
        Skipped("cat/._a.jpg", "hidden_or_system_file"),
        Skipped("cat/Thumbs.db", "hidden_or_system_file"),
        Skipped("cat/loop/", "symlink_loop"),
        Skipped("loose.jpg", "not_in_class_folder"),
        Skipped("only_hidden/.DS_Store", "hidden_or_system_file"),
        Skipped("猫/desktop.ini", "hidden_or_system_file"),
    ])
    assert got["empty_folders"] == ["empty/", "only_hidden/"]


def test_names_that_are_not_utf8_are_skipped_and_reported_escaped(tmp_path):
    root = tmp_path / "latin1"
    _touch(root / "cat" / "a.jpg")
    _touch(root / "dog" / "b.jpg")
    _touch(os.fsdecode(os.fsencode(root) + b"/cat/caf\xe9.jpg"))
    _touch(os.fsdecode(os.fsencode(root) + b"/cat/d\xe9j\xe0/c.jpg"))
    _touch(os.fsdecode(os.fsencode(root) + b"/\xe9t\xe9/d.jpg"))
    got = _listed(str(root), "class_folders")
    assert [c.relpath for c in got["candidates"]] == ["cat/a.jpg", "dog/b.jpg"]
    assert got["skipped"] == [Skipped("\\xe9t\\xe9/", "non_utf8_name"),
                              Skipped("cat/caf\\xe9.jpg", "non_utf8_name"),
                              Skipped("cat/d\\xe9j\\xe0/", "non_utf8_name")]
    assert len(sources.fingerprint(str(root))) == 64
    assert sources.printable("caf\u00e9") == "caf\u00e9"  # valid UTF-8 stays as it is
    with pytest.raises(ValueError, match="not valid UTF-8"):
        sources.detect_layout(os.fsdecode(os.fsencode(root) + b"/\xe9t\xe9"))


def test_listing_with_assert_that(class_tree):
    with beam.Pipeline() as p:
        listed = p | sources.ListImageFiles(str(class_tree), "class_folders")
        labels = listed["candidates"] | beam.Map(lambda c: c.label_name) | beam.Distinct()
        assert_that(labels, equal_to(["cat", "café", "golden retriever", "猫"]))
        assert_that(listed["empty_folders"], equal_to(["empty/", "only_hidden/"]),
                    label="EmptyFolders")


def test_pre_split_listing(tmp_path):
    root = tmp_path / "split"
    for rel in ("train/a/1.jpg", "train/b/2.jpg", "validation/a/3.jpg", "test/b/4.jpg",
                "other/a/5.jpg", "train/loose.jpg", "README.txt"):
        _touch(root / rel)
    os.makedirs(root / "validation" / "b")
    assert sources.detect_layout(str(root)) == "pre_split"
    got = _listed(str(root), "pre_split")
    assert [(c.relpath, c.label_name, c.split) for c in got["candidates"]] == [
        ("test/b/4.jpg", "b", "test"), ("train/a/1.jpg", "a", "train"),
        ("train/b/2.jpg", "b", "train"), ("validation/a/3.jpg", "a", "eval")]
    assert got["skipped"] == [Skipped("README.txt", "not_in_split_folder"),
                              Skipped("other/a/5.jpg", "unknown_split_folder"),
                              Skipped("train/loose.jpg", "not_in_class_folder")]
    assert got["empty_folders"] == ["validation/b/"]


def test_detect_layout(tmp_path):
    _touch(tmp_path / "classes" / "a" / "1.jpg")
    _touch(tmp_path / "m.csv", b"path,label\n")
    for name in ("train", "eval"):
        os.makedirs(tmp_path / "split" / name)
    assert sources.detect_layout(str(tmp_path / "classes")) == "class_folders"
    assert sources.detect_layout(str(tmp_path / "m.csv")) == "csv"
    assert sources.detect_layout(str(tmp_path / "split")) == "pre_split"
    with pytest.raises(ValueError, match="does not exist"):
        sources.detect_layout(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="does not fit"):
        sources.detect_layout(str(tmp_path / "classes"), "csv")
    with pytest.raises(ValueError, match="layout='folders'"):
        sources.detect_layout(str(tmp_path / "classes"), "folders")


def test_parse_manifest_row():
    d = "/data/m"
    assert sources.parse_manifest_row(["path", "label", "split"], 1, d, first=True) is None
    assert sources.parse_manifest_row(["Filename", " Class "], 2, d, first=True) is None
    assert sources.parse_manifest_row(["path", "label"], 3, d) == Candidate(  # not first
        "/data/m/path", "path", "label", "")
    assert sources.parse_manifest_row(["", ""], 4, d) is None
    assert sources.parse_manifest_row(["a/1.jpg", " 猫 "], 2, d) == Candidate(
        "/data/m/a/1.jpg", "a/1.jpg", "猫", "")
    assert sources.parse_manifest_row(["/abs/2.jpg", "dog", "Validation"], 3, d) == Candidate(
        "/abs/2.jpg", "/abs/2.jpg", "dog", "eval")
    assert sources.parse_manifest_row(["gs://b/3.jpg", "dog", "test"], 5, d) == Candidate(
        "gs://b/3.jpg", "gs://b/3.jpg", "dog", "test")
    assert sources.parse_manifest_row(["4.jpg", "dog"], 6, "gs://b/m") == Candidate(
        "gs://b/m/4.jpg", "4.jpg", "dog", "")
    assert sources.parse_manifest_row(["only-a-path"], 7, d, "m.csv") == Skipped(
        "m.csv:7", "malformed_manifest_row")
    assert sources.parse_manifest_row(["5.jpg", "dog", "holdout"], 8, d) == Skipped(
        "5.jpg", "unknown_split:holdout")


def test_manifest_listing_streams_rows(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("\ufeffpath,label,split\n"
                         "a.jpg,猫,train\n"
                         "\"b, with comma.jpg\",dog,\n"
                         "broken\n"
                         "c.jpg,dog,holdout\n".encode("utf-8") + b"\xff\xfe.jpg,dog\n")
    got = _listed(str(manifest), "csv")
    assert [(c.relpath, c.label_name, c.split) for c in got["candidates"]] == [
        ("a.jpg", "猫", "train"), ("b, with comma.jpg", "dog", ""),
        ("\ufffd\ufffd.jpg", "dog", "")]
    assert got["skipped"] == [Skipped("c.jpg", "unknown_split:holdout"),
                              Skipped("m.csv:4", "malformed_manifest_row")]
    assert got["empty_folders"] == []


def test_listing_on_a_non_local_filesystem():
    """ram:// goes through tf.io.gfile like gs:// would (in-process runner only)."""
    root = f"ram://sources-{uuid.uuid4().hex}"
    for rel in ("a/1.jpg", "a/sub/2.jpg", "b/3.jpg", "b/.DS_Store"):
        tf.io.gfile.makedirs(os.path.dirname(f"{root}/{rel}"))
        with tf.io.gfile.GFile(f"{root}/{rel}", "wb") as f:
            f.write(b"x")
    assert sources.detect_layout(root) == "class_folders"
    got = _listed(root, "class_folders")
    assert [(c.path, c.label_name) for c in got["candidates"]] == [
        (f"{root}/a/1.jpg", "a"), (f"{root}/a/sub/2.jpg", "a"), (f"{root}/b/3.jpg", "b")]
    assert got["skipped"] == [Skipped("b/.DS_Store", "hidden_or_system_file")]


def test_fingerprint_tracks_changes(tmp_path):
    root = tmp_path / "data"
    _touch(root / "a" / "1.jpg", b"one")
    _touch(root / "b" / "2.jpg", b"two")
    first = sources.fingerprint(str(root))
    assert sources.fingerprint(str(root)) == first
    time.sleep(0.01)
    _touch(root / "a" / "1.jpg", b"ONE")
    second = sources.fingerprint(str(root))
    assert second != first
    _touch(root / "b" / "3.jpg", b"three")
    assert sources.fingerprint(str(root)) != second
    manifest = _touch(tmp_path / "m.csv", b"a/1.jpg,a\n")
    before = sources.fingerprint(manifest)
    _touch(tmp_path / "m.csv", b"a/1.jpg,b\n")
    assert sources.fingerprint(manifest) != before


def test_is_inside_compares_remote_urls_as_strings_without_the_service():
    assert sources.is_inside("gs://b/data/work", "gs://b/data/")
    assert sources.is_inside("gs://b/data", "gs://b/data")
    assert not sources.is_inside("gs://b/data2/work", "gs://b/data")
    assert not sources.is_inside("/local/x", "gs://b/data")
