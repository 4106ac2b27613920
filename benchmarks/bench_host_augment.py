"""What the augmentation costs the host when XLA compiles the training step (`xla: true`, any
TPU), so that it runs in the input pipeline (`train._augment_on_host`) instead of the model.

    .venv/bin/python benchmarks/bench_host_augment.py [--size 300] [--batch 32]
        [--batches 30] [--rounds 3]

Side by side in one process, round-robin, best round each: batches of uint8 images already
in memory (what a warm `cache="memory"` epoch hands over), the same with the host
augmentation (flip, rotation, zoom, contrast), and without the zoom (`random_crop: true`,
which zooms while decoding instead). Reported: img/s and this process's CPU ms per image
(all threads). Results: BENCHMARKS.md, "Augmentation on the host".
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer_module import model, train  # noqa: E402


def _pipelines(size: int, batch: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = np.zeros((batch, 3), np.float32)
    warm = tf.data.Dataset.from_tensors((images, labels)).repeat()
    def augmented(random_crop):
        augment = train._augment_on_host(  # pylint: disable=protected-access
            model.augmentation(random_crop, dtype="float32"))
        return warm.map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    return {
        "batches in memory (warm cache)": warm.prefetch(tf.data.AUTOTUNE),
        "+ host augmentation (flip, rotation, zoom, contrast)": augmented(False),
        "+ host augmentation without the zoom (random_crop)": augmented(True),
    }


def _time(ds, batches: int, batch: int) -> tuple:
    iterator = iter(ds)
    for _ in range(3):  # lead-in: threads started, the map traced
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return batches * batch / wall, 1000 * cpu / (batches * batch)


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    pipelines = _pipelines(args.size, args.batch)
    best = {name: (0.0, float("inf")) for name in pipelines}
    for _ in range(args.rounds):
        for name, ds in pipelines.items():
            img_s, cpu_ms = _time(ds, args.batches, args.batch)
            best[name] = (max(best[name][0], img_s), min(best[name][1], cpu_ms))
    print(f"S={args.size}, batch {args.batch}, {os.cpu_count()} CPUs, best of {args.rounds}")
    print("| pipeline | img/s | CPU ms/img |\n|---|---:|---:|")
    for name, (img_s, cpu_ms) in best.items():
        print(f"| {name} | {img_s:,.0f} | {cpu_ms:.2f} |")
    return {name: {"img_s": v[0], "cpu_ms": v[1]} for name, v in best.items()}


if __name__ == "__main__":
    print(json.dumps(run()))
