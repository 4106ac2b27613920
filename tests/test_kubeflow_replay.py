"""The compiled Kubeflow pipeline, every task, run the way the KFP v2 backend runs it.

tests/kfp_replay.py models the driver and launcher from the backend's source (links there);
the commands are the compiled spec's own (`python -m kubeflow.entrypoint ...` with the real
TFX executors), the object store is a folder the replay downloads from before a task and
uploads declared outputs to after it. Three runs:

  A  minio:// root, backend 2.16 layout (names = keys, output file in the task root), logs on
  B  gs:// root, backend 2.4 layout (names "", /tmp/kfp_outputs), log publishing off
  C  gs:// root, backend 2.5 layout with logs, a schema the data breaks: the gate stops it

Every task is a new process with the launcher's argv and environment; the processes are forked
from one server that has imported what the entrypoint imports first in every task (TFX,
TensorFlow, Beam), which would otherwise cost each task ~17 s of CPU (kfp_replay.ForkServer
lists what that changes; the project's code still runs anew in every task). A runs beside B
then C (two threads; each run's tasks still one after the other, in pods of their own).

The run's pipeline root is the replay's, never the spec's defaultPipelineRoot (which points
at a bucket no task can reach here), as on a real backend.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from PIL import Image

from kubeflow import compiler, reports, targets
from pipeline.config import load_config
from kfp_replay import (LOGS_KEY, Backend, ForkServer, ObjectStore, Pods, Replay,
                        launcher_env, local_path)

pytestmark = pytest.mark.slow

TASKS = ["ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
         "DataReport", "DataGate", "Transform", "Trainer", "Evaluator", "Pusher", "RunReport"]
IMAGES = 20
# What kubeflow/entrypoint.py imports in every task before its executor runs (`_class_path`
# for the artifact types, `main` for TFX's runner): what the fork server preloads.
PRELOAD = ("yaml", "tfx.utils.import_utils", "tfx.orchestration.kubeflow.v2.compiler_utils",
           "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor")
PROJECT = ("kubeflow", "pipeline", "components", "trainer_module")  # never preloaded


def _write_images(root, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = os.path.join(str(root), "ab"[i % 2])
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            os.path.join(folder, f"{i}.jpg"), "JPEG")


def _spec(tmp, **settings) -> dict:
    config = load_config(None, {
        "data_root": "/compiled/default/images", "workdir": "gs://compiled-default/imgpipe",
        "image": "imgpipe:test", "pipeline_name": "imgpipe-replay",
        "ingest_beam_args": "--direct_running_mode=in_memory", "eval_fraction": 0.5,
        "image_size": 32, "batch_size": 4, "train_steps": 1, "eval_steps": 1,
        "augment": False, "min_accuracy": 0.0, **settings})
    return compiler.compile_pipeline(config, targets.KUBEFLOW)["pipelineSpec"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    for mount in ("/minio", "/gcs"):
        try:
            os.makedirs(mount, exist_ok=True)
        except PermissionError:
            pytest.fail(f"the replay needs to create {mount} (the launcher's local copies "
                        "live at fixed paths); run the tests as a user who can.")
    data = tmp / "data"
    _write_images(data, IMAGES)
    token = uuid.uuid4().hex[:10]
    roots = {"minio": f"minio://mlpipeline/v2/artifacts-{token}",
             "gs": f"gs://imgpipe-replay-{token}/root"}
    yield {"tmp": tmp, "data": str(data), "roots": roots, "spec": _spec(tmp)}
    shutil.rmtree(f"/minio/mlpipeline/v2/artifacts-{token}", ignore_errors=True)
    shutil.rmtree(f"/gcs/imgpipe-replay-{token}", ignore_errors=True)


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    env = launcher_env()
    # The entrypoint sets it before TFX imports TensorFlow; preloading must see the same.
    assert env.get("TF_USE_LEGACY_KERAS") == "1"
    log = tmp_path_factory.mktemp("fork_server") / "server.log"
    server = ForkServer(env, PRELOAD, PROJECT, str(log))  # imports while `world` compiles
    yield server
    server.close()


def _replay(world, pods, name: str, spec: dict, backend: Backend, root: str,
            params: dict) -> Replay:
    folder = world["tmp"] / name
    folder.mkdir()
    replay = Replay(spec, backend, ObjectStore(str(folder / "store")), root,
                    parameters=params, workdir=str(folder), pods=pods)
    replay.run()
    replay.cleanup()
    return replay


def _strict_spec(world) -> dict:
    template = os.path.join(os.path.dirname(os.path.dirname(__file__)), "components",
                            "data_validation", "schema_template.pbtxt")
    strict = world["tmp"] / "strict.pbtxt"
    with open(template, encoding="utf-8") as f:
        strict.write_text(f.read().replace('value: "jpeg"', ""))
    return _spec(world["tmp"], schema_path=str(strict))


RUNS = {  # name: (spec, backend, root key, root suffix, run parameters beyond data_root)
    "run_a": (None, Backend("2.16", publish_logs=True), "minio", "", {"epochs": 1}),
    "run_b": (None, Backend("2.4", publish_logs=False), "gs", "", {"epochs": 1}),
    "run_c": (_strict_spec, Backend("2.5", publish_logs=True), "gs", "-blocked", {}),
}
# Two lanes, as the machine may have two cores: A beside B then C (B and C take turns with
# the legacy output file anyway).
LANES = (("run_a",), ("run_b", "run_c"))


def _wanted(request) -> set:
    """The runs the selected tests of this module use."""
    wanted = set()
    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("which") in RUNS:
            wanted.add(callspec.params["which"])
        wanted |= set(RUNS) & set(item.fixturenames)
    return wanted


@pytest.fixture(scope="module")
def runs(pods, world, request):
    """Every run the selected tests use, the lanes at the same time: name -> Replay, or the
    exception that stopped it (raised again by the run's fixture)."""
    wanted = _wanted(request)
    specs = {n: RUNS[n][0](world) if RUNS[n][0] else world["spec"] for n in wanted}
    done = {}

    def lane(names):
        for name in names:
            _, backend, root, suffix, params = RUNS[name]
            try:
                done[name] = _replay(world, pods, name[-1], specs[name], backend,
                                     world["roots"][root] + suffix,
                                     {"data_root": world["data"], **params})
            except BaseException as error:  # pylint: disable=broad-except
                done[name] = error
    threads = [threading.Thread(target=lane, args=([n for n in names if n in wanted],),
                                daemon=True) for names in LANES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


def _run(runs, name: str) -> Replay:
    if name not in runs:
        pytest.fail(f"{name} was not run: the module's selected tests do not name it")
    if isinstance(runs[name], BaseException):
        raise runs[name]
    return runs[name]


@pytest.fixture(scope="module")
def run_a(runs):
    return _run(runs, "run_a")


@pytest.fixture(scope="module")
def run_b(runs):
    return _run(runs, "run_b")


@pytest.fixture(scope="module")
def run_c(runs):
    return _run(runs, "run_c")


def _failures(replay: Replay) -> str:
    return "\n".join(f"--- {r.name}\n{r.logs[-3000:]}" for r in replay.results.values()
                     if not r.ok)


@pytest.mark.parametrize("which", ["run_a", "run_b"])
def test_every_task_of_the_compiled_dag_runs(which, request):
    replay = request.getfixturevalue(which)
    assert [n for n, r in replay.results.items() if r.ok] == TASKS, _failures(replay)
    assert replay.order() == TASKS


@pytest.mark.parametrize("which", ["run_a", "run_b"])
def test_the_model_is_pushed_into_the_object_store_and_serves(which, request):
    replay = request.getfixturevalue(which)
    pushed = replay.results["Pusher"].outputs["pushed_model"]
    assert pushed.value("pushed") == 1.0
    # The destination is the object store, not a path inside the finished pod.
    assert pushed.value("pushed_destination") == pushed.uri
    assert pushed.uri.startswith(replay.run_root + "/Pusher/")
    keys = replay.store.keys(pushed.uri)
    assert "saved_model.pb" in keys and any(k.startswith("variables/") for k in keys)
    model_dir = replay.workdir + "/downloaded_model"
    replay.store.download(pushed.uri, model_dir)
    model = tf.saved_model.load(model_dir)
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 30, 30)).save(buf, "JPEG")
    out = model.signatures["serving_default"](tf.constant([buf.getvalue()]))
    probabilities = next(v for k, v in out.items() if "prob" in k)
    assert probabilities.shape == (1, 2)
    assert abs(float(tf.reduce_sum(probabilities)) - 1.0) < 1e-3


