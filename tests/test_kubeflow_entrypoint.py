"""kubeflow/entrypoint.py: the repairs, and the compiled KFP commands run as the launcher runs them.

`launch()` below does what the KFP v2 launcher does for one task of the compiled spec: it
takes the container command and args verbatim from the spec, builds the ExecutorInput JSON
(parameters from the task's constants and the run's parameters; artifacts typed
`system.Artifact`, as open-source KFP hands them over; local URIs), substitutes it for
`{{$}}`, runs the command in a subprocess, and reads the executor output file. Nothing is
mocked: the real entrypoint runs the real TFX executors.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.cloud import storage
from PIL import Image

from kubeflow import compiler, entrypoint, targets
from pipeline.config import load_config

SYSTEM = {"schemaTitle": "system.Artifact"}


def _write_images(root, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = os.path.join(str(root), "ab"[i % 2])
        os.makedirs(folder, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
        with open(os.path.join(folder, f"{i}.jpg"), "wb") as f:
            f.write(buf.getvalue())


def launch(spec: dict, task: str, run_parameters: dict, inputs: dict, root: str,
           expect_failure: bool = False):
    """Runs one compiled task like the KFP v2 launcher; returns its ExecutorOutput dict (or,
    with expect_failure, the failed process's stderr)."""
    task_spec = spec["root"]["dag"]["tasks"][task]
    component = spec["components"][task_spec["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    parameters = {}
    for name, value in task_spec.get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in value:
            parameters[name] = run_parameters[value["componentInputParameter"]]
        else:
            parameters[name] = value["runtimeValue"]["constant"]
    outputs = {key: {"artifacts": [{"name": "", "type": SYSTEM, "metadata": {},
                                    "uri": os.path.join(root, task, key)}]}
               for key in component.get("outputDefinitions", {}).get("artifacts", {})}
    output_file = os.path.join(root, task, "executor_output.json")
    os.makedirs(root, exist_ok=True)  # the launcher creates the output folders, not the files
    executor_input = {"inputs": {"parameterValues": parameters, "artifacts": inputs},
                      "outputs": {"artifacts": outputs, "outputFile": output_file}}
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    done = subprocess.run([*container["command"], *args], cwd=root, env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    if expect_failure:
        assert done.returncode != 0
        return done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    with open(output_file, encoding="utf-8") as f:
        return json.load(f)


def _as_input(output: dict, key: str, mlmd_id: str) -> dict:
    """What the launcher hands the next task: the stored artifact, typed system.Artifact."""
    (artifact,) = output["artifacts"][key]["artifacts"]
    return {"artifacts": [{"name": mlmd_id, "type": SYSTEM, "uri": artifact["uri"],
                           "metadata": artifact.get("metadata", {})}]}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kfp_launch")
    compiled_default, data_root = tmp / "default_data", tmp / "data"
    _write_images(data_root, 20)
    config = load_config(None, {
        "data_root": str(compiled_default), "workdir": str(tmp / "work"), "image": "imgpipe:test",
        "ingest_beam_args": "--direct_running_mode=in_memory", "eval_fraction": 0.5})
    spec = compiler.compile_pipeline(config, targets.KUBEFLOW)["pipelineSpec"]
    # The run overrides the compiled default data root, as `imgpipe submit --data-root` does.
    params = {"data_root": str(data_root), "epochs": 1}
    run_root = str(tmp / "run")
    ingest = launch(spec, "ImageExampleGen", params, {}, run_root)
    examples = _as_input(ingest, "examples", "1")
    schema = launch(spec, "DatasetSchemaGen", params, {"examples": examples}, run_root)
    schema_in = _as_input(schema, "schema", "2")
    stats = launch(spec, "StatisticsGen", params,
                   {"examples": examples, "schema": schema_in}, run_root)
    stats_in = _as_input(stats, "statistics", "3")
    anomalies = launch(spec, "ExampleValidator", params,
                       {"statistics": stats_in, "schema": schema_in}, run_root)
    gate_inputs = {"examples": examples, "statistics": stats_in, "schema": schema_in,
                   "anomalies": _as_input(anomalies, "anomalies", "4")}
    gate = launch(spec, "DataGate", params, gate_inputs, run_root)
    # The same gate on a schema that no longer allows JPEG: the task must fail on KFP too.
    strict = tmp / "strict_schema"
    strict.mkdir()
    text = (tmp / "work" / "schema" / "schema.pbtxt").read_text()
    (strict / "schema.pbtxt").write_text(text.replace('value: "jpeg"', ""))
    strict_in = {"artifacts": [dict(schema_in["artifacts"][0], uri=str(strict))]}
    strict_anomalies = launch(spec, "ExampleValidator", params,
                              {"statistics": stats_in, "schema": strict_in}, str(tmp / "run2"))
    blocked = launch(spec, "DataGate", params,
                     dict(gate_inputs, schema=strict_in,
                          anomalies=_as_input(strict_anomalies, "anomalies", "5")),
                     str(tmp / "run2"), expect_failure=True)
    return run_root, ingest, stats, gate, blocked


def test_ingest_task_runs_from_the_compiled_spec(chain):
    run_root, ingest = chain[:2]
    (examples,) = ingest["artifacts"]["examples"]["artifacts"]
    assert examples["uri"] == os.path.join(run_root, "ImageExampleGen", "examples")
    with open(os.path.join(examples["uri"], "ingest_report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["counts"]["ingested"] == 20  # the run's data_root, not the compiled default
    assert json.loads(examples["metadata"]["split_names"]) == ["train", "eval"]
    records = sum(1 for split in ("train", "eval")
                  for path in tf.io.gfile.glob(os.path.join(examples["uri"], f"Split-{split}", "*"))
                  for _ in tf.data.TFRecordDataset(path))
    assert records == 20


def test_statistics_task_reads_the_ingest_output(chain):
    run_root, _, stats = chain[:3]
    (statistics,) = stats["artifacts"]["statistics"]["artifacts"]
    assert statistics["uri"] == os.path.join(run_root, "StatisticsGen", "statistics")
    for split in ("train", "eval"):
        assert tf.io.gfile.exists(os.path.join(statistics["uri"], f"Split-{split}",
                                               "FeatureStats.pb"))
    assert json.loads(statistics["metadata"]["split_names"]) == ["train", "eval"]


def test_data_gate_passes_and_fails_its_task_like_the_local_run(chain):
    _, _, _, gate, blocked = chain
    (result,) = gate["artifacts"]["result"]["artifacts"]
    assert result["metadata"]["passed"] == 1.0
    with open(os.path.join(result["uri"], "validation.json"), encoding="utf-8") as f:
        assert json.load(f)["blocking"] == []
    assert "data validation stopped the run: 2 anomalies" in blocked
    assert "feature 'format': expected one of [png, gif, bmp]" in blocked


def test_system_and_empty_types_get_the_spec_type_and_good_ones_are_kept():
    given = {"inputs": {"artifacts": {
        "examples": {"artifacts": [{"type": SYSTEM, "uri": "/a"}]},
        "schema": {"artifacts": [{"type": {"instanceSchema": ""}, "uri": "/b"}]},
        "model": {"artifacts": [{"type": {"schemaTitle": "tfx.Model"}, "uri": "/c"}]}}},
        "outputs": {"artifacts": {"statistics": {"artifacts": [{"uri": "/d"}]}},
                    "outputFile": "/o.json"}}
    expected = {"examples": "tfx.Examples", "schema": "tfx.Schema", "model": "tfx.Model",
                "statistics": "tfx.ExampleStatistics"}
    fixed, originals = entrypoint.repair_executor_input(given, expected)
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


def test_minio_and_s3_uris_map_to_the_launcher_copies():
    given = {"inputs": {"artifacts": {}},
             "outputs": {"artifacts": {"examples": {"artifacts": [
                 {"type": SYSTEM, "uri": "minio://mlpipeline/v2/artifacts/p/r/ImageExampleGen/examples"}]},
                 "model": {"artifacts": [{"type": SYSTEM, "uri": "s3://b/m"}]},
                 "blessing": {"artifacts": [{"type": SYSTEM, "uri": "gs://b/bl"}]}},
                 "outputFile": "/tmp/kfp_outputs/output_metadata.json"}}
    fixed, originals = entrypoint.repair_executor_input(
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
        {"uri": "/s3/b/m", "metadata": {"a": 1}}]}}}))
    entrypoint._restore_uris(str(output), {"/s3/b/m": "s3://b/m"})
    assert json.loads(output.read_text())["artifacts"]["model"]["artifacts"][0] == {
        "uri": "s3://b/m", "metadata": {"a": 1}}


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
