"""EfficientNetB3 training throughput on CPU: batch size x XLA x image size, one run.

    .venv/bin/python benchmarks/bench_train_cpu.py [--sizes 64,300] [--batches 16,32,64]
        [--steps 6] [--rounds 2] [--xla off,on]

Each configuration trains the project's real training model (trainer_module.model.build_model,
from scratch, augmentation off, compiled by train._compile as run_fn does) on synthetic uint8
images held in memory (tf.data.Dataset.from_tensors(...).repeat()), so only the model's
compute is timed, not decoding. A configuration runs in its own process (XLA state and
memory do not leak between them), configurations are taken round-robin for --rounds, and
each keeps its best round. Per configuration it reports the first epoch's wall time (build,
trace, compile, first steps) and the steady-state images/s over --steps steps after it.
Results: BENCHMARKS.md, "CPU training".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
from trainer_module import model, train
size, batch, xla, steps = (int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1",
                           int(sys.argv[5]))
images = tf.zeros([batch, size, size, 3], tf.uint8) + 127
labels = tf.one_hot(tf.zeros([batch], tf.int32), 3)
ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
start = time.perf_counter()
training_model, _, _ = model.build_model(3, image_size=size, augment=False)
train._compile(training_model, 1e-3, 0.0, xla)
training_model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
first = time.perf_counter() - start
start = time.perf_counter()
training_model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
steady = time.perf_counter() - start
print("RESULT " + json.dumps({"first_s": first, "img_s": steps * batch / steady}))
"""


def measure(size: int, batch: int, xla: bool, steps: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, REPO, str(size), str(batch),
                           "1" if xla else "0", str(steps)], capture_output=True, text=True,
                          env=env, check=False)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if not line:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(line[0][7:])


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,300")
    parser.add_argument("--batches", default="16,32,64")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--xla", default="off,on", help="off, on or off,on")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    configs = [(s, b, x) for s in map(int, args.sizes.split(","))
               for b in map(int, args.batches.split(","))
               for x in (v == "on" for v in args.xla.split(","))]
    best = {}
    for _ in range(args.rounds):
        for config in configs:
            result = measure(*config, steps=args.steps)
            print(f"measured {config}: {result}", flush=True)  # a long run keeps what it has
            kept = best.get(config)
            if "error" in result and kept is None:
                best[config] = result
            elif "error" not in result and (kept is None or "error" in kept
                                            or result["img_s"] > kept["img_s"]):
                best[config] = result
    print(f"{'size':>5} {'batch':>5} {'xla':>5} {'img/s':>8} {'x no-XLA':>9} {'first epoch s':>14}")
    for (size, batch, xla), result in best.items():
        if "error" in result:
            print(f"{size:>5} {batch:>5} {str(xla):>5}  error: {result['error']}")
            continue
        plain = best.get((size, batch, False), {})
        ratio = result["img_s"] / plain["img_s"] if "img_s" in plain else float("nan")
        print(f"{size:>5} {batch:>5} {str(xla):>5} {result['img_s']:8.1f} {ratio:9.2f} "
              f"{result['first_s']:14.1f}")
    out = {f"{s}px/b{b}/{'xla' if x else 'plain'}": r for (s, b, x), r in best.items()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    run()
