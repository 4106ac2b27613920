"""pipeline/local_runner.py, end to end: the real TFX pipeline under LocalDagRunner.

One slow module-scoped run is shared by the assertions:
  run 1  `imgpipe run --config C` (subprocess): all components execute, a model is pushed;
  run 2  `tfx pipeline create` + `tfx run create --engine local` on the same workdir and
         unchanged data: every component is served from the cache (no re-ingest).
"""
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import demo_data
from pipeline.local_runner import config_from_env

VENV_BIN = os.path.dirname(sys.executable)
# Execution type short names in MLMD; the node with id "Trainer" is an ImageTrainer.
COMPONENTS = ("ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
              "DataGate", "Transform", "ImageTrainer", "Evaluator", "Pusher")
CLASSES = ("circle", "square", "triangle")


def test_config_from_env_reads_imgpipe_variables(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 3, "data_root": "/from/yaml"}))
    config = config_from_env({"IMGPIPE_DATA_ROOT": "/data", "IMGPIPE_WORKDIR": "/wd",
                              "IMGPIPE_CONFIG": str(cfg)})
    assert (config.data_root, config.workdir, config.epochs) == ("/data", "/wd", 3)


def test_config_from_env_requires_settings():
    with pytest.raises(ValueError, match="IMGPIPE"):
        config_from_env({})


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    env.update(extra)
    return env


