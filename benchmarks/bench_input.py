"""Input-pipeline benchmark: every way of feeding images, side by side, in one run, same files.

    .venv/bin/python benchmarks/bench_input.py [--quick] [--workdir DIR] [--json PATH]

It generates its own photo-like JPEGs (1/f colour texture + gradient + sensor noise, q90,
4:2:0: about 3 bits per pixel, like real photos) at two sizes, ImageNet-like (~450x360)
and phone-like (~1800x1400), writes them as class folders and as Split-train TFRecord
shards, and measures images/s to S x S and CPU ms per image (best of --rounds, pipelines
taken round-robin so background load hits them alike; files are in the OS page cache for
all). Python loaders and finite tf.data pipelines are timed over whole epochs with a fresh
iterator (fit(epochs=...)); repeated ones in steady state after a lead-in
(fit(steps_per_epoch=...)):

  ImageDataGenerator       tf_keras flow_from_directory (single-threaded PIL, nearest)
  python generator (PIL)   plain generator: open, convert, bilinear resize, stack
  idfd + prefetch          tf_keras.utils.image_dataset_from_directory(...).prefetch
  tf.data from files       list -> shuffle -> read+decode+resize (parallel) -> batch
  make_dataset cold        trainer_module.make_dataset, training, no cache: every epoch
                           decodes again (one repeated dataset, as fit() uses it)
  make_dataset cold, random crop  make_dataset(random_crop=True): the model's random zoom
                           done while decoding (a zoom-in decodes only its window)
  make_dataset cold + model RandomZoom  cold, then the RandomZoom layer the crop replaces, on
                           each batch on this CPU (what a CPU training step pays now)
  make_dataset warm (mem)  cache="memory": warm epochs (first epoch = fill, listed apart)
  make_dataset warm (file) cache=<file prefix>: warm epochs
  make_dataset, ingest-downscaled  phone set only: shards re-encoded at ingest (max_side)
  limit decode+resize      tf.data over in-memory bytes, all cores, image_ops' decode
  limit random zoom        the same through image_ops.decode_random_zoom_and_resize
  limit full decode        the same with a plain full-size decode (no DCT scaling)
  limit decode only        full decode, no resize

and peak RSS of a fresh process iterating make_dataset over M vs 10*M images (goal: flat).
Goals checked: cold >= 0.9x limit; cold random crop >= 1.0x limit; warm >= 5x idfd;
phone make_dataset >= 5x idfd.
Results and their reading: BENCHMARKS.md, "Input pipeline".
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position
import tf_keras  # noqa: E402  pylint: disable=wrong-import-position

from components.image_example_gen import image_probe  # noqa: E402
from trainer_module import dataset, features, image_ops  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE
from photos import photo_jpeg  # noqa: E402  (benchmarks/ is sys.path[0] when run)

CLASSES = 4
GENERATOR_VERSION = 1
SETS = {  # name: (height range, width range)
    "imagenet": ((300, 420), (400, 500)),
    "phone": ((1300, 1500), (1700, 1900)),
}


def _make_one(args) -> tuple:
    name, i, path = args
    (h0, h1), (w0, w1) = SETS[name]
    rng = np.random.default_rng([GENERATOR_VERSION, i])
    data = photo_jpeg(int(rng.integers(h0, h1)), int(rng.integers(w0, w1)), i)
    with open(path, "wb") as f:
        f.write(data)
    return path, i % CLASSES


def _example(image: bytes, label: int) -> bytes:
    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def n(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: b(image), features.LABEL_KEY: n(label),
        features.LABEL_NAME_KEY: b(f"c{label}".encode()), features.FORMAT_KEY: b(b"jpeg"),
    })).SerializeToString()


def _write_shards(records, folder: str, num_shards: int) -> str:
    os.makedirs(os.path.join(folder, "Split-train"), exist_ok=True)
    for s in range(num_shards):
        path = os.path.join(folder, "Split-train", f"data_tfrecord-{s:05d}-of-{num_shards:05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for image, label in records[s::num_shards]:
                writer.write(_example(image, label))
    with open(os.path.join(folder, features.LABELS_FILE), "w") as f:
        f.write("".join(f"c{k}\n" for k in range(CLASSES)))
    return os.path.join(folder, "Split-train")


def build_set(workdir: str, name: str, count: int, num_shards: int, max_side: int) -> dict:
    """Generates (or reuses) class folders + shards for one size; returns their paths."""
    root = os.path.join(workdir, name)
    stamp = os.path.join(root, "stamp.json")
    spec = {"version": GENERATOR_VERSION, "count": count, "shards": num_shards,
            "max_side": max_side}
    paths = {"images": os.path.join(root, "images"), "shards": os.path.join(root, "examples"),
             "downscaled": os.path.join(root, "examples_downscaled")}
    if not (os.path.exists(stamp) and json.load(open(stamp)) == spec):
        shutil.rmtree(root, ignore_errors=True)
        jobs = []
        for i in range(count):
            folder = os.path.join(paths["images"], f"c{i % CLASSES}")
            os.makedirs(folder, exist_ok=True)
            jobs.append((name, i, os.path.join(folder, f"img_{i:05d}.jpg")))
        with multiprocessing.Pool() as pool:
            made = pool.map(_make_one, jobs, chunksize=8)
        records = [(open(p, "rb").read(), label) for p, label in made]
        _write_shards(records, paths["shards"], num_shards)
        if name == "phone":  # what ingest with max_side stores: Pillow draft + LANCZOS, q90
            small = [(image_probe.probe_image(d, max_side=max_side, verify=False).image_bytes,
                      y) for d, y in records]
            _write_shards(small, paths["downscaled"], num_shards)
        json.dump(spec, open(stamp, "w"))
    paths["files"] = sorted(os.path.join(d, f) for d, _, fs in os.walk(paths["images"])
                            for f in fs)
    paths["mean_kb"] = np.mean([os.path.getsize(f) for f in paths["files"]]) / 1024
    paths["mean_hw"] = np.mean([Image.open(f).size[::-1] for f in paths["files"][:50]], 0)
    return paths


# ---- the pipelines: each factory returns a zero-arg callable that runs one epoch ----------

def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(batches) -> tuple:
    """Runs `batches()` (which returns images seen); -> (images, wall s, CPU s of this
    process, all threads)."""
    gc.collect()
    cpu, start = _cpu_seconds(), time.perf_counter()
    n = batches()
    return n, time.perf_counter() - start, _cpu_seconds() - cpu


def python_epochs(make_batches):
    """A Python pipeline: one epoch is one full pass, no background threads."""
    return lambda count: _timed(make_batches)


def _images(batch) -> int:
    return tf.nest.flatten(batch)[0].shape[0]


def finite_epochs(ds):
    """A finite tf.data pipeline as fit(epochs=...) runs it: a fresh iterator per epoch,
    start-up and buffer fills included (idfd's shuffle buffer of 256 decoded images is
    filled at the start of every epoch; timing part-epochs would leave that work out)."""
    return python_epochs(lambda: sum(_images(batch) for batch in ds))


def steady_epochs(ds, B: int, step=None):
    """A repeated pipeline as fit(steps_per_epoch) sees it: a fresh iterator, a lead-in
    (threads, autotuning), then max(16, count // B) timed steps. Only for pipelines whose
    buffers hold no decoded work ahead beyond a few batches. The iterator is dropped
    afterwards, so it cannot keep working while other pipelines are timed. `step`: run on
    each batch (in the timed window), as a training step would."""
    step = step or (lambda batch: batch)

    def epoch(count):
        iterator, steps = iter(ds.repeat()), max(16, count // B)
        for _ in range(max(4, steps // 4)):
            step(next(iterator))
        result = _timed(lambda: sum(_images(step(next(iterator))) for _ in range(steps)))
        del iterator
        return result
    return epoch


def keras_idg(paths, S, B):
    gen = tf_keras.preprocessing.image.ImageDataGenerator().flow_from_directory(
        paths["images"], target_size=(S, S), batch_size=B, class_mode="sparse", seed=0)
    return python_epochs(lambda: sum(len(next(gen)[1]) for _ in range(len(gen))))


def python_pil(paths, S, B):
    files = list(paths["files"])
    rng = np.random.default_rng(0)

    def batches():
        n = 0
        rng.shuffle(files)
        for start in range(0, len(files), B):
            batch = []
            for f in files[start:start + B]:
                with Image.open(f) as im:
                    batch.append(np.asarray(im.convert("RGB").resize((S, S), Image.BILINEAR)))
            n += len(np.stack(batch))
        return n
    return python_epochs(batches)


def idfd(paths, S, B):
    ds = tf_keras.utils.image_dataset_from_directory(
        paths["images"], image_size=(S, S), batch_size=B, shuffle=True, seed=0)
    return finite_epochs(ds.prefetch(AUTOTUNE))


def tfdata_files(paths, S, B):
    files = paths["files"]
    labels = [int(os.path.basename(os.path.dirname(f))[1:]) for f in files]

    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.cast(tf.image.resize(image, [S, S]), tf.uint8), label
    return finite_epochs(tf.data.Dataset.from_tensor_slices((files, labels))
                         .shuffle(len(files)).map(load, num_parallel_calls=AUTOTUNE)
                         .batch(B).prefetch(AUTOTUNE))


def make_dataset_epochs(shards, S, B, cache=None, random_crop=False, step=None):
    """Training input: without a cache every epoch decodes again; with one, it reads back."""
    return steady_epochs(dataset.make_dataset(
        shards, image_size=S, batch_size=B, training=True, cache=cache,
        random_crop=random_crop), B, step)


def model_zoom_step():
    """The training model's RandomZoom (model.AUGMENTATION), run on each uint8 batch as the
    training step runs it: cast to float32, zoom, on this CPU. Returns (images, labels)."""
    from trainer_module import model  # pylint: disable=import-outside-toplevel
    layer = tf_keras.layers.RandomZoom(**dict(model.AUGMENTATION)["RandomZoom"])
    zoom = tf.function(lambda images: layer(tf.cast(images, tf.float32), training=True))
    return lambda batch: (zoom(batch[0]).numpy(), batch[1])


def in_memory(paths, S, B, decode):
    """The ceiling: encoded bytes already in memory, decoded on all cores."""
    data = tf.constant([open(f, "rb").read() for f in paths["files"]])
    return steady_epochs(tf.data.Dataset.from_tensor_slices(data)
                         .map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
                         .batch(B).prefetch(AUTOTUNE), B)


def plain_decode_resize(S):
    return lambda b: tf.cast(tf.image.resize(tf.io.decode_jpeg(b, channels=3), [S, S]),
                             tf.uint8)


def decode_only(b):
    return tf.shape(tf.io.decode_jpeg(b, channels=3))[0]


IDFD = "image_dataset_from_directory + prefetch"
COLD = "make_dataset cold (no cache)"
CROP = "make_dataset cold, random crop (decode only the window)"
COLD_ZOOM = "make_dataset cold + the model's RandomZoom on this CPU"
WARM = "make_dataset warm (cache=memory)"
LIMIT = "limit: decode+resize in memory (image_ops)"
ZOOM_LIMIT = "limit: decode+random zoom+resize in memory (image_ops)"
FULL_LIMIT = "limit: full decode+resize in memory"
DOWNSCALED = "make_dataset cold, ingest-downscaled shards"


def measure(pipelines: dict, count: int, rounds: int, settle: float = 0.3) -> dict:
    """Round-robin: every pipeline runs one epoch of `count` images per round.

    Returns {name: (best images/s of wall time, least CPU ms per image)}. The CPU figure
    (all threads of this process) moves far less with other load on the machine.
    """
    best = {name: (0.0, math.inf) for name in pipelines}
    for _ in range(rounds):
        for name, epoch in pipelines.items():
            n, wall, cpu = epoch(count)
            best[name] = (max(best[name][0], n / wall), min(best[name][1], 1000 * cpu / n))
            time.sleep(settle)  # let a dropped iterator's threads wind down
    return best


def run_size(name: str, paths: dict, S: int, B: int, rounds: int, workdir: str) -> dict:
    count = len(paths["files"])
    shards = os.path.join(paths["shards"], "Split-train")
    cache = os.path.join(workdir, "cache", name, "train")
    shutil.rmtree(os.path.dirname(cache), ignore_errors=True)
    fill = {}
    for label, kind in (("memory", "memory"), ("file", cache)):
        ds = dataset.make_dataset(shards, image_size=S, batch_size=B, training=True,
                                  cache=kind)
        n, wall, cpu = _timed(lambda: sum(1 for _ in ds.take(max(1, count // B))) * B)
        fill[f"make_dataset first epoch (fills cache={label})"] = (n / wall, 1000 * cpu / n)
        fill[f"_{label}"] = ds  # the filled dataset, measured warm below
    pipelines = {
        "ImageDataGenerator.flow_from_directory": keras_idg(paths, S, B),
        "python generator (PIL, bilinear)": python_pil(paths, S, B),
        IDFD: idfd(paths, S, B),
        "tf.data from files (parallel map)": tfdata_files(paths, S, B),
        COLD: make_dataset_epochs(shards, S, B),
        CROP: make_dataset_epochs(shards, S, B, random_crop=True),
        COLD_ZOOM: make_dataset_epochs(shards, S, B, step=model_zoom_step()),
        WARM: steady_epochs(fill.pop("_memory"), B),
        "make_dataset warm (cache=file)": steady_epochs(fill.pop("_file"), B),
        LIMIT: in_memory(paths, S, B, lambda b: image_ops.decode_and_resize(b, S)),
        ZOOM_LIMIT: in_memory(paths, S, B,
                              lambda b: image_ops.decode_random_zoom_and_resize(b, S)),
        FULL_LIMIT: in_memory(paths, S, B, plain_decode_resize(S)),
        "limit: full decode only in memory": in_memory(paths, S, B, decode_only),
    }
    if name == "phone":
        pipelines[DOWNSCALED] = make_dataset_epochs(
            os.path.join(paths["downscaled"], "Split-train"), S, B)
    results = measure(pipelines, count, rounds)
    results.update(fill)
    return results


def _peak_rss_mb() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: after fork+exec that still holds
    the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def rss_child(argv) -> None:
    """Iterates one make_dataset epoch; prints JSON with its own peak RSS."""
    pattern, S, B = argv[0], int(argv[1]), int(argv[2])
    base = _peak_rss_mb()
    start, n = time.perf_counter(), 0
    for images, _ in dataset.make_dataset(pattern, image_size=S, batch_size=B, training=True,
                                          repeat=False):
        n += int(images.shape[0])
    peak = _peak_rss_mb()
    print(json.dumps({"images": n, "peak_rss_mb": peak, "after_import_mb": base,
                      "img_per_s": round(n / (time.perf_counter() - start))}))


def rss_compare(paths: dict, workdir: str, S: int, B: int) -> list:
    """Peak RSS of one training epoch over M ImageNet-size images, then 10 x M as 8 shards
    10x longer and as 80 shards (more files read at once), each in a fresh process."""
    small = os.path.join(paths["shards"], "Split-train")
    longer = os.path.join(workdir, "rss_longer_shards", "Split-train")
    more = os.path.join(workdir, "rss_more_shards", "Split-train")
    for folder in (longer, more):
        shutil.rmtree(os.path.dirname(folder), ignore_errors=True)
        os.makedirs(folder)
    for name in sorted(os.listdir(small)):
        with open(os.path.join(longer, name), "wb") as out:
            for _ in range(10):  # TFRecord files concatenate
                with open(os.path.join(small, name), "rb") as f:
                    shutil.copyfileobj(f, out)
        for copy in range(10):
            os.link(os.path.join(small, name), os.path.join(more, f"{copy}-{name}"))
    rows = []
    for label, pattern, env in (
            ("M images, 8 shards", small, {}),
            ("10 × M images, 8 shards", longer, {}),
            ("10 × M images, 80 shards", more, {}),
            ("10 × M images, 80 shards, MALLOC_ARENA_MAX=2", more, {"MALLOC_ARENA_MAX": "2"})):
        out = subprocess.run([sys.executable, __file__, "--rss-child", pattern, str(S), str(B)],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, **env}).stdout
        rows.append({"label": label, **json.loads(out.strip().splitlines()[-1])})
    return rows


def goals(sets: dict) -> list:
    """(goal, ratio by wall img/s, ratio by CPU ms/img, threshold)."""
    def ratio(name, fast, slow):
        rates = sets[name]["rates"]
        return (rates[fast][0] / rates[slow][0], rates[slow][1] / rates[fast][1])
    rows = [("ImageNet size: cold ≥ 0.9× in-memory decode+resize limit",
             *ratio("imagenet", COLD, LIMIT), 0.9),
            ("ImageNet size: cold random crop ≥ 1.0× in-memory decode+resize limit",
             *ratio("imagenet", CROP, LIMIT), 1.0),
            ("ImageNet size: cold random crop ≥ 1.0× cold + model RandomZoom (CPU)",
             *ratio("imagenet", CROP, COLD_ZOOM), 1.0),
            ("ImageNet size: warm (memory cache) ≥ 5× idfd + prefetch",
             *ratio("imagenet", WARM, IDFD), 5.0)]
    if "phone" in sets:
        rows += [("phone: make_dataset cold (DCT-scaled decode) ≥ 5× idfd",
                  *ratio("phone", COLD, IDFD), 5.0),
                 ("phone: make_dataset on ingest-downscaled shards ≥ 5× idfd",
                  *ratio("phone", DOWNSCALED, IDFD), 5.0),
                 ("phone: cold random crop ≥ 1.0× in-memory decode+resize limit",
                  *ratio("phone", CROP, LIMIT), 1.0),
                 ("phone: DCT-scaled ≥ 1× full decode+resize (in-memory limits)",
                  *ratio("phone", LIMIT, FULL_LIMIT), 1.0),
                 ("phone: make_dataset warm (memory cache) ≥ 5× idfd",
                  *ratio("phone", WARM, IDFD), 5.0)]
    return rows


def render(sets: dict, meta: dict, rss: list) -> str:
    lines = [f"S={meta['S']}, batch {meta['B']}, {meta['cpus']} CPUs, TF {tf.__version__}, "
             f"best of {meta['rounds']} rounds; load average {meta['load_before']} before, "
             f"{meta['load_after']} after.", ""]
    head, names = "| pipeline |", []
    for name, entry in sets.items():
        head += (f" {name}: {entry['count']} × ~{entry['size']}, {entry['kb']:.0f} KB "
                 "img/s | × idfd | CPU ms/img |")
        names += [n for n in entry["rates"] if n not in names]
    lines += [head, "|---|" + "---:|---:|---:|" * len(sets)]
    for n in names:
        cells = []
        for entry in sets.values():
            rates = entry["rates"]
            if n in rates:
                cpu = "–" if math.isnan(rates[n][1]) else f"{rates[n][1]:.2f}"
                cells += [f"{rates[n][0]:,.0f}", f"{rates[n][0] / rates[IDFD][0]:.2f}", cpu]
            else:
                cells += ["–"] * 3
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "| goal | by img/s | by CPU ms/img | met (img/s, CPU) |",
              "|---|---:|---:|:---:|"]
    lines += [f"| {g} | {w:.2f}× | {c:.2f}× | "
              f"{'yes' if w >= t else 'NO'}, {'yes' if c >= t else 'NO'} |"
              for g, w, c, t in goals(sets)]
    lines += ["", "| peak RSS, one make_dataset epoch, fresh process | images | after import "
              "(MB) | peak (MB) | img/s |", "|---|---:|---:|---:|---:|"]
    for row in rss:
        lines.append(f"| {row['label']} | {row['images']:,} | {row['after_import_mb']:,} | "
                     f"{row['peak_rss_mb']:,} | {row['img_per_s']:,} |")
    return "\n".join(lines)


def run(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few images, one round (~2 min)")
    parser.add_argument("--workdir", default="/tmp/imgpipe_bench_input",
                        help="generated images and shards are kept here and reused")
    parser.add_argument("--image-size", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args(argv)
    S, B = args.image_size, args.batch_size
    rounds = args.rounds or (1 if args.quick else 3)
    counts = {"imagenet": 256, "phone": 48} if args.quick else {"imagenet": 2000, "phone": 300}
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    # Everything is generated before TensorFlow runs a single op (the pool forks).
    # max_side 512 keeps the short side of 4:3 photos >= 384, above S=300.
    paths = {name: build_set(os.path.join(args.workdir, "quick" if args.quick else "full"),
                             name, count, num_shards=8, max_side=math.ceil(S * 512 / 300))
             for name, count in counts.items()}
    sets = {}
    for name, count in counts.items():
        print(f"[{name}] {count} images, ~{paths[name]['mean_kb']:.0f} KB; measuring...",
              file=sys.stderr)
        sets[name] = {"count": count, "kb": paths[name]["mean_kb"],
                      "size": "×".join(str(int(v)) for v in paths[name]["mean_hw"][::-1]),
                      "rates": run_size(name, paths[name], S, B, rounds, args.workdir)}
    rss = rss_compare(paths["imagenet"], args.workdir, S, B)
    meta = {"S": S, "B": B, "cpus": os.cpu_count(), "rounds": rounds,
            "load_before": load_before,
            "load_after": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    table = render(sets, meta, rss)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "sets": sets, "rss": rss}, f, indent=1)
    print(table)
    return table


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2:])
    else:
        run()
