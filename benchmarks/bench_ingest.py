"""Ingest benchmark: IngestImages against the decode-only limit, side by side, in one run.

    .venv/bin/python benchmarks/bench_ingest.py [--quick] [--workdir DIR] [--json PATH]

Generates photo-like JPEGs (1/f colour texture + gradient + sensor noise, q90, so sizes are
those of real photos), ~450x360 ("small") and ~1800x1400 ("phone"). Large sets reuse a few
hundred encoded images, each copy with a distinct JPEG comment (COM) segment, so every file
has its own content hash but costs nothing to generate.

Every ingest runs as a fresh process, as ImageExampleGen does (IngestImages + the
executor's checks, verify_images on), on the DirectRunner with
`--direct_running_mode=multi_processing --direct_num_workers=2` unless a row says otherwise;
a sampler thread sums the RSS of that process and all its children every 0.1 s.

Measured (ratios are what to compare; the machine is shared, so seconds vary):
  decode-only limit       tf.data, read_file + decode_image, AUTOTUNE, all cores, best of N
  ingest 2k / 20k         end-to-end images/s (includes ~15 s of process and worker
                          start-up) and the steady rate (20k - 2k) / (t20k - t2k); the
                          limit, 2k and 20k run back to back in each of N rounds (3), and
                          the round with the median steady ratio is reported, with all
                          rounds' ratios beside it
  in_memory, multi_threading  the other DirectRunner modes on the 2k set
  size ratios             shard bytes / source bytes: small; phone as-is; phone max_side=800
  training input          make_dataset (decode+resize to 300) over phone shards, as-is vs
                          downscaled at ingest
  GZIP                    the 2k set ingested with compression="gzip": size ratio, raw
                          record read rate and make_dataset rate vs uncompressed
  peak RSS                process tree at 2k vs 20k images
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

CLASSES = 4
from photos import photo_jpeg  # noqa: E402  (benchmarks/ is sys.path[0] when run)

MULTI_PROCESS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
PHONE_MAX_SIDE = 800  # >= 2x a 300 px training size, so DCT-scaled decode keeps quality


# --------------------------------------------------------------------------- data
def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same image with a COM segment after SOI: new content hash, same pixels."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def make_set(root: str, count: int, bases: list) -> int:
    """Writes root/c<k>/<i>.jpg from `bases`; returns the source bytes."""
    if os.path.isdir(root):
        shutil.rmtree(root)
    total = 0
    for k in range(CLASSES):
        os.makedirs(os.path.join(root, f"c{k}"))
    for i in range(count):
        data = with_comment(bases[i % len(bases)], f"copy {i}")
        with open(os.path.join(root, f"c{i % CLASSES}", f"{i:06d}.jpg"), "wb") as f:
            f.write(data)
        total += len(data)
    return total


# ------------------------------------------------------------------------- ingest
def child(spec: dict) -> None:
    """Runs in a fresh process: IngestImages + the executor's checks, like the component."""
    t0 = time.time()
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
    from components.image_example_gen import ingest, report as report_lib  # pylint: disable=g-import-not-at-top
    t1 = time.time()
    options = ingest.IngestOptions(**spec["options"])
    with beam.Pipeline(options=PipelineOptions(spec["beam_args"])) as p:
        _ = p | ingest.IngestImages(options, spec["output"])
    report = report_lib.finish_output(spec["output"])
    print(json.dumps({"import_s": t1 - t0, "pipeline_s": time.time() - t1,
                      "counts": report["counts"], "bytes": report["bytes"],
                      "shards": report["shards"]}))


def _tree_rss(proc) -> int:
    import psutil  # pylint: disable=g-import-not-at-top
    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_ingest(data_root: str, output: str, beam_args=None, **options) -> dict:
    """One ingest in a fresh process; returns wall seconds, peak tree RSS and the report."""
    import psutil  # pylint: disable=g-import-not-at-top
    if os.path.isdir(output):
        shutil.rmtree(output)
    spec = {"options": dict(options, data_root=data_root), "output": output,
            "beam_args": MULTI_PROCESS if beam_args is None else beam_args}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.time()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child",
                                 json.dumps(spec)], stdout=out, stderr=err)
        handle, peak, done = psutil.Process(proc.pid), [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss(handle))
                time.sleep(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4: CPU seconds of the process and every (reaped) worker process below it.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - start
        done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"ingest failed:\n{err.read().decode()[-3000:]}")
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    stored = sum(os.path.getsize(p) for p in glob.glob(os.path.join(output, "Split-*", "*")))
    return dict(result, wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                peak_rss_mb=peak[0] / 2 ** 20, shard_bytes=stored)


