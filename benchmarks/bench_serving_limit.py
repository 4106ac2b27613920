"""A decompression bomb sent to serving_default: two checkouts side by side.

    .venv/bin/python benchmarks/bench_serving_limit.py --baseline /tmp/imgpipe_base \
        [--rounds 3] [--side 20000]

`--baseline` is another checkout of this repository (e.g. `git worktree add
/tmp/imgpipe_base <commit before the limit>`); this checkout is the candidate. The request is
one valid `side` x `side` black RGB PNG (about 1 MB on the wire; 20000 x 20000 decodes to
1.2 GB of pixels). Each measurement is a fresh process: build EfficientNetB3 at 32 px from
scratch, export it with the checkout's `export_model`, load it, warm it up on a small JPEG,
time a normal request (64 random 400 x 300 JPEGs, the median of 7, what the header check
costs every request), then time the one bomb request and read the process's peak resident
memory before and after it (`ru_maxrss`). The candidate refuses the request from its header; the baseline decodes it.
Rounds alternate baseline and candidate. Results: BENCHMARKS.md, "Serving pixel limit".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import io, json, os, resource, sys, tempfile, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, sys.argv[1])
import numpy as np
from PIL import Image
import tensorflow as tf
from trainer_module import export, model
_, inference_model, _ = model.build_model(2, image_size=32, weights="none")
out = os.path.join(tempfile.mkdtemp(prefix="bench_limit_"), "model")
export.export_model(inference_model, ["a", "b"], 32, out)
serve = tf.saved_model.load(out).signatures["serving_default"]
buf = io.BytesIO()
Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(buf, format="JPEG")
serve(image_bytes=tf.constant([buf.getvalue()]))
rng = np.random.default_rng(0)
batch = []
for i in range(64):
    photo = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo, "JPEG")
    batch.append(photo.getvalue())
batch = tf.constant(batch)
serve(image_bytes=batch)
times = []
for _ in range(7):
    start = time.perf_counter()
    serve(image_bytes=batch)
    times.append(time.perf_counter() - start)
normal_s = sorted(times)[len(times) // 2]
with open(sys.argv[2], "rb") as f:
    bomb = f.read()
before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
try:
    serve(image_bytes=tf.constant([bomb]))
    outcome = "classified"
except tf.errors.InvalidArgumentError as err:
    outcome = "refused" if "declares more than" in err.message else "decode error"
seconds = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({"outcome": outcome, "request_s": seconds, "batch64_s": normal_s,
                              "peak_rss_mb": peak_mb, "peak_growth_mb": peak_mb - before_mb}))
"""


def write_png(path: str, side: int) -> None:
    """A complete black RGB PNG, rows compressed as they are made (no 1.2 GB buffer)."""
    import struct  # pylint: disable=g-import-not-at-top

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    packer, row = zlib.compressobj(9), bytes(1 + 3 * side)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _measure(repo: str, png: str) -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", CHILD, repo, png], capture_output=True,
                          text=True, env=env, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"the request in {repo} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="another checkout of this repo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=20000)
    args = parser.parse_args(argv)
    png = os.path.join(tempfile.mkdtemp(prefix="bench_limit_"), "bomb.png")
    write_png(png, args.side)
    print(f"request: {args.side} x {args.side} PNG, {os.path.getsize(png) / 1e6:.2f} MB",
          flush=True)
    rounds = {"baseline": [], "candidate": []}
    for i in range(args.rounds):
        for name, repo in (("baseline", args.baseline), ("candidate", REPO)):
            rounds[name].append(_measure(repo, png))
            print(f"round {i + 1} {name}: {json.dumps(rounds[name][-1])}", flush=True)
    result = {"rounds": rounds}
    for key in ("request_s", "peak_growth_mb", "batch64_s"):
        medians = {n: statistics.median(r[key] for r in rs) for n, rs in rounds.items()}
        result[key] = {**{n: round(m, 3) for n, m in medians.items()},
                       "ratio": round(medians["candidate"] / max(medians["baseline"], 1e-9),
                                      4)}
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    return result


if __name__ == "__main__":
    run()
