"""ImageExampleGen inside a real TFX pipeline (LocalDagRunner, SQLite MLMD in tmp_path).

A two-component pipeline (ImageExampleGen -> StatisticsGen) runs three times: fresh, on
unchanged data (the fingerprint driver must let TFX reuse the cache), and after adding a
file (the fingerprint changes, so ImageExampleGen must run again).
"""
from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration import metadata

from components.image_example_gen import ImageExampleGen, IngestOptions
from helpers import encode, executions, latest_artifact_uri, noise, write_file
from trainer_module import features

COMPLETE = metadata_store_pb2.Execution.COMPLETE
CACHED = metadata_store_pb2.Execution.CACHED
pytestmark = pytest.mark.slow


def _write_images(root, start: int, count: int) -> None:
    for i in range(start, start + count):
        write_file(root, f"{'ab'[i % 2]}/{i}.jpg", encode(noise(i, 20, 28), "JPEG", quality=85))


def _pipeline(data_root: str, workdir) -> tfx.dsl.Pipeline:
    example_gen = ImageExampleGen(options=IngestOptions(data_root=data_root, eval_fraction=0.3))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    return tfx.dsl.Pipeline(
        pipeline_name="ingest_component_test",
        pipeline_root=os.path.join(str(workdir), "root"),
        components=[example_gen, statistics_gen],
        enable_cache=True,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            os.path.join(str(workdir), "metadata.sqlite")),
        beam_pipeline_args=["--direct_running_mode=in_memory"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data_root = tmp_path_factory.mktemp("component") / "data"
    workdir = tmp_path_factory.mktemp("component_workdir")
    _write_images(data_root, 0, 16)
    states = []
    for run in range(3):
        if run == 2:
            _write_images(data_root, 16, 1)  # a changed folder
        tfx.orchestration.LocalDagRunner().run(_pipeline(str(data_root), workdir))
        states.append([e.last_known_state for e in executions(workdir, "ImageExampleGen")])
    return workdir, states


def test_cache_hit_on_unchanged_data_and_miss_on_changed_folder(runs):
    workdir, states = runs
    assert states[0] == [COMPLETE]
    assert states[1] == [COMPLETE, CACHED]
    assert states[2] == [COMPLETE, CACHED, COMPLETE]
    statistics = [e.last_known_state for e in executions(workdir, "StatisticsGen")]
    assert statistics == [COMPLETE, CACHED, COMPLETE]


def test_examples_artifact_is_complete_and_readable_by_statistics_gen(runs):
    workdir, _ = runs
    uri = latest_artifact_uri(workdir, "Examples")
    with tf.io.gfile.GFile(os.path.join(uri, features.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["counts"]["ingested"] == 17
    with tf.io.gfile.GFile(os.path.join(uri, features.LABELS_FILE)) as f:
        assert f.read().splitlines() == ["a", "b"]
    stats_dirs = tf.io.gfile.glob(os.path.join(
        str(workdir), "root", "StatisticsGen", "statistics", "*", "Split-*"))
    assert {os.path.basename(d) for d in stats_dirs} >= {"Split-train", "Split-eval"}
    total = 0
    for split in ("train", "eval"):
        for path in tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*")):
            total += sum(1 for _ in tf.data.TFRecordDataset(path))
    assert total == 17
