"""tf.data's autotuning model on or off in make_dataset: the iterator's teardown, and speed.

    .venv/bin/python benchmarks/bench_autotune.py [--teardown-runs 3] [--lived-s 130]
        [--rounds 3] [--workdir /tmp/imgpipe_bench_autotune] [--json PATH]

make_dataset turns the autotuning model off (`autotune.enabled=False`), because deleting an
iterator that has lived a minute or two then waits for the model thread's next wake-up, up
to 60 s (TF 2.16), and Keras' fit deletes its iterators when it returns. Two parts, each
side by side in one run:

- teardown: `--teardown-runs` fresh processes per variant, all at once (they mostly
  sleep): the k-th iterates `range().map(AUTOTUNE).prefetch(AUTOTUNE)`, with or without
  make_dataset's option, for `--lived-s` + 7k seconds, one element every 5 ms, as fit's
  iterator lives through the epochs, then times `del iterator` (the wait depends on where
  the model thread is in its timed wait, hence the staggered lifetimes). A make_dataset
  over tiny cached shards did not stall in 11 runs with the model on, so the mechanism is
  measured on the pipeline that shows it; the demo shows it on the real one.
- speed: make_dataset cold (no cache), cold with random_crop, and warm (cache="memory") on
  bench_input's ImageNet-like set (2000 JPEGs, ~450x360, S=300, batch 32), the two
  variants round-robin, best img/s and least CPU ms per image of `--rounds`.

"model on" is make_dataset with `options.autotune.enabled=True` (what it built before).
Results: BENCHMARKS.md, "The stall after fit".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

VARIANTS = ("model off (make_dataset now)", "model on (autotune.enabled=True)")

# argv: "on"/"off", seconds to keep the iterator, the repository.
TEARDOWN = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
import tensorflow as tf
from trainer_module import dataset
ds = tf.data.Dataset.range(10**9).map(lambda x: 2 * x, num_parallel_calls=tf.data.AUTOTUNE)
if sys.argv[1] == "off":
    ds = ds.with_options(dataset._NO_AUTOTUNE_MODEL)  # what make_dataset applies
iterator = iter(ds.prefetch(tf.data.AUTOTUNE))
start = time.monotonic()
while time.monotonic() - start < float(sys.argv[2]):
    next(iterator)
    time.sleep(0.005)
t = time.monotonic()
del iterator
print("DELETE", round(time.monotonic() - t, 2))
"""


def _options(variant: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if variant == VARIANTS[0]:
        return None
    options = tf.data.Options()
    options.autotune.enabled = True
    return options


def teardown(runs: int, lived_s: float) -> dict:
    procs = []
    for variant, flag in zip(VARIANTS, ("off", "on")):
        for k in range(runs):
            procs.append((variant, subprocess.Popen(
                [sys.executable, "-c", TEARDOWN, flag, str(lived_s + 7 * k),
                 os.path.dirname(HERE)], stdout=subprocess.PIPE, text=True)))
    seconds = {v: [] for v in VARIANTS}
    for variant, proc in procs:
        out, _ = proc.communicate(timeout=lived_s + 600)
        assert proc.returncode == 0, out
        seconds[variant].append(float(out.split("DELETE", 1)[1].split()[0]))
    return seconds


def speed(paths: dict, rounds: int) -> dict:
    import bench_input  # pylint: disable=g-import-not-at-top
    from trainer_module import dataset  # pylint: disable=g-import-not-at-top
    S, B = 300, 32
    shards = os.path.join(paths["shards"], "Split-train")
    pipelines = {}
    for variant in VARIANTS:
        opts = _options(variant)
        for kind, kwargs in (("cold", {}), ("cold, random crop", {"random_crop": True})):
            pipelines[f"{kind}, {variant}"] = bench_input.steady_epochs(dataset.make_dataset(
                shards, image_size=S, batch_size=B, training=True, options=opts, **kwargs), B)
        warm = dataset.make_dataset(shards, image_size=S, batch_size=B, training=True,
                                    cache="memory", options=opts)
        for _ in warm.take(len(paths["files"]) // B + 1):
            pass  # fills the cache
        pipelines[f"warm (cache=memory), {variant}"] = bench_input.steady_epochs(warm, B)
    return bench_input.measure(pipelines, len(paths["files"]), rounds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teardown-runs", type=int, default=3)
    parser.add_argument("--lived-s", type=float, default=130.0)
    parser.add_argument("--rounds", type=int, default=3, help="0: the teardown part only")
    parser.add_argument("--workdir", default="/tmp/imgpipe_bench_autotune")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    started = time.time()
    result = {"teardown_s": teardown(args.teardown_runs, args.lived_s)}
    if not args.rounds:
        print(json.dumps(result))
        return
    import bench_input  # pylint: disable=g-import-not-at-top
    paths = bench_input.build_set(args.workdir, "imagenet", 2000, 8, 0)
    result["speed"] = {name: {"img_s": round(v[0], 1), "cpu_ms_per_img": round(v[1], 3)}
                       for name, v in speed(paths, args.rounds).items()}
    result["load_avg"] = os.getloadavg()
    result["seconds"] = round(time.time() - started)
    print(json.dumps(result, indent=1))
    print(f"\n| teardown: `del iterator` after {args.lived_s:.0f} + 7k s, seconds | runs |")
    print("|---|---|")
    for variant, secs in result["teardown_s"].items():
        print(f"| {variant} | {', '.join(f'{s:.2f}' for s in secs)} |")
    print("\n| make_dataset | img/s | CPU ms/img |\n|---|---:|---:|")
    for name, v in result["speed"].items():
        print(f"| {name} | {v['img_s']:,.0f} | {v['cpu_ms_per_img']:.2f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
