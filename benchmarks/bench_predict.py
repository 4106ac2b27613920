"""`imgpipe predict` throughput against calling serving_default directly, same files, one run.

    .venv/bin/python benchmarks/bench_predict.py --model DIR [--files 2000] [--rounds 3]

DIR is any pushed model (e.g. demo_workdir/serving/<version> after `make demo`). The
benchmark writes --files photo-like JPEGs (~450x360, benchmarks/photos.py) into a temporary
folder, then times, round-robin so background load hits both alike:

  direct           read 64 files, serving_default(image_bytes=...), repeat
  imgpipe predict  pipeline.predict.predict(model, [folder], batch_size=64): the same calls
                   plus the folder walk, the per-file format check and the result dicts

and reports images/s (best round) and their ratio. Results: BENCHMARKS.md, "Predict".
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from photos import photo_jpeg  # noqa: E402  (benchmarks/ is sys.path[0] when run)
from pipeline import predict  # noqa: E402
from trainer_module import export  # noqa: E402


def _direct(model_dir: str, files: list, batch: int = 64) -> int:
    serve = tf.saved_model.load(model_dir).signatures[export.SERVING_SIGNATURE]
    done = 0
    for start in range(0, len(files), batch):
        data = []
        for path in files[start:start + batch]:
            with open(path, "rb") as f:
                data.append(f.read())
        serve(image_bytes=tf.constant(data))["probabilities"].numpy()
        done += len(data)
    return done


def _predict(model_dir: str, folder: str) -> int:
    return sum("label" in r for r in predict.predict(model_dir, [folder], batch_size=64))


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for i in range(args.files):
            path = os.path.join(folder, f"{i:05d}.jpg")
            with open(path, "wb") as f:
                f.write(photo_jpeg(360 + i % 17, 450 + i % 23, seed=i))
            files.append(path)
        best = {"direct": 0.0, "imgpipe predict": 0.0}
        for _ in range(args.rounds):
            for name, fn in (("direct", lambda: _direct(args.model, files)),
                             ("imgpipe predict", lambda: _predict(args.model, folder))):
                start = time.perf_counter()
                count = fn()
                assert count == args.files, (name, count)
                best[name] = max(best[name], count / (time.perf_counter() - start))
    for name, rate in best.items():
        print(f"{name:16s} {rate:8.1f} img/s")
    print(f"ratio predict/direct: {best['imgpipe predict'] / best['direct']:.2f}")
    return best


if __name__ == "__main__":
    run()
