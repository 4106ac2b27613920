"""kubeflow/entrypoint.py: the repairs of what the KFP launcher hands over, one by one.

The compiled tasks themselves run the way the KFP backend runs them in
tests/test_kubeflow_replay.py (every task of the DAG, from the launcher's source).
"""
from __future__ import annotations

import json

import pytest
from google.cloud import storage

from kubeflow import entrypoint, targets

SYSTEM = {"schemaTitle": "system.Artifact"}


def test_system_and_empty_types_get_the_spec_type_and_good_ones_are_kept():
    given = {"inputs": {"artifacts": {
        "examples": {"artifacts": [{"type": SYSTEM, "uri": "/a"}]},
        "schema": {"artifacts": [{"type": {"instanceSchema": ""}, "uri": "/b"}]},
        "model": {"artifacts": [{"type": {"schemaTitle": "tfx.Model"}, "uri": "/c"}]}}},
        "outputs": {"artifacts": {"statistics": {"artifacts": [{"uri": "/d"}]}},
                    "outputFile": "/o.json"}}
    expected = {"examples": "tfx.Examples", "schema": "tfx.Schema", "model": "tfx.Model",
                "statistics": "tfx.ExampleStatistics"}
    fixed, originals, undeclared = entrypoint.repair_executor_input(given, expected)
    assert undeclared == []
    types = {k: v["artifacts"][0]["type"] for side in ("inputs", "outputs")
             for k, v in fixed[side]["artifacts"].items()}
    assert types == {k: {"schemaTitle": v} for k, v in expected.items()}
    assert originals == {} and given["inputs"]["artifacts"]["examples"]["artifacts"][0][
        "type"] == SYSTEM  # the argument is not modified


def test_unknown_type_without_a_spec_type_is_a_clear_error():
    given = {"inputs": {"artifacts": {"x": {"artifacts": [{"type": SYSTEM, "uri": "/a"}]}}},
             "outputs": {"artifacts": {}, "outputFile": "/o.json"}}
    with pytest.raises(RuntimeError, match="'x' has type .*system.Artifact"):
        entrypoint.repair_executor_input(given, {})


def test_outputs_the_spec_does_not_declare_are_left_to_the_launcher():
    """KFP >= 2.5 adds executor-logs (system.Artifact) to every task's outputs."""
    logs = {"artifacts": [{"name": "executor-logs", "type": SYSTEM,
                           "uri": "minio://mlpipeline/v2/artifacts/p/r/T/u/executor-logs"}]}
    given = {"inputs": {"artifacts": {}},
             "outputs": {"artifacts": {"executor-logs": logs, "statistics": {"artifacts": [
                 {"name": "statistics", "type": {"instanceSchema": "title: tfx.ExampleStatistics"
                                                 "\ntype: object\n"},
                  "uri": "minio://mlpipeline/v2/artifacts/p/r/T/u/statistics"}]}},
                 "outputFile": "/minio/mlpipeline/v2/artifacts/p/r/T/u/output_metadata.json"}}
    fixed, _, undeclared = entrypoint.repair_executor_input(
        given, {"statistics": "tfx.ExampleStatistics"})
    assert undeclared == ["executor-logs"]
    assert list(fixed["outputs"]["artifacts"]) == ["statistics"]
    assert "executor-logs" in given["outputs"]["artifacts"]  # the argument is not modified


@pytest.mark.parametrize("target,beam_args,expected", [
    (targets.KUBEFLOW, [], ("gs://", "minio://", "s3://")),
    (targets.KUBEFLOW, ["--runner=DataflowRunner"], ("minio://", "s3://")),
    (targets.KUBEFLOW, ["--runner", "DataflowRunner"], ("minio://", "s3://")),
    (targets.VERTEX, [], ("minio://", "s3://")),
])
def test_local_copies_per_target(target, beam_args, expected):
    """On Kubeflow the launcher downloads and uploads gs:// artifacts too; Dataflow workers
    cannot see the pod's disk, and Vertex hands over gs:// URIs TFX writes directly."""
    assert entrypoint.local_schemes(target, beam_args) == expected


def test_minio_and_s3_uris_map_to_the_launcher_copies():
    given = {"inputs": {"artifacts": {}},
             "outputs": {"artifacts": {"examples": {"artifacts": [
                 {"type": SYSTEM, "uri": "minio://mlpipeline/v2/artifacts/p/r/ImageExampleGen/examples"}]},
                 "model": {"artifacts": [{"type": SYSTEM, "uri": "s3://b/m"}]},
                 "blessing": {"artifacts": [{"type": SYSTEM, "uri": "gs://b/bl"}]}},
                 "outputFile": "/tmp/kfp_outputs/output_metadata.json"}}
    fixed, originals, _ = entrypoint.repair_executor_input(
        given, {"examples": "tfx.Examples", "model": "tfx.Model", "blessing": "tfx.ModelBlessing"})
    uris = {k: v["artifacts"][0]["uri"] for k, v in fixed["outputs"]["artifacts"].items()}
    assert uris == {"examples": "/minio/mlpipeline/v2/artifacts/p/r/ImageExampleGen/examples",
                    "model": "/s3/b/m", "blessing": "gs://b/bl"}
    assert originals == {"/minio/mlpipeline/v2/artifacts/p/r/ImageExampleGen/examples":
                         "minio://mlpipeline/v2/artifacts/p/r/ImageExampleGen/examples",
                         "/s3/b/m": "s3://b/m"}


def test_output_file_names_the_original_uris_again(tmp_path):
    output = tmp_path / "out.json"
    output.write_text(json.dumps({"artifacts": {"model": {"artifacts": [
        {"uri": "/s3/b/m", "metadata": {"a": 1, "where": "/s3/b/m/v1", "other": "/s3/b/mx",
                                        "same": "/s3/b/m"}}]}}}))
    entrypoint._restore_uris(str(output), {"/s3/b/m": "s3://b/m"})
    assert json.loads(output.read_text())["artifacts"]["model"]["artifacts"][0] == {
        "uri": "s3://b/m", "metadata": {"a": 1, "where": "s3://b/m/v1", "other": "/s3/b/mx",
                                        "same": "s3://b/m"}}


def test_gcs_directory_markers_are_the_zero_byte_slash_objects():
    bucket = storage.Bucket(client=None, name="b")
    blobs = []
    for name, size in [("run/Split-train/", 0), ("run/Split-train/data-0", 10),
                       ("run/empty_file", 0), ("run/", 0), ("run/dir/", 5)]:
        blob = storage.Blob(name, bucket)
        blob._properties["size"] = str(size)  # what a listing response sets
        blobs.append(blob)
    assert [b.name for b in entrypoint.directory_markers(blobs)] == ["run/Split-train/", "run/"]
    assert entrypoint.remove_gcs_directory_markers(["/local/path", "minio://x/y"]) == 0
    assert entrypoint.gcs_folder("gs://b/run/Trainer/model") == ("b", "run/Trainer/model/")
    assert entrypoint.gcs_folder("gs://b/run/") == ("b", "run/")
    assert entrypoint.gcs_folder("gs://b") == ("b", "")
