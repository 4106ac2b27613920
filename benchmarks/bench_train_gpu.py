"""B3 training throughput: `make_dataset` input against synthetic in-memory input, one run.

    .venv/bin/python benchmarks/bench_train_gpu.py [--size 300] [--batch 32] [--steps 30]
        [--warmup 10] [--rounds 2] [--count 2048] [--precision auto] [--workdir DIR]

Made for a GPU machine (the issue's goal: make_dataset >= 0.95x synthetic at 300 px with
mixed precision); it runs anywhere, and `precision=auto` picks the project's policy for the
device (mixed_float16 on a GPU, float32 on a CPU). Data: bench_input.py's "imagenet" set of
photo-like ~450x360 JPEGs (`--count` of them, generated once into WORKDIR) as Split-train
shards. Each configuration is a fresh process training the project's real training model
(trainer_module.model.build_model from scratch, augmentation on, compiled by train._compile):

  synthetic     one uint8 batch held in memory, repeated (only the model's compute)
  make_dataset  trainer_module.dataset.make_dataset over the shards, training=True, no cache
                (every image read and decoded as a first epoch on real data would be)

Per configuration: a --warmup-step fit (build, trace, compile, autotune), then the images/s
of a --steps-step fit. Configurations are taken round-robin for --rounds and keep their best
round. Reported: both rates and make_dataset / synthetic.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
from trainer_module import dataset, model, strategy as strategy_lib, train
kind, shards, size, batch, steps, warmup, precision = (
    sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
    int(sys.argv[7]), sys.argv[8])
strategy = tf.distribute.get_strategy()
policy = strategy_lib.precision_policy(precision, strategy)
strategy_lib.set_precision(policy)
classes = len(dataset.read_labels([shards]))
one_hot = lambda x, y: (x, tf.one_hot(y, classes))
if kind == "synthetic":
    images = tf.zeros([batch, size, size, 3], tf.uint8) + 127
    labels = tf.zeros([batch], tf.int64)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat().map(one_hot)
else:
    ds = dataset.make_dataset(shards, image_size=size, batch_size=batch,
                              training=True).map(one_hot)
training_model, _, _ = model.build_model(classes, image_size=size, augment=True)
train._compile(training_model, 1e-3, 0.1, False)
start = time.perf_counter()
training_model.fit(ds, epochs=1, steps_per_epoch=warmup, verbose=0)
first = time.perf_counter() - start
start = time.perf_counter()
training_model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
seconds = time.perf_counter() - start
print("RESULT " + json.dumps({"img_s": steps * batch / seconds, "warmup_s": first,
                              "policy": policy, "device": strategy_lib.accelerator(strategy)}))
"""

KINDS = ("synthetic", "make_dataset")


def measure(kind: str, shards: str, args) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, REPO, kind, shards, str(args.size), str(args.batch),
         str(args.steps), str(args.warmup), args.precision],
        capture_output=True, text=True, env=env, check=False)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if not line:
        raise SystemExit(f"{kind} failed: " + "\n".join(proc.stderr.strip().splitlines()[-5:]))
    return json.loads(line[0][7:])


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--count", type=int, default=2048)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workdir", default="/tmp/imgpipe_bench_train_gpu")
    args = parser.parse_args(argv)
    import bench_input  # pylint: disable=g-import-not-at-top  (benchmarks/ is sys.path[0])
    shards = os.path.join(bench_input.build_set(args.workdir, "imagenet", args.count,
                                                num_shards=8, max_side=800)["shards"],
                          "Split-train")
    best = {}
    for r in range(args.rounds):
        for kind in KINDS:
            got = measure(kind, shards, args)
            print(f"round {r + 1} {kind}: {got}", file=sys.stderr, flush=True)
            if kind not in best or got["img_s"] > best[kind]["img_s"]:
                best[kind] = got
    result = {"size": args.size, "batch": args.batch, "steps": args.steps,
              **{kind: {k: round(v, 2) if isinstance(v, float) else v
                        for k, v in best[kind].items()} for kind in KINDS},
              "ratio": round(best["make_dataset"]["img_s"] / best["synthetic"]["img_s"], 3)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run()
