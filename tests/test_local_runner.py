"""pipeline/local_runner.py, end to end: the real TFX pipeline under LocalDagRunner.

One slow module-scoped run is shared by the assertions:
  run 1  `imgpipe run --config C` (subprocess): all components execute, a model is pushed;
  run 2  `tfx pipeline create` + `tfx run create --engine local` on the same workdir and
         unchanged data: every component is served from the cache (no re-ingest).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import encode, noise, states_by_run
from pipeline import demo_data
from pipeline.local_runner import config_from_env

VENV_BIN = os.path.dirname(sys.executable)
# Execution type short names in MLMD; the node with id "Trainer" is an ImageTrainer.
COMPONENTS = ("ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
              "DataGate", "Transform", "ImageTrainer", "Evaluator", "ServingPusher")
CLASSES = ("circle", "square", "triangle")


def test_config_from_env_reads_imgpipe_variables(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 3, "data_root": "/from/yaml"}))
    config = config_from_env({"IMGPIPE_DATA_ROOT": "/data", "IMGPIPE_WORKDIR": "/wd",
                              "IMGPIPE_CONFIG": str(cfg)})
    assert (config.data_root, config.workdir, config.training.epochs) == ("/data", "/wd", 3)


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
                  "--workdir", workdir, "--config", str(config_path)],
                 dict(env, TF_CPP_MIN_LOG_LEVEL=""), str(root))  # as a user starts it
    runs_after_first = states_by_run(workdir)

    runner = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipeline",
                          "local_runner.py")
    tfx = os.path.join(VENV_BIN, "tfx")
    _run([tfx, "pipeline", "create", "--engine", "local", "--pipeline_path", runner],
         env, str(root))
    _run([tfx, "run", "create", "--engine", "local", "--pipeline_name", "imgpipe_e2e"],
         env, str(root))
    runs_after_second = states_by_run(workdir)
    serving = os.path.join(workdir, "serving")
    versions_before = sorted(os.listdir(serving))
    # Third: the same model against an absolute threshold it cannot meet (only the Evaluator
    # and Pusher run again); fourth: the settings of run two again, all from the cache.
    imgpipe = [os.path.join(VENV_BIN, "imgpipe"), "run", "--data-root", data_root,
               "--workdir", workdir, "--config", str(config_path)]
    strict = subprocess.run([*imgpipe, "--set", "min_accuracy=1.0", "--set",
                             "min_class_recall=1.0"], env=env, cwd=str(root),
                            capture_output=True, text=True, timeout=1500)
    versions_after_strict = sorted(os.listdir(serving))
    again = subprocess.run(imgpipe, env=env, cwd=str(root), capture_output=True, text=True,
                           timeout=1500)
    history = subprocess.run([os.path.join(VENV_BIN, "imgpipe"), "runs", "--workdir", workdir],
                             env=env, cwd=str(root), capture_output=True, text=True, timeout=600)
    return {"workdir": workdir, "data_root": data_root, "first_stdout": first.stdout,
            "first_stderr": first.stderr, "history": history, "first": runs_after_first,
            "all": runs_after_second, "strict": strict, "again": again,
            "versions": (versions_before, versions_after_strict, sorted(os.listdir(serving)))}


@pytest.mark.slow
def test_a_rerun_that_blesses_the_same_model_does_not_push_it_again(pipeline_runs):
    """Run two (the tfx CLI) re-evaluates the first run's model, now against itself as the
    baseline, and blesses it again: it is already serving, so nothing new is pushed."""
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
    from pipeline import history  # pylint: disable=g-import-not-at-top
    before, _, _ = pipeline_runs["versions"]
    assert len(before) == 1, before
    store = history.open_store(os.path.join(pipeline_runs["workdir"], "metadata.sqlite"))
    types = [t.id for t in store.get_execution_types() if t.name.endswith("Pusher")]
    _, second = sorted((e for e in store.get_executions() if e.type_id in types),
                           key=lambda e: e.id)[:2]
    assert history.state_word(second) == "ran"
    uri = history.artifact_uris(store, second.id, metadata_store_pb2.Event.OUTPUT)[
        "pushed_model"]
    props = history.artifact_properties(store, uri)
    assert props["pushed"] == 0
    assert props["still_serving"] == os.path.join(pipeline_runs["workdir"], "serving", before[0])


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


@pytest.mark.slow
def test_pushed_model_serves_raw_jpeg_and_png_bytes(pipeline_runs):
    import tensorflow as tf
    serving = os.path.join(pipeline_runs["workdir"], "serving")
    model = tf.saved_model.load(os.path.join(serving, sorted(os.listdir(serving))[0]))
    serve = model.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image_bytes"]
    batch = tf.constant([encode(noise(0, 61, 97), "JPEG"), encode(noise(0, 150, 45), "PNG")])
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
    reasons = sorted(lines[1:-1])
    assert len(reasons) == 2, lines
    assert re.fullmatch(r"imgpipe:   - accuracy 0\.\d{3} < min_accuracy 1\.000", reasons[0]), lines
    # Argmax-exact per-class recall, with the classes below the bound named.
    assert re.fullmatch(r"imgpipe:   - recall of class (circle|square|triangle) 0\.\d{3}"
                        r"(, (circle|square|triangle) [01]\.\d{3})* < min_class_recall 1\.000",
                        reasons[1]), lines
    latest = os.path.join(pipeline_runs["workdir"], "serving", max(before, key=int))
    assert lines[-1] == f"imgpipe: still serving: {latest}."
    assert after_strict == before  # nothing pushed


@pytest.mark.slow
def test_a_cached_rerun_that_pushes_nothing_new_says_so_and_is_not_an_error(pipeline_runs):
    again = pipeline_runs["again"]
    assert again.returncode == 0, again.stderr[-3000:]
    before, _, after_again = pipeline_runs["versions"]
    assert after_again == before
    assert any(line.startswith("imgpipe: no new model pushed: nothing changed since the last "
                               "run (cached); serving: ") for line in again.stdout.splitlines())


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


@pytest.mark.slow
def test_run_report_pictures_and_only_misclassified_images_in_its_grid(pipeline_runs):
    import json  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from components.reports import plots, run_page  # pylint: disable=g-import-not-at-top
    from trainer_module import export  # pylint: disable=g-import-not-at-top
    printed = [l for l in pipeline_runs["first_stdout"].splitlines()
               if l.startswith("imgpipe: run report: ")]
    assert len(printed) == 1
    page = printed[0].split(": ", 2)[2]
    folder = os.path.dirname(page)
    text = open(page, encoding="utf-8").read()
    for section in ("Run report", "Blessed", "Confusion matrix", "Per class",
                    "Training curves", "<polyline", "Misclassified eval images",
                    "Data report", "Class balance"):
        assert section in text, section
    for name in (run_page.CONFUSION_PNG, "samples.png"):
        with Image.open(os.path.join(folder, name)) as image:
            image.load()
            assert image.format == "PNG"

    # The latest run's report: its grid holds only images the pushed model gets wrong.
    again = [l for l in pipeline_runs["again"].stdout.splitlines()
             if l.startswith("imgpipe: run report: ")]
    folder = os.path.dirname(again[0].split(": ", 2)[2])
    with open(os.path.join(folder, run_page.RUN_JSON), encoding="utf-8") as f:
        report = json.load(f)
    assert report["blessed"] and report["history"]["loss"]
    tiles = report["misclassified_tiles"]
    assert len(tiles) == min(report["misclassified_total"], plots.GRID_TILES)
    serving = os.path.join(pipeline_runs["workdir"], "serving")
    serve = tf.saved_model.load(os.path.join(serving, max(os.listdir(serving), key=int)))
    for tile in tiles:
        with open(os.path.join(pipeline_runs["data_root"], tile["filename"]), "rb") as f:
            out = serve.signatures["serving_default"](image_bytes=tf.constant([f.read()]))
        probabilities = out[export.PROBABILITIES_KEY].numpy()[0]
        assert CLASSES[tile["label"]] == os.path.dirname(tile["filename"])
        assert probabilities.argmax() == tile["predicted"] != tile["label"]
        assert probabilities.max() == pytest.approx(tile["probability"], abs=1e-4)
    if tiles:
        with Image.open(os.path.join(folder, run_page.MISCLASSIFIED_PNG)) as image:
            image.load()
            assert image.format == "PNG"


@pytest.mark.slow
def test_the_default_console_is_one_line_per_component_and_a_summary(pipeline_runs):
    out, err = pipeline_runs["first_stdout"], pipeline_runs["first_stderr"]
    lines = out.splitlines()
    component_lines = [l for l in lines if l.startswith("  ")]
    nodes = [l.split()[0] for l in component_lines]
    assert nodes == ["ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
                     "DataGate", "Transform", "Trainer", "Evaluator", "Pusher"], out
    assert all(l.split()[1] == "ran" and re.search(r" \d+\.\d s", l) for l in component_lines)
    assert re.search(r"ImageExampleGen +ran .* 42 images \(.*\), 3 classes, 0 quarantined",
                     out), out
    assert re.search(r"Trainer +ran .* val accuracy 0\.\d{3} after 1 epoch", out), out
    assert re.search(r"Evaluator +ran .* accuracy [01]\.\d{3}, blessed", out), out
    assert re.search(r"Pusher +ran .* pushed version \d+", out), out
    # Keras's progress stays (one epoch: Keras prints no "Epoch 1/1" header).
    assert any(re.match(r"2/2 - .*loss: .*val_accuracy", l) for l in lines), out
    # Nothing else: no library warnings, no C++ start-up noise, on either stream.
    others = [l for l in lines + err.splitlines() if l and not (
        l.startswith(("imgpipe: ", "  ", "Epoch ")) or re.match(r"\d+/\d+ - ", l))]
    assert others == [], others
    assert "Warning" not in out + err and "cuDNN" not in out + err
    log_line, total = lines[-2], lines[-1]
    assert log_line.startswith("imgpipe: full log: ") and re.fullmatch(
        r"imgpipe: total (\d+ min )?\d+(\.\d)? s \(exit 0\)", total), lines[-3:]
    log = open(log_line.split(": ", 2)[2], encoding="utf-8").read()
    # The log holds what the console left out: TensorFlow's C++ start-up and library output.
    assert "cuda" in log.lower() and "FutureWarning" in log and "2/2 - " in log
    assert lines[-3].startswith("imgpipe: run report: ")
    assert lines[-4].startswith("imgpipe: data report: ")
    assert lines[-5].startswith("imgpipe: pushed model: ")


@pytest.mark.slow
def test_imgpipe_runs_lists_the_runs_newest_first_with_cached_components(pipeline_runs):
    history = pipeline_runs["history"]
    assert history.returncode == 0, history.stderr[-2000:]
    rows = [l for l in history.stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", l)]
    assert len(rows) == 4, history.stdout  # run, tfx run create, strict, again
    newest, oldest = rows[0], rows[-1]
    assert oldest.endswith("9 ran") and re.search(r" [01]\.\d{3} +\d+ ", oldest), oldest
    assert newest.endswith("9 cached"), newest  # the same settings again: all from the cache
    assert rows[1].endswith("7 cached, 2 ran") and re.search(r" [01]\.\d{3} +- ", rows[1])
    run_id = oldest.split()[0]
    detail = subprocess.run([os.path.join(VENV_BIN, "imgpipe"), "runs", "--workdir",
                             pipeline_runs["workdir"], run_id], capture_output=True, text=True,
                            env=_env(), timeout=600)
    assert detail.returncode == 0 and detail.stdout.startswith(f"run {run_id}: started ")
    assert [l.split()[0] for l in detail.stdout.splitlines()[1:]] == [
        "ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator", "DataGate",
        "Transform", "Trainer", "Evaluator", "Pusher"]
    assert detail.stderr.strip() == ""  # no library noise here either
