"""Export cost: `trainer_module.export.export_model` of two checkouts, side by side.

    .venv/bin/python benchmarks/bench_export.py --baseline /tmp/imgpipe_base [--rounds 3]
        [--size 64] [--classes 5]

`--baseline` is another checkout of this repository (e.g. `git worktree add
/tmp/imgpipe_base HEAD~1`); this checkout is the candidate. Each measurement is a fresh
process: build the EfficientNetB3 inference model (from scratch, no Transform graph), time
`export_model`, then time `tf.saved_model.load` and the first serving_default call on one
encoded JPEG (what TFMA, `imgpipe predict` and TF Serving pay to start). Rounds alternate
baseline and candidate so load on the machine hits both alike. Reported: per-round seconds,
medians and candidate/baseline ratios. Results: BENCHMARKS.md, "Export".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import io, json, os, sys, tempfile, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, sys.argv[1])
import numpy as np
from PIL import Image
import tensorflow as tf
from trainer_module import export, model
size, classes = int(sys.argv[2]), int(sys.argv[3])
_, inference_model, _ = model.build_model(classes, image_size=size, weights="none")
out = os.path.join(tempfile.mkdtemp(prefix="bench_export_"), "model")
start = time.perf_counter()
export.export_model(inference_model, [f"c{i}" for i in range(classes)], size, out)
export_s = time.perf_counter() - start
buf = io.BytesIO()
Image.fromarray(np.zeros((size * 3, size * 4, 3), np.uint8)).save(buf, format="JPEG")
start = time.perf_counter()
serve = tf.saved_model.load(out).signatures["serving_default"]
serve(image_bytes=tf.constant([buf.getvalue()]))
load_s = time.perf_counter() - start
print("RESULT " + json.dumps({"export_s": export_s, "load_and_first_call_s": load_s}))
"""


def _measure(repo: str, size: int, classes: int) -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", CHILD, repo, str(size), str(classes)],
                          capture_output=True, text=True, env=env, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"export in {repo} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="another checkout of this repo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args(argv)
    rounds = {"baseline": [], "candidate": []}
    for i in range(args.rounds):
        for name, repo in (("baseline", args.baseline), ("candidate", REPO)):
            rounds[name].append(_measure(repo, args.size, args.classes))
            print(f"round {i + 1} {name}: {json.dumps(rounds[name][-1])}", flush=True)
    result = {"rounds": rounds}
    for key in ("export_s", "load_and_first_call_s"):
        medians = {n: statistics.median(r[key] for r in rs) for n, rs in rounds.items()}
        result[key] = {**{n: round(m, 2) for n, m in medians.items()},
                       "ratio": round(medians["candidate"] / medians["baseline"], 3)}
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    return result


if __name__ == "__main__":
    run()