def _run(cmd, env, cwd):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _executions_by_run(metadata_path):
    """{run_id: {component type short name: state name}} from the real MLMD store."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    store = metadata_store.MetadataStore(config)
    types = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
    runs = {}
    for context in store.get_contexts_by_type("pipeline_run"):
        states = {}
        for execution in store.get_executions_by_context(context.id):
            state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
            states[types[execution.type_id]] = state
        runs[context.name] = states
    return runs


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data_root = str(root / "data")
    demo_data.generate_dataset(data_root, classes=CLASSES, images_per_class=14,
                               min_side=40, max_side=120, png_fraction=0.3, seed=3)
    workdir = str(root / "work")
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "pipeline_name": "imgpipe_e2e", "image_size": 32, "batch_size": 8, "epochs": 1,
        "train_steps": 2, "eval_steps": 1, "min_accuracy": 0.0, "max_accuracy_drop": 1.0,
        "augment": False, "ingest_beam_args": ["--direct_running_mode=in_memory"],
    }))
    env = _env(IMGPIPE_DATA_ROOT=data_root, IMGPIPE_WORKDIR=workdir,
               IMGPIPE_CONFIG=str(config_path), LOCAL_HOME=str(root / "tfx_home"))

    first = _run([os.path.join(VENV_BIN, "imgpipe"), "run", "--data-root", data_root,
                  "--workdir", workdir, "--config", str(config_path)], env, str(root))
    runs_after_first = _executions_by_run(os.path.join(workdir, "metadata.sqlite"))

    runner = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipeline",
                          "local_runner.py")
    tfx = os.path.join(VENV_BIN, "tfx")
    _run([tfx, "pipeline", "create", "--engine", "local", "--pipeline_path", runner],
         env, str(root))
    _run([tfx, "run", "create", "--engine", "local", "--pipeline_name", "imgpipe_e2e"],
         env, str(root))
    runs_after_second = _executions_by_run(os.path.join(workdir, "metadata.sqlite"))
    serving = os.path.join(workdir, "serving")
    versions_before = sorted(os.listdir(serving))
    # Third: the same model against an absolute threshold it cannot meet (only the Evaluator
    # and Pusher run again); fourth: the settings of run two again, all from the cache.
    imgpipe = [os.path.join(VENV_BIN, "imgpipe"), "run", "--data-root", data_root,
               "--workdir", workdir, "--config", str(config_path)]
    strict = subprocess.run([*imgpipe, "--set", "min_accuracy=1.0"], env=env, cwd=str(root),
                            capture_output=True, text=True, timeout=1500)
    versions_after_strict = sorted(os.listdir(serving))
    again = subprocess.run(imgpipe, env=env, cwd=str(root), capture_output=True, text=True,
                           timeout=1500)
    return {"workdir": workdir, "first_stdout": first.stdout, "first": runs_after_first,
            "all": runs_after_second, "strict": strict, "again": again,
            "versions": (versions_before, versions_after_strict, sorted(os.listdir(serving)))}


@pytest.mark.slow
def test_first_run_executes_all_eight_components(pipeline_runs):
    (states,) = pipeline_runs["first"].values()
    for component in COMPONENTS:
        assert states.get(component) == "COMPLETE", (component, states)


@pytest.mark.slow
def test_model_pushed_to_workdir_serving(pipeline_runs):
    serving = os.path.join(pipeline_runs["workdir"], "serving")
    versions = sorted(os.listdir(serving))
    assert versions and all(v.isdigit() for v in versions)
    assert os.path.exists(os.path.join(serving, versions[0], "saved_model.pb"))
    assert f"pushed model: {os.path.join(serving, versions[0])}" in pipeline_runs["first_stdout"]


def _encoded(fmt, size):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.slow
def test_pushed_model_serves_raw_jpeg_and_png_bytes(pipeline_runs):
    import tensorflow as tf
    serving = os.path.join(pipeline_runs["workdir"], "serving")
    model = tf.saved_model.load(os.path.join(serving, sorted(os.listdir(serving))[0]))
    serve = model.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image_bytes"]
    batch = tf.constant([_encoded("JPEG", (97, 61)), _encoded("PNG", (45, 150))])
    out = serve(image_bytes=batch)
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (2, len(CLASSES)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    assert (probabilities >= 0).all()
    labels = [label.decode("utf-8") for label in out["label"].numpy()]
    assert set(labels) <= set(CLASSES)
    assert labels == [CLASSES[i] for i in probabilities.argmax(axis=1)]


@pytest.mark.slow
def test_second_run_via_tfx_cli_reuses_cache(pipeline_runs):
    runs = pipeline_runs["all"]
    assert len(runs) == 2
    second_id = (set(runs) - set(pipeline_runs["first"])).pop()
    second = runs[second_id]
    # Unchanged data: nothing is re-ingested, re-transformed or re-trained.
    for component in COMPONENTS[:7]:
        assert second.get(component) == "CACHED", (component, second)
    # The Evaluator's inputs did change: run 1 had no baseline, run 2 has run 1's blessed
    # model as its baseline, so TFX evaluates once more (a third run would be all cached).
    assert second.get("Evaluator") in ("CACHED", "COMPLETE"), second


@pytest.mark.slow
def test_an_unblessed_model_has_a_reason_and_the_serving_model_stays(pipeline_runs):
    strict = pipeline_runs["strict"]
    assert strict.returncode == 1, strict.stderr[-3000:]
    lines = [l for l in strict.stderr.splitlines() if l.startswith("imgpipe:")]
    before, after_strict, after_again = pipeline_runs["versions"]
    assert lines[0] == "imgpipe: no model pushed: the Evaluator did not bless it:"
    assert re.fullmatch(r"imgpipe:   - accuracy 0\.\d{3} < min_accuracy 1\.000", lines[1]), lines
    latest = os.path.join(pipeline_runs["workdir"], "serving", max(before, key=int))
    assert lines[-1] == f"imgpipe: still serving: {latest}."
    assert after_strict == before  # nothing pushed


@pytest.mark.slow
def test_a_cached_rerun_that_pushes_nothing_new_says_so_and_is_not_an_error(pipeline_runs):
    again = pipeline_runs["again"]
    assert again.returncode == 0, again.stderr[-3000:]
    before, _, after_again = pipeline_runs["versions"]
    assert after_again == before
    assert again.stdout.strip().splitlines()[-1].startswith(
        "imgpipe: no new model pushed: nothing changed since the last run (cached); serving: ")


@pytest.mark.slow
def test_per_class_metrics_match_a_direct_computation_with_the_pushed_model(pipeline_runs):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from pipeline import blessing  # pylint: disable=g-import-not-at-top
    from trainer_module import dataset, export  # pylint: disable=g-import-not-at-top
    evaluation = blessing.last_evaluation(pipeline_runs["workdir"])
    serving = os.path.join(pipeline_runs["workdir"], "serving")
    model = tf.saved_model.load(os.path.join(serving, max(os.listdir(serving), key=int)))
    files = dataset.list_shards(os.path.join(evaluation["examples"], "Split-eval"))
    direct = {}
    for batch in tf.data.TFRecordDataset(files, dataset.shard_compression(files)).batch(16):
        out = model.signatures[export.EXAMPLES_SIGNATURE](examples=batch)
        predicted = out[export.PROBABILITIES_KEY].numpy().argmax(axis=1)
        actual = [int(dataset.parse_image_label(s)[1]) for s in batch]
        for a, p in zip(actual, predicted):
            direct[(a, int(p))] = direct.get((a, int(p)), 0) + 1
    assert {k: round(v) for k, v in evaluation["matrix"].items() if v} == direct
    assert list(evaluation["per_class"]) == list(CLASSES)
    for i, name in enumerate(CLASSES):
        support = sum(n for (a, _), n in direct.items() if a == i)
        recall = direct.get((i, i), 0) / support if support else 0.0
        assert evaluation["per_class"][name]["recall"] == pytest.approx(recall, abs=1e-6)
        assert evaluation["per_class"][name]["support"] == support
    assert "imgpipe: eval precision/recall/F1 per class: circle " in pipeline_runs["again"].stdout
