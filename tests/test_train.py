"""Tests for trainer_module.train: real training on tiny shards, real processes, real kills.

- resume: a Trainer process is SIGKILLed in stage 2, right after a stage-2 epoch backup; the
  rerun on the same model_run_dir loads the finished head stage instead of training it
  again and continues stage 2 from its backup instead of starting over.
- multi-worker: two processes on 127.0.0.1 train together under MultiWorkerMirroredStrategy
  (TF_CONFIG, strategy "auto") and the chief's SavedModel serves.
The resume test starts from a saved B3 notop weights file (the pretrained path, two stages);
the multi-worker one trains all of B3 from scratch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tf_keras

from tiny_shards import encode, image_array, make_example, write_backbone_weights, \
    write_tiny_examples
from trainer_module import export, model, train
from trainer_module.options import TrainOptions

S = 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a Trainer process runs: train_and_export first thing, as run_fn does in TFX.
SCRIPT = """
import json, sys
import tensorflow as tf
tf.get_logger().setLevel("INFO")  # shows which strategy was built; runs no TF op
from absl import logging
logging.set_verbosity(logging.INFO)  # as TFX's executor runner sets it
from trainer_module import train
args = json.loads(sys.argv[1])
history = train.train_and_export(args["train"], args["eval"], **args["kwargs"])
print("HISTORY " + json.dumps(history), flush=True)
"""


def _env(**extra) -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _start(tmp_path, args: dict, log_name: str, **env) -> tuple:
    script = tmp_path / "trainer_process.py"
    script.write_text(SCRIPT)
    log = open(tmp_path / log_name, "w+", encoding="utf-8")  # pylint: disable=consider-using-with
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(args)], cwd=REPO,
                            env=_env(**env), stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _read(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


# ---------------------------------------------------------------- fast checks, no training

def test_unknown_settings_and_bad_profile_window_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown training settings: \['epoch'\]"):
        train.train_and_export(["x"], ["y"], model_run_dir="r", serving_model_dir="s", epoch=3)
    assert train._profile_batch(None) == 0  # pylint: disable=protected-access
    assert train._profile_batch("10, 20") == "10,20"  # pylint: disable=protected-access
    assert train._profile_batch(5) == 5  # pylint: disable=protected-access
    for bad in ("20,10", "a,b", "0", "1,2,3"):
        with pytest.raises(ValueError, match="profile_batches="):
            train._profile_batch(bad)  # pylint: disable=protected-access


def test_tpu_with_local_paths_fails_before_connecting(tmp_path):
    patterns = write_tiny_examples(tmp_path)
    start = time.monotonic()
    with pytest.raises(ValueError, match="strategy='tpu' needs data and model paths on GCS"):
        train.train_and_export([patterns["train"]], [patterns["eval"]],
                               model_run_dir="gs://b/run", serving_model_dir="gs://b/serve",
                               strategy="tpu")
    assert time.monotonic() - start < 5


def test_steps_come_from_the_ingest_report(tmp_path):
    patterns = write_tiny_examples(tmp_path, num_classes=3, per_class=5)
    assert train._split_size(patterns["train"], "train") == 15  # pylint: disable=protected-access


def test_cosine_schedule_decays_each_stage_to_zero():
    assert train._learning_rate(0.002, "constant", 100) == 0.002  # pylint: disable=protected-access
    schedule = train._learning_rate(0.002, "cosine", 100)  # pylint: disable=protected-access
    assert float(schedule(0)) == pytest.approx(0.002)
    assert float(schedule(50)) == pytest.approx(0.001, rel=1e-3)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="lr_schedule"):
        train._learning_rate(0.002, "step", 100)  # pylint: disable=protected-access


def test_xla_flag_reaches_compile():
    tiny = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(2)])
    for xla in (False, True):
        train._compile(tiny, 1e-3, 0.1, xla)  # pylint: disable=protected-access
        assert tiny.jit_compile is xla
        assert tiny.loss.get_config()["label_smoothing"] == 0.1


def test_training_step_is_traced_once_with_one_fused_adam_op_per_variable():
    model.skip_autograph_for_tf_keras()  # as build_model does; the trace takes 1 s, not 9
    tiny = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(4),
                                tf_keras.layers.Dense(2, activation="softmax")])
    train._compile(tiny, 1e-3, 0.0, False)  # pylint: disable=protected-access
    # Slots exist before fit, so fit's first call does not trace the step twice.
    assert len(tiny.optimizer.variables()) == 1 + 2 * len(tiny.trainable_variables)
    tiny.fit(np.zeros((8, 3), np.float32), np.eye(2, dtype=np.float32)[[0, 1] * 4],
             batch_size=4, epochs=1, verbose=0)
    assert tiny.train_function.experimental_get_tracing_count() == 1
    graph = tiny.train_function.get_concrete_function(
        iter(tf.data.Dataset.from_tensors(
            (np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32))))).graph
    op_types = [op.type for f in [graph, *[graph._functions[n].graph for n in graph._functions]]  # pylint: disable=protected-access
                for op in f.get_operations()]
    assert op_types.count("ResourceApplyAdam") == len(tiny.trainable_variables) == 4


def test_an_xla_compiled_step_gets_the_augmentation_from_the_input_pipeline():
    """TF 2.16 cannot compile RandomRotation/RandomZoom (ImageProjectiveTransformV3) with
    XLA; `xla: true` and every TPU compile the whole step, so the augmentation moves to the
    host's input pipeline there. Lowering to HLO is the XLA compiler's own check, without
    its minutes-long CPU code generation."""
    model.skip_autograph_for_tf_keras()
    cfg = dataclasses.asdict(TrainOptions.from_dict({"image_size": 32}))
    ramp = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 32, 3))
    images = np.stack([ramp, ramp[::-1]])
    source = tf.data.Dataset.from_tensors((images, np.eye(3, dtype=np.float32)[[0, 1]]))
    lowered = {}
    for xla_step in (False, True):
        training_model, inference_model, _, ds = train.build_for_training(
            3, cfg, source, xla_step=xla_step)
        train._compile(training_model, 1e-3, 0.1, xla_step)  # pylint: disable=protected-access
        batch = next(iter(ds))
        training_model.train_step(batch)  # builds the metrics' variables, eagerly
        try:
            tf.function(training_model.train_step, jit_compile=True).experimental_get_compiler_ir(
                batch)(stage="hlo")
            lowered[xla_step] = "lowered"
        except ValueError as err:
            lowered[xla_step] = str(err)
        augmentation = [l.name for l in training_model.layers if l.name == "augmentation"]
        assert augmentation == ([] if xla_step else ["augmentation"])
        assert "augmentation" not in [l.name for l in inference_model.layers]
    assert "ImageProjectiveTransformV3" in lowered[False]
    assert lowered[True] == "lowered"
    pixels = batch[0].numpy()  # the XLA case: uint8 as before, augmented on the host
    assert batch[0].dtype == tf.uint8 and pixels.shape == images.shape
    assert not np.array_equal(pixels, images)
    assert abs(float(pixels.mean()) - float(images.mean())) < 40  # flipped/rotated, not garbage


def test_auto_cache_is_memory_only_while_the_decoded_splits_fit(tmp_path, monkeypatch):
    patterns = write_tiny_examples(tmp_path, per_class=5)  # 2 classes: 10 train + 10 eval
    train_files, eval_files = [patterns["train"]], [patterns["eval"]]
    monkeypatch.setattr(train, "AUTO_CACHE_BYTES", 20 * 16 * 16 * 3)
    assert train.resolve_cache("auto", 16, train_files, eval_files) == "memory"
    assert train.resolve_cache("auto", 17, train_files, eval_files) == "none"
    assert train.resolve_cache("auto", 16, train_files, eval_files, random_crop=True) == "none"
    for explicit in ("none", "memory", "/scratch/c"):
        assert train.resolve_cache(explicit, 17, train_files, eval_files) == explicit
    os.remove(tmp_path / "ingest_report.json")  # unknown size: no cache
    assert train.resolve_cache("auto", 16, train_files, eval_files) == "none"


@pytest.mark.parametrize("interval_s,backed_up,weights_after", [
    (0, ["ckpt-1", "ckpt-2", "ckpt-2"], [False, False, True]),
    (1e9, [None, None, None], [False, False, True]),
    (None, [None, None, None], [False, False, False])])  # None: nothing restarts this run
def test_backups_follow_the_interval_and_weights_are_written_once(tmp_path, interval_s,
                                                                   backed_up, weights_after):
    tiny = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(2)])
    tiny.compile("sgd", "mse")
    backup = tmp_path / "backup_head" / "chief" / "checkpoint"
    weights = tmp_path / "checkpoints" / "head.weights.index"
    seen = []
    def latest_backup():
        return os.path.basename(tf.train.latest_checkpoint(str(backup.parent)) or "") or None

    probe = tf_keras.callbacks.LambdaCallback(  # runs after the project's callbacks
        on_epoch_end=lambda epoch, logs: seen.append((latest_backup(), weights.exists())))
    callbacks = train._callbacks(str(tmp_path), "head", 3, 0, interval_s)  # pylint: disable=protected-access
    epoch_seconds = callbacks[0].seconds
    # None: no backup and no weights callback at all
    assert (callbacks[1] is None) == (callbacks[2] is None) == (interval_s is None)
    tiny.fit(np.zeros((4, 2)), np.zeros((4, 2)), epochs=3, verbose=0,
             callbacks=[*filter(None, callbacks), probe])
    assert [b for b, _ in seen] == backed_up  # never after the last epoch
    assert [w for _, w in seen] == weights_after  # after the stage's last epoch only
    assert not backup.exists()  # a finished stage deletes its backup
    if interval_s is None:
        assert not (tmp_path / "backup_head").exists()
    assert len(epoch_seconds) == 3 and all(t >= 0 for t in epoch_seconds)


# ------------------------------------------------------------------------ real training

@pytest.fixture(scope="module", name="weights_file")
def _weights_file(tmp_path_factory):
    return write_backbone_weights(tmp_path_factory.mktemp("weights") / "b3_notop.h5",
                                  image_size=S)


@pytest.mark.slow
def test_killed_trainer_resumes_from_its_backup(tmp_path, capsys, weights_file):
    """Killed in stage 2: the rerun skips the finished head stage and resumes stage 2."""
    patterns = write_tiny_examples(tmp_path / "data")
    run_dir, serving_dir = tmp_path / "model_run", tmp_path / "serving_model"
    kwargs = dict(model_run_dir=str(run_dir), serving_model_dir=str(serving_dir),
                  image_size=S, batch_size=4, epochs=1, fine_tune_epochs=6,
                  fine_tune_blocks=1, train_steps=1, eval_steps=1, weights=weights_file,
                  backup_interval_s=0,
                  profile_batches="1")
    backup = run_dir / "backup_fine_tune" / "chief" / "checkpoint"

    proc, log = _start(tmp_path, {"train": [patterns["train"]], "eval": [patterns["eval"]],
                                  "kwargs": kwargs}, "first_run.log")
    try:
        deadline = time.monotonic() + 500
        while not backup.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backup.exists(), f"no stage-2 backup:\n{_read(log)[-3000:]}"
        proc.send_signal(signal.SIGKILL)  # no cleanup, no on_train_end: a real crash
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    first_log = _read(log)
    log.close()
    started = [int(n) for n in re.findall(r"^Epoch (\d+)/7", first_log, re.M)]  # stage 2
    assert started and started[0] == 2 and max(started) < 7, first_log[-2000:]
    assert (run_dir / "checkpoints" / "head.done.json").exists() and not serving_dir.exists()

    capsys.readouterr()
    history = train.train_and_export([patterns["train"]], [patterns["eval"]], **kwargs)
    printed = [int(n) for n in re.findall(r"^Epoch (\d+)/7", capsys.readouterr().out, re.M)]
    assert "head" not in history  # finished before the kill: loaded, not retrained
    epochs = history["fine_tune"]["epoch"]  # 0-based epochs this run trained
    assert epochs[0] >= 2 and epochs[-1] == 6 and len(epochs) < 6, (epochs, started)
    # It goes on after the last backed-up epoch: the one after the last finished, or the
    # one the kill interrupted.
    assert printed == [e + 1 for e in epochs] and printed[0] <= max(started) + 1

    # After a clean end: backups gone, stages marked done, TensorBoard + profile, the model.
    assert not backup.exists()
    assert (run_dir / "checkpoints" / "fine_tune.done.json").exists()
    assert (run_dir / "checkpoints" / "fine_tune.weights.index").exists()
    for sub in ("train", "validation"):
        assert any(f.startswith("events.out.tfevents")
                   for f in os.listdir(run_dir / "logs" / sub))
    assert list((run_dir / "logs" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert (serving_dir / "saved_model.pb").exists()
    # Where this (second) call's time went: stage 1 was loaded, so only stage 2 was fit.
    timings = json.loads((run_dir / train.TIMINGS_FILE).read_text())
    assert set(timings) == {"setup", "fit_fine_tune", "epochs_fine_tune", "backups_fine_tune",
                            "weights_fine_tune", "fit_outside_epochs_fine_tune", "export",
                            "total"}
    assert len(timings["epochs_fine_tune"]) == len(epochs)
    assert sum(timings["epochs_fine_tune"]) <= timings["fit_fine_tune"] <= timings["total"]


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_with_two_real_workers(tmp_path):
    """From scratch (weights none): every B3 gradient goes through the all-reduce; the
    input zooms while decoding (random_crop), each worker on its own shard."""
    patterns = write_tiny_examples(tmp_path / "data")
    run_dir, serving_dir = tmp_path / "model_run", tmp_path / "serving_model"
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = {"train": [patterns["train"]], "eval": [patterns["eval"]],
            "kwargs": dict(model_run_dir=str(run_dir), serving_model_dir=str(serving_dir),
                           image_size=S, batch_size=4, epochs=1, train_steps=2, eval_steps=1,
                           strategy="auto", backup_interval_s=0,  # a restartable run
                           random_crop=True)}
    workers = [_start(tmp_path, args, f"worker{i}.log", TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})) for i in range(2)]
    try:
        deadline = time.monotonic() + 500
        while any(p.poll() is None for p, _ in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
            if any(p.poll() not in (None, 0) for p, _ in workers):
                break  # one failed: the other would wait for it forever
    finally:
        for p, _ in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [_read(log) for _, log in workers]
    for _, log in workers:
        log.close()
    histories = []
    for (p, _), text in zip(workers, logs):
        assert p.returncode == 0, text[-4000:]
        assert "MultiWorkerMirroredStrategy with cluster_spec" in text
        assert "num_workers = 2" in text
        # random_crop: the zoom moves from the model into the input, not into both.
        assert ("Augmentation in the model: RandomFlip, RandomRotation, RandomContrast, "
                "RandomZoom while decoding (random_crop).") in text
        histories.append(json.loads(text.split("HISTORY ", 1)[1].splitlines()[0]))
    assert histories[0]["head"]["epoch"] == [0]
    # Each worker read its own shard of the data, yet both report the same (all-reduced)
    # loss and metrics: they trained one model together.
    assert histories[0] == histories[1]
    # Worker 0 is the chief: its SavedModel is the one kept.
    loaded = tf.saved_model.load(str(serving_dir))
    images = [encode(image_array(0, 40, 52, seed=3), "JPEG"),
              encode(image_array(1, 61, 30, seed=4), "PNG")]
    served = loaded.signatures[export.SERVING_SIGNATURE](image_bytes=tf.constant(images))
    # No Transform graph here: from_examples decodes with image_ops, exactly like serving.
    examples = tf.constant([make_example(b, i, "c", "x", (1, 1)) for i, b in enumerate(images)])
    evaluated = loaded.signatures[export.EXAMPLES_SIGNATURE](examples=examples)
    np.testing.assert_array_equal(served["probabilities"].numpy(),
                                  evaluated["probabilities"].numpy())
    assert served["probabilities"].shape == (2, 2)
    assert (run_dir / "checkpoints" / "head.done.json").exists()
    assert not any(n.startswith("workertemp") for n in os.listdir(run_dir / "backup_head"))