# ----------------------------------------------------------------------- readers
def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _best(fn, rounds: int, with_cpu: bool = False):
    """Best wall seconds of `rounds` calls (and the CPU seconds of that call)."""
    best = (float("inf"), 0.0)
    for _ in range(rounds):
        t, c = time.perf_counter(), _cpu()
        fn()
        best = min(best, (time.perf_counter() - t, _cpu() - c))
    return best if with_cpu else best[0]


def decode_only_rate(root: str, rounds: int) -> tuple:
    """(images/s, CPU ms per image) of the decode-only limit over the files of `root`."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    files = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))
    ds = tf.data.Dataset.from_tensor_slices(files).map(
        lambda p: tf.shape(tf.io.decode_image(tf.io.read_file(p), expand_animations=False)),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    seconds, cpu = _best(lambda: sum(1 for _ in ds), rounds, with_cpu=True)
    return len(files) / seconds, cpu / len(files) * 1e3


def _shards(output: str) -> list:
    return sorted(glob.glob(os.path.join(output, "Split-*", "*")))


def make_dataset_rate(output: str, rounds: int, image_size: int = 300) -> float:
    from trainer_module.dataset import make_dataset  # pylint: disable=g-import-not-at-top
    splits = sorted(glob.glob(os.path.join(output, "Split-*")))
    ds = make_dataset(splits, image_size=image_size, batch_size=32, training=False)
    n = sum(int(b[1].shape[0]) for b in ds)
    return n / _best(lambda: sum(1 for _ in ds), rounds)


def record_read_rate(output: str, rounds: int) -> tuple:
    """(MB/s, records/s) of reading + parsing the image feature, all shards, parallel."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    files = _shards(output)
    compression = "GZIP" if files[0].endswith(".gz") else ""
    spec = {"image": tf.io.FixedLenFeature([], tf.string)}
    ds = (tf.data.Dataset.from_tensor_slices(files)
          .interleave(lambda f: tf.data.TFRecordDataset(f, compression, 8 << 20),
                      cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(64).map(lambda r: tf.io.parse_example(r, spec)["image"],
                         num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    count = sum(int(b.shape[0]) for b in ds)
    raw = sum(len(r.numpy()) for r in tf.data.TFRecordDataset(files, compression))
    seconds = _best(lambda: sum(1 for _ in ds), rounds)
    return raw / seconds / 2 ** 20, count / seconds


# -------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, one round")
    parser.add_argument("--workdir", help="kept afterwards when given")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return {}
    n_small, n_large, n_phone, n_bases, rounds = (
        (200, 3000, 24, 50, 1) if args.quick else (2000, 20000, 200, 300, 3))
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_ingest_")
    os.makedirs(workdir, exist_ok=True)
    w = lambda *p: os.path.join(workdir, *p)  # noqa: E731
    rng = np.random.default_rng(0)
    t = time.time()
    small = [photo_jpeg(int(rng.integers(330, 390)), int(rng.integers(420, 480)), s)
             for s in range(n_bases)]
    phone = [photo_jpeg(int(rng.integers(1350, 1450)), int(rng.integers(1750, 1850)), 10_000 + s)
             for s in range(max(8, n_bases // 8))]
    src = {"small": make_set(w("small"), n_small, small),
           "large": make_set(w("large"), n_large, small),
           "phone": make_set(w("phone"), n_phone, phone)}
    print(f"generated in {time.time() - t:.0f}s: {src}", file=sys.stderr)

    r = {"sets": {"small": n_small, "large": n_large, "phone": n_phone}, "source_bytes": src,
         "cores": os.cpu_count(), "load_start": os.getloadavg()[0]}
    # The throughput goal: decode-only limit, 2k and 20k ingests measured back to back, in
    # `rounds` rounds, so each round's ratio compares rates taken under the same load.
    r["rounds"] = []
    for i in range(rounds):
        r["rounds"].append({"decode_only": decode_only_rate(w("small"), 3),
                            "small": run_ingest(w("small"), w("out_small")),
                            "large": run_ingest(w("large"), w("out_large"))})
        print(f"round {i + 1}: {r['rounds'][-1]}", file=sys.stderr)
    r["decode_only_phone"] = decode_only_rate(w("phone"), rounds)
    r["ingest_small_in_memory"] = run_ingest(w("small"), w("out_inmem"),
                                             ["--direct_running_mode=in_memory"])
    threads = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    r["ingest_small_threads"] = run_ingest(w("small"), w("out_threads"), threads)
    r["ingest_large_threads"] = run_ingest(w("large"), w("out_threads"), threads)
    r["ingest_small_gzip"] = run_ingest(w("small"), w("out_gzip"), compression="gzip")
    r["ingest_phone"] = run_ingest(w("phone"), w("out_phone"))
    r["ingest_phone_down"] = run_ingest(w("phone"), w("out_phone_down"),
                                        max_side=PHONE_MAX_SIDE)
    r["read_none"] = record_read_rate(w("out_small"), rounds)
    r["read_gzip"] = record_read_rate(w("out_gzip"), rounds)
    r["train_input_none"] = make_dataset_rate(w("out_small"), rounds)
    r["train_input_gzip"] = make_dataset_rate(w("out_gzip"), rounds)
    r["train_input_phone"] = make_dataset_rate(w("out_phone"), rounds)
    r["train_input_phone_down"] = make_dataset_rate(w("out_phone_down"), rounds)
    r["load_end"] = os.getloadavg()[0]
    print(render(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    if not args.workdir:
        shutil.rmtree(workdir)
    return r


def round_figures(one: dict, sets: dict) -> dict:
    """Rates and ratios of one round (decode-only limit, 2k and 20k ingest, back to back)."""
    s, l = one["small"], one["large"]
    n_s, n_l = sets["small"], sets["large"]
    lim, lim_cpu = one["decode_only"]
    if l["wall_s"] <= s["wall_s"] or l["cpu_s"] <= s["cpu_s"]:
        raise ValueError(f"the {n_l}-image ingest was not slower than the {n_s}-image one: "
                         "too few images to tell the steady rate from noise (--quick?).")
    steady = (n_l - n_s) / (l["wall_s"] - s["wall_s"])
    cpu_steady = (l["cpu_s"] - s["cpu_s"]) / (n_l - n_s) * 1e3
    fixed = s["wall_s"] - n_s / steady
    # Images at which the end-to-end rate reaches half the limit: N / (fixed + N / steady)
    # = lim / 2; never when the steady rate itself is below that.
    half = lim / 2
    break_even = fixed * half / (1 - half / steady) if steady > half else float("inf")
    return {"limit": lim, "limit_cpu_ms": lim_cpu, "steady": steady,
            "steady_ratio": steady / lim, "cpu_ms": cpu_steady,
            "cpu_ratio": lim_cpu / cpu_steady, "fixed_s": fixed,
            "fixed_cpu_s": s["cpu_s"] - n_s * cpu_steady / 1e3,
            "e2e_small": n_s / s["wall_s"] / lim, "e2e_large": n_l / l["wall_s"] / lim,
            "break_even": break_even}


def render(r: dict) -> str:
    n_s, n_l = r["sets"]["small"], r["sets"]["large"]
    figs = [round_figures(one, r["sets"]) for one in r["rounds"]]
    # The round with the median steady ratio speaks for all of them; every round is listed.
    mid = sorted(range(len(figs)), key=lambda i: figs[i]["steady_ratio"])[len(figs) // 2]
    f, one = figs[mid], r["rounds"][mid]
    s, l = one["small"], one["large"]
    lim, lim_cpu = f["limit"], f["limit_cpu_ms"]
    listed = lambda key, fmt: ", ".join(format(x[key], fmt) for x in figs)  # noqa: E731
    rows = [
        ("decode-only limit, small (tf.data, all cores)",
         f"{lim:.0f} img/s; {lim_cpu:.2f} CPU ms/img", "1.00x"),
        (f"ingest {n_s} small, end to end",
         f"{n_s / s['wall_s']:.0f} img/s ({s['wall_s']:.1f} s, {s['cpu_s']:.1f} CPU s)",
         f"{f['e2e_small']:.2f}x"),
        (f"ingest {n_l} small, end to end",
         f"{n_l / l['wall_s']:.0f} img/s ({l['wall_s']:.1f} s, {l['cpu_s']:.1f} CPU s)",
         f"{f['e2e_large']:.2f}x"),
        (f"**ingest steady rate** ({n_l}-{n_s}) / (t{n_l}-t{n_s})", f"{f['steady']:.0f} img/s",
         f"**{f['steady_ratio']:.2f}x** (goal >= 0.5x; rounds: {listed('steady_ratio', '.2f')})"),
        ("ingest steady CPU per image, process tree (ratio: decode-only CPU / ingest CPU)",
         f"{f['cpu_ms']:.2f} CPU ms/img",
         f"{f['cpu_ratio']:.2f}x (rounds: {listed('cpu_ratio', '.2f')})"),
        ("ingest fixed cost (start-up, extrapolated to 0 images)",
         f"{f['fixed_s']:.1f} s wall; {f['fixed_cpu_s']:.1f} CPU s",
         f"rounds: {listed('fixed_s', '.1f')} s"),
        ("images at which end to end reaches 0.5x", f"{f['break_even']:,.0f}", ""),
    ]
    for key, name in (("ingest_small_in_memory", "in_memory"),
                      ("ingest_small_threads", "multi_threading x2")):
        x = r[key]
        rows.append((f"ingest {n_s} small, {name}, end to end",
                     f"{n_s / x['wall_s']:.0f} img/s ({x['wall_s']:.1f} s, "
                     f"{x['cpu_s']:.1f} CPU s)", f"{n_s / x['wall_s'] / lim:.2f}x"))
    ts, tl = r["ingest_small_threads"], r["ingest_large_threads"]
    t_steady = (n_l - n_s) / max(1e-9, tl["wall_s"] - ts["wall_s"])
    rows += [
        (f"ingest {n_l} small, multi_threading x2, end to end",
         f"{n_l / tl['wall_s']:.0f} img/s ({tl['wall_s']:.1f} s, {tl['cpu_s']:.1f} CPU s)",
         f"{n_l / tl['wall_s'] / lim:.2f}x"),
        ("ingest steady rate, multi_threading x2", f"{t_steady:.0f} img/s",
         f"{t_steady / lim:.2f}x"),
        (f"peak RSS, multi_threading x2, {n_s} / {n_l} images",
         f"{ts['peak_rss_mb']:.0f} / {tl['peak_rss_mb']:.0f} MB",
         f"{tl['peak_rss_mb'] / ts['peak_rss_mb']:.3f}x")]
    r = dict(r, ingest_small=s)
    size = lambda k, src: r[k]["shard_bytes"] / r["source_bytes"][src]  # noqa: E731
    p, pd = r["ingest_phone"], r["ingest_phone_down"]
    peak_s = max(x["small"]["peak_rss_mb"] for x in r["rounds"])
    peak_l = max(x["large"]["peak_rss_mb"] for x in r["rounds"])
    rows += [
        ("output / source bytes, small", f"{size('ingest_small', 'small'):.4f}x",
         "goal <= 1.02x"),
        ("output / source bytes, phone as-is", f"{size('ingest_phone', 'phone'):.4f}x",
         "goal <= 1.02x"),
        (f"output / source bytes, phone max_side={PHONE_MAX_SIDE}",
         f"{size('ingest_phone_down', 'phone'):.4f}x", "goal <= 0.25x"),
        (f"ingest {r['sets']['phone']} phone as-is / downscaled, end to end",
         f"{r['sets']['phone'] / p['wall_s']:.1f} / {r['sets']['phone'] / pd['wall_s']:.1f} img/s",
         f"decode-only phone {r['decode_only_phone'][0]:.0f} img/s"),
        ("training input (make_dataset, 300 px), phone as-is",
         f"{r['train_input_phone']:.0f} img/s", "1.00x"),
        ("training input, phone downscaled at ingest", f"{r['train_input_phone_down']:.0f} img/s",
         f"{r['train_input_phone_down'] / r['train_input_phone']:.2f}x"),
        ("shard bytes / source bytes, GZIP vs none (small)",
         f"{size('ingest_small_gzip', 'small'):.4f}x vs "
         f"{size('ingest_small', 'small'):.4f}x",
         f"{r['ingest_small_gzip']['shard_bytes'] / s['shard_bytes']:.4f}x"),
        ("record read+parse, none / GZIP", f"{r['read_none'][0]:.0f} / {r['read_gzip'][0]:.0f} MB/s",
         f"GZIP {r['read_gzip'][0] / r['read_none'][0]:.2f}x"),
        ("training input (300 px), none / GZIP",
         f"{r['train_input_none']:.0f} / {r['train_input_gzip']:.0f} img/s",
         f"GZIP {r['train_input_gzip'] / r['train_input_none']:.2f}x"),
        (f"ingest {n_s}, none / GZIP, end to end (GZIP: one run after the rounds)",
         f"{s['wall_s']:.1f} / {r['ingest_small_gzip']['wall_s']:.1f} s", ""),
        (f"peak RSS, process tree, {n_s} / {n_l} images (highest of the rounds)",
         f"{peak_s:.0f} / {peak_l:.0f} MB", f"{peak_l / peak_s:.3f}x (goal <= 1.10x)"),
    ]
    lines = [f"{r['cores']} cores; 1-min load average {r['load_start']:.1f} at start, "
             f"{r['load_end']:.1f} at end (other jobs share this machine).", "",
             "| measurement | value | ratio |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