@pytest.mark.parametrize("which", ["run_a", "run_b"])
def test_data_and_run_reports_are_html_artifacts_in_the_object_store(which, request):
    replay = request.getfixturevalue(which)
    for task, title, words in ((reports.DATA_REPORT, "data report", "Verdict: passed"),
                               (reports.RUN_REPORT, "run report", "Blessed")):
        record = replay.results[task].outputs[reports.REPORT_KEY]
        assert record.type_name == "system.HTML"  # what the KFP UI renders
        assert record.value("display_name") == title
        assert replay.store.keys(record.uri) == [""]  # one object at the URI
        page = replay.store.read(record.uri)
        assert page.startswith("<!doctype html>") and words in page
        assert "data:image/png;base64," in page and '.png"' not in page
    run_page = replay.store.read(replay.results[reports.RUN_REPORT].outputs["report"].uri)
    assert replay.results["Pusher"].outputs["pushed_model"].uri in run_page


@pytest.mark.parametrize("which", ["run_a", "run_b"])
def test_ingest_and_schema_land_in_the_object_store(which, request):
    replay = request.getfixturevalue(which)
    examples = replay.results["ImageExampleGen"].outputs["examples"]
    report = json.loads(replay.store.read(examples.uri + "/ingest_report.json"))
    assert report["counts"]["ingested"] == IMAGES  # the run's data_root, not the compiled one
    assert json.loads(examples.value("split_names")) == ["train", "eval"]
    schema = replay.results["DatasetSchemaGen"].outputs["schema"]
    assert "schema.pbtxt" in replay.store.keys(schema.uri)
    assert 'value: "a"' in replay.store.read(schema.uri + "/schema.pbtxt")


