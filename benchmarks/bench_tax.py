"""The orchestration tax: a full `imgpipe run` against a plain Keras script, same model,
same folder, same epochs, one run.

    .venv/bin/python benchmarks/bench_tax.py [--images 2000] [--classes 5] [--size 64]
        [--epochs 5] [--batch 32] [--rounds 1] [--workdir /tmp/imgpipe_bench_tax]

Data: `--images` learnable images in `--classes` class folders (pipeline/demo_data.py:
shapes and stripe patterns on noisy photo-like gradients, 160-400 px JPEG/PNG), generated
once into WORKDIR/data and reused.

  script    a fresh process: tf_keras.utils.image_dataset_from_directory with an 80/20
            split, the project's EfficientNetB3 + head (trainer_module.model.build_model,
            from scratch, same dropout/augmentation settings as the pipeline's defaults,
            compiled as run_fn compiles it), fit for --epochs, save a SavedModel
  pipeline  `imgpipe run` on the same folder with the same size/batch/epochs: ingest,
            statistics, schema, validation, Transform, Trainer, Evaluator, Pusher

Both are timed from process start to exit (imports included), in `--rounds` pairs with
the order alternating (script first in odd rounds), since the machine's speed drifts.
Reported per round: the wall-time ratio, each side's final eval accuracy (the script's val
split vs the pipeline's eval split: both 20%, chosen differently), the script's per-step
time, and the pipeline's per-component seconds from MLMD and its Trainer's timings.json;
then the median ratio. Results: BENCHMARKS.md, "Orchestration tax".
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
VENV_BIN = os.path.dirname(sys.executable)

SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
import tf_keras
from trainer_module import model, train
from trainer_module.options import TrainOptions
data, size, batch, epochs, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), sys.argv[6]
train_ds, val_ds = tf_keras.utils.image_dataset_from_directory(
    data, validation_split=0.2, subset="both", seed=1, image_size=(size, size),
    batch_size=batch, label_mode="categorical")
classes = len(train_ds.class_names)
to_uint8 = lambda x, y: (tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8), y)
train_ds = train_ds.map(to_uint8).prefetch(tf.data.AUTOTUNE)
val_ds = val_ds.map(to_uint8).prefetch(tf.data.AUTOTUNE)
d = TrainOptions()
training_model, inference_model, _ = model.build_model(
    classes, image_size=size, weights="none", dropout=d.dropout, augment=d.augment)
train._compile(training_model, d.learning_rate, d.label_smoothing, False)
start = time.perf_counter()
epoch_s = []
class Clock(tf_keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): epoch_s.append(round(time.perf_counter() - self.t, 2))
fit = training_model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2,
                         callbacks=[Clock()])
fit_s = time.perf_counter() - start
inference_model.save(out, save_format="tf", save_traces=False)
steps = sum(1 for _ in train_ds) * epochs
print("RESULT " + json.dumps({"val_accuracy": fit.history["val_accuracy"][-1],
                              "fit_s": fit_s, "epoch_s": epoch_s, "steps": steps}))
"""


def _timed(cmd, log_path, env=None) -> float:
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: ran, but the Evaluator did not bless
        raise SystemExit(f"{cmd[0]} failed (rc {proc.returncode}); see {log_path}")
    return wall


def _pipeline_breakdown(workdir: str) -> dict:
    from pipeline import blessing, history  # pylint: disable=g-import-not-at-top
    from trainer_module import features  # pylint: disable=g-import-not-at-top
    store = history.open_store(features.metadata_path(workdir))
    run = history.runs(store)[0]
    seconds = {node: round(history.seconds(e), 1) for node, e in run["nodes"]}
    evaluation = blessing.last_evaluation(workdir)
    found = glob.glob(os.path.join(workdir, "pipeline_root", "Trainer", "model_run", "*",
                                   "timings.json"))
    trainer = {}
    if found:
        with open(max(found, key=os.path.getmtime), encoding="utf-8") as f:
            trainer = json.load(f)
        trainer["epochs_sum"] = round(sum(trainer.get("epochs_head", [])), 1)
    return {"components": seconds, "trainer_phases": trainer,
            "accuracy": blessing.accuracies(evaluation["evaluation"])["candidate"]}


def _script(args, data: str, env: dict, log: str) -> dict:
    out = os.path.join(args.workdir, "script_model")
    shutil.rmtree(out, ignore_errors=True)
    wall = _timed([sys.executable, "-c", SCRIPT, REPO, data, str(args.size), str(args.batch),
                   str(args.epochs), out], log, env)
    with open(log, encoding="utf-8") as f:
        script = json.loads(re.findall(r"^RESULT (.*)$", f.read(), re.M)[-1])
    return {"wall_s": round(wall, 1), "accuracy": round(script["val_accuracy"], 3),
            "fit_s": round(script["fit_s"], 1), "epochs_s": script["epoch_s"],
            "s_per_step": round(script["fit_s"] / script["steps"], 3)}


def _pipeline(args, data: str, env: dict, log: str) -> dict:
    work = os.path.join(args.workdir, "pipeline_work")
    shutil.rmtree(work, ignore_errors=True)
    wall = _timed([os.path.join(VENV_BIN, "imgpipe"), "run", "--data-root", data,
                   "--workdir", work, "--image-size", str(args.size), "--epochs",
                   str(args.epochs), "--batch-size", str(args.batch)], log, env)
    breakdown = _pipeline_breakdown(work)
    return {"wall_s": round(wall, 1), "accuracy": round(breakdown["accuracy"], 3),
            "components": breakdown["components"],
            "trainer_phases": breakdown["trainer_phases"]}


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1,
                        help="script/pipeline pairs, the order alternating; the median "
                             "ratio is reported")
    parser.add_argument("--workdir", default="/tmp/imgpipe_bench_tax")
    args = parser.parse_args(argv)
    from pipeline import demo_data  # pylint: disable=g-import-not-at-top
    data = os.path.join(args.workdir, "data")
    names = [f"class_{i}" for i in range(args.classes)]
    if not os.path.isdir(data):
        demo_data.generate_dataset(data, classes=names,
                                   images_per_class=args.images // args.classes,
                                   min_side=160, max_side=400)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    rounds = []
    for r in range(args.rounds):
        sides = {}
        order = ("script", "pipeline") if r % 2 == 0 else ("pipeline", "script")
        for side in order:
            log = os.path.join(args.workdir, f"{side}-{r + 1}.log")
            sides[side] = (_script if side == "script" else _pipeline)(args, data, env, log)
            print(f"round {r + 1} {side}: {sides[side]['wall_s']} s, accuracy "
                  f"{sides[side]['accuracy']}", file=sys.stderr, flush=True)
        rounds.append({"order": list(order), **sides,
                       "ratio": round(sides["pipeline"]["wall_s"] / sides["script"]["wall_s"],
                                      3)})
    ratios = sorted(r["ratio"] for r in rounds)
    result = {"ratio_median": ratios[len(ratios) // 2] if len(ratios) % 2 else
              round((ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2, 3),
              "ratios": [r["ratio"] for r in rounds], "rounds": rounds}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run()
