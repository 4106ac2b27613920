"""The fixed cost of `imgpipe demo`: everything but the epochs, phase by phase, two checkouts.

    .venv/bin/python benchmarks/bench_fixed_cost.py --baseline /tmp/imgpipe_base [--rounds 2]
        [--workdir /tmp/imgpipe_bench_fixed]

`--baseline` is another checkout of this repository (e.g. `git worktree add
/tmp/imgpipe_base HEAD`); this checkout is the candidate. Each round runs `imgpipe demo` once
per checkout in a fresh process and a fresh workdir, the order alternating (candidate first
in odd rounds), because the machine's speed drifts and others may share it. The demo runs
in-process under a thin wrapper that keeps time marks (wall, and the process's CPU seconds)
around the demo data (with the library import overlapped, since ChildDrawing), the
import of pipeline.local_runner, the LocalDagRunner run and the reports, and the garbage
collector's time; the components' times come from MLMD and the Trainer's from
model_run/timings.json.

Reported per run (seconds): wall and CPU (user + system, all threads); the fixed cost as
the issue counts it (wall - the sum of the epochs) and with the first epoch's excess over
the median epoch (tracing and optimizing the training and evaluation steps, filling the
cache: paid once per run, however many epochs); and each phase. Results: BENCHMARKS.md,
"Orchestration tax" / "Fixed cost on the demo".
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# argv: checkout, timeline output, then the imgpipe arguments.
WRAPPER = r"""
import atexit, gc, json, os, sys, time
tree, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)
marks, gcs = [], {"s": 0.0, "total": 0.0, "full": 0.0, "count": [0, 0, 0]}
def mark(name):
    marks.append([name, time.time(), time.process_time()])
def on_gc(phase, info):
    if phase == "start":
        gcs["s"] = time.perf_counter()
        return
    spent = time.perf_counter() - gcs["s"]
    gcs["total"] += spent
    gcs["count"][info["generation"]] += 1
    if info["generation"] == 2:
        gcs["full"] += spent
gc.callbacks.append(on_gc)
@atexit.register
def dump():  # registered first, so it runs after every other exit handler
    mark("atexit")
    with open(out, "w") as f:
        json.dump({"marks": marks, "gc": gcs}, f)
def wrap(owner, name, label):
    fn = getattr(owner, name)
    def timed(*a, **k):
        mark(label + " start")
        try:
            return fn(*a, **k)
        finally:
            mark(label + " end")
    setattr(owner, name, timed)
mark("wrapper")
from pipeline import cli, cli_run, demo_data
assert cli.__file__.startswith(tree), cli.__file__
if hasattr(demo_data, "ChildDrawing"):  # the data drawn in a child while importing
    drawing = demo_data.ChildDrawing
    start_drawing, drawing_result = drawing.__init__, drawing.result
    def _start(self, *a, **k):
        mark("demo data start")
        start_drawing(self, *a, **k)
    def _result(self):
        try:
            return drawing_result(self)
        finally:
            mark("demo data end")
    drawing.__init__, drawing.result = _start, _result
else:
    wrap(demo_data, "generate_dataset", "demo data")
pipeline_fn = cli_run._pipeline
def _pipeline(*a, **k):
    mark("import start")
    from pipeline import blessing, local_runner, run_report
    from tfx.orchestration.local import local_dag_runner
    mark("import end")
    wrap(local_dag_runner.LocalDagRunner, "run", "run")
    wrap(blessing, "last_evaluation", "reports")
    return pipeline_fn(*a, **k)
cli_run._pipeline = _pipeline
rc = cli.main(sys.argv[3:])
mark("main returned")
sys.exit(rc)
"""


def _components(workdir: str, tree: str) -> dict:
    """{component id: seconds} of the workdir's one run, from MLMD (read by `tree`'s code)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from pipeline import history;"
            "from trainer_module import features;"
            "s = history.open_store(features.metadata_path(sys.argv[2]));"
            "r = history.runs(s)[0];"
            "print(json.dumps({n: round(history.seconds(e), 2) for n, e in r['nodes']}))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code, tree, workdir], capture_output=True,
                         text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _measure(tree: str, workdir: str) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    timeline = os.path.join(workdir, "timeline.json")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with open(os.path.join(workdir, "stdout.txt"), "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, "-c", WRAPPER, tree, timeline, "demo",
                               "--workdir", workdir], stdout=log, stderr=subprocess.STDOUT,
                              env=env, cwd=tree, check=False)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"demo in {tree} failed (rc {proc.returncode}): {workdir}/stdout.txt")
    with open(timeline, encoding="utf-8") as f:
        recorded = json.load(f)
    at = {name: (t - start, cpu) for name, t, cpu in recorded["marks"]}
    span = lambda a, b: round(at[b][0] - at[a][0], 2)  # noqa: E731
    found = glob.glob(os.path.join(workdir, "pipeline_root", "Trainer", "model_run", "*",
                                   "timings.json"))
    with open(found[0], encoding="utf-8") as f:
        trainer = json.load(f)
    epochs = trainer["epochs_head"] + trainer.get("epochs_fine_tune", [])
    median = statistics.median(epochs)
    components = _components(workdir, tree)
    trainer_s = components.pop("Trainer")
    return {
        "wall": round(wall, 1),
        "cpu": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "fixed (wall - epochs)": round(wall - sum(epochs), 1),
        "fixed incl. epoch-1 excess": round(wall - len(epochs) * median, 1),
        "start to demo data": round(at["demo data start"][0], 2),
        "demo data": span("demo data start", "demo data end"),
        "import pipeline.local_runner": span("import start", "import end"),
        "import CPU": round(at["import end"][1] - at["import start"][1], 2),
        "demo data + import": round(span("demo data start", "demo data end")
                                    + span("import start", "import end"), 2),
        **{name: s for name, s in components.items()},
        "Trainer setup": trainer["setup"],
        "Trainer export": trainer["export"],
        "Trainer other (fit outside epochs, launcher)": round(
            trainer_s - trainer["setup"] - trainer["export"] - sum(epochs), 2),
        "first epoch excess": round(epochs[0] - median, 2),
        "epochs": round(sum(epochs), 1),
        "epoch median": median,
        "reports": span("run end", "main returned"),
        "exit": round(wall - at["atexit"][0], 2),
        "gc (all passes / full passes)": [round(recorded["gc"]["total"], 2),
                                          round(recorded["gc"]["full"], 2)],
    }


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="another checkout of this repo")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/imgpipe_bench_fixed")
    args = parser.parse_args(argv)
    trees = {"baseline": os.path.abspath(args.baseline), "candidate": REPO}
    rounds = []
    for r in range(args.rounds):
        order = ("candidate", "baseline") if r % 2 == 0 else ("baseline", "candidate")
        result = {}
        for name in order:
            result[name] = _measure(trees[name], os.path.join(args.workdir, f"{name}-{r + 1}"))
            with open("/proc/loadavg", encoding="utf-8") as f:
                result[name]["load average after"] = f.read().split()[0]
            print(f"round {r + 1} {name}: {json.dumps(result[name])}", flush=True)
        rounds.append(result)
    keys = [k for k, v in rounds[0]["baseline"].items() if isinstance(v, (int, float))]
    medians = {n: {k: round(statistics.median(r[n][k] for r in rounds), 2) for k in keys}
               for n in trees}
    print(f"| phase (median of {args.rounds}) | baseline | candidate |")
    print("|---|---:|---:|")
    for k in keys:
        print(f"| {k} | {medians['baseline'][k]} | {medians['candidate'][k]} |")
    return {"rounds": rounds, "medians": medians}


if __name__ == "__main__":
    run()