def test_executor_logs_are_left_to_the_launcher_and_uploaded(run_a, run_b):
    for result in run_a.results.values():
        logs = result.outputs[LOGS_KEY]
        assert logs.type_name == "system.Artifact"
        assert "left to the launcher: executor-logs" in run_a.store.read(logs.uri)
        declared = result.executor_input["outputs"]["artifacts"]
        assert declared[LOGS_KEY]["artifacts"][0]["name"] == LOGS_KEY  # 2.15+ names outputs
        assert result.output is not None and LOGS_KEY not in result.output.artifacts
    for result in run_b.results.values():
        assert LOGS_KEY not in result.executor_input["outputs"]["artifacts"]
        assert "left to the launcher" not in result.logs


def test_inputs_arrive_in_the_backends_shape(run_a, run_b):
    for replay, output_file in ((run_b, "/tmp/kfp_outputs/output_metadata.json"),
                                (run_a, None)):
        trainer = replay.results["Trainer"].executor_input
        (examples,) = trainer["inputs"]["artifacts"]["examples"]["artifacts"]
        assert examples["name"].isdigit() and examples["type"] == {"instanceSchema": ""}
        assert examples["metadata"]["display_name"] == "examples"
        assert examples["metadata"]["ingested"] == float(IMAGES)  # an int property, a double
        assert examples["metadata"]["store_session_info"] == "{}"
        out = trainer["outputs"]["outputFile"]
        assert out == (output_file or os.path.join(
            local_path(trainer["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"]
                       ).rsplit("/", 1)[0], "output_metadata.json"))


def test_a_failing_gate_fails_its_task_and_its_report_is_already_stored(run_c):
    assert [n for n, r in run_c.results.items() if r.ok] == TASKS[:5], _failures(run_c)
    gate = run_c.results["DataGate"]
    assert not gate.ok and "Transform" not in run_c.results
    assert "data validation stopped the run" in gate.logs
    assert "feature 'format': expected one of [png, gif, bmp]" in gate.logs
    assert gate.outputs == {}  # 2.5: a failed task uploads nothing
    record = run_c.results[reports.DATA_REPORT].outputs[reports.REPORT_KEY]
    page = run_c.store.read(record.uri)
    assert "BLOCKED" in page and "expected one of [png, gif, bmp]" in page
    assert record.value("passed") == 0.0


def test_the_output_file_check_is_strict(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"artifacts": {}, "surprise": 1}))
    with pytest.raises(json_format.ParseError):
        Replay._output_file(str(path))
    path.write_text(json.dumps({"artifacts": {"m": {"artifacts": [{"uri": "gs://b/m"}]}}}))
    assert isinstance(Replay._output_file(str(path)), pipeline_spec_pb2.ExecutorOutput)


_PROBE = '''
import json, os, sys
print(json.dumps({"argv": sys.argv, "path": sys.path, "cwd": os.getcwd(),
                  "env": dict(os.environ), "main": sorted(globals()), "name": __name__,
                  "fds": sorted(os.listdir("/proc/self/fd")),
                  "threads": len(os.listdir("/proc/self/task")),
                  "stdin": os.readlink("/proc/self/fd/0")}))
print("to stderr", file=sys.stderr)
if sys.argv[1:] == ["raise"]:
    raise ValueError("probe failed")
sys.exit(int(sys.argv[1]) if sys.argv[1:] else 0)
'''


def test_a_forked_task_sees_what_a_new_process_sees(tmp_path):
    """The fork server's child against `python -m` started afresh: same argv, sys.path,
    working folder, environment, __main__ namespace, descriptors, one thread; stdout and
    stderr apart; exit status, uncaught exception and timeout alike."""
    modules, cwd = tmp_path / "modules", tmp_path / "cwd"
    modules.mkdir()
    cwd.mkdir()
    (modules / "probe.py").write_text(_PROBE)
    (modules / "sleeper.py").write_text("import time\ntime.sleep(30)\n")
    env = dict(launcher_env(), PYTHONPATH=str(modules))
    server = ForkServer(env, ["json"], ["probe"], str(tmp_path / "server.log"))
    try:
        fresh = Pods()
        for args in ([], ["3"], ["raise"]):
            argv = ["python", "-m", "probe", *args]
            got = [pods.run(argv, str(cwd), env, 60) for pods in (fresh, server)]
            (rc, out, err, _), (fork_rc, fork_out, fork_err, cpu) = got
            assert (fork_rc, json.loads(fork_out)) == (rc, json.loads(out)), args
            assert err.splitlines()[0] == fork_err.splitlines()[0] == "to stderr"
            assert err.splitlines()[-1] == fork_err.splitlines()[-1]
            assert cpu is not None and cpu >= 0
        assert rc == 1 and err.splitlines()[-1] == "ValueError: probe failed"
        assert json.loads(out)["threads"] == 1 and json.loads(out)["name"] == "__main__"
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            server.run(["python", "-m", "sleeper"], str(cwd), env, 1)
        assert time.monotonic() - started < 20
        with pytest.raises(AssertionError, match="environment"):
            server.run(["python", "-m", "probe"], str(cwd), dict(env, EXTRA="1"), 60)
    finally:
        server.close()
