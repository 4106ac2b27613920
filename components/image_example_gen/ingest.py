"""`IngestImages`: the Beam PTransform at the heart of ImageExampleGen and `imgpipe ingest`.

PBegin -> files written under `output_dir` (any tf.io.gfile filesystem):
  Split-<split>/data_tfrecord-SSSSS-of-NNNNN[.gz]  serialized tf.train.Example (features.py)
  labels.txt                                       sorted class names, one per line; line i = id i
  ingest_report.json                               every file found, exactly once (report.py)

Steps (CamelCase labels as in the graph):
  ListImageFiles  layouts and listing on workers (sources.py); hidden/system files skipped
  SpreadReads     Reshuffle of (path, label) tuples, so reads spread over workers
  ReadAndProbe    read bytes, decide via image_probe: store the original bytes unchanged
                  when TF decodes them (format from magic bytes, shape from the header,
                  full TF decode check when verify_images), else re-encode or quarantine
  WriteShards     straight into TFRecord files on the same worker (shards.py)
  BuildReport     one CombineGlobally over small events; WriteLabels, WriteReport

Formats (image_probe.py has the measured details): the original encoded bytes are stored
unchanged whenever TensorFlow decodes them (JPEG incl. CMYK, PNG of any depth/palette/alpha,
GIF first frame, uncompressed BMP); `format` comes from magic bytes and height/width/channels
from the header, and verify_images=True (default) fully decodes every image with
`tf.io.decode_image` and quarantines it if that fails or disagrees with the header. Formats
TF 2.16 cannot decode (WebP, TIFF, palette/RLE BMP, ...) are re-encoded by default to
lossless PNG: no pixel changes and training never sees a format it cannot read, at the cost
of larger files than lossy WebP; `unsupported_formats="quarantine"` drops them instead.
`max_side` downscales larger images and re-encodes them as JPEG at `jpeg_quality` (90):
on ~1800x1400 phone photos, max_side=800 stores 0.23x the bytes and makes the 300 px
training input ~8x faster (BENCHMARKS.md, "Ingest").

Memory: image bytes exist only inside the fused ReadAndProbe -> WriteShards stage, one
record at a time per worker thread. What crosses a shuffle is small: (path, label) tuples,
(sha256, path, label, split) for duplicate detection, and report events. On the DirectRunner
those shuffles sit in the launcher (~0.3 KB per image); on Dataflow in the shuffle service.

Labels: the vocabulary is the sorted (Python `sorted`, i.e. Unicode code point order) set of
NFC-normalized class names that have at least one listed file. It is fixed by the listing,
not by decode success, so one corrupt file never shifts the ids; a class whose files were
all quarantined keeps its id and shows under `classes_without_images`. An empty class
folder (no non-hidden file) has no id and shows under `empty_folders`.

Splits: a layout that names splits (pre_split, or a manifest `split` column) keeps them;
a pre-split tree without a validation folder splits train/ into train and eval. Everything
else is assigned from the SHA-256 of the original bytes (`split_for_hash`), so
identical images always land in the same split, duplicates cannot leak from train into eval,
and the assignment is stable across runs, runners and machines. Duplicates (same content
under several paths, with `labels_conflict` when their labels differ) are reported.

Runners. Beam flags pass through untouched (`imgpipe ingest ... --runner=...`, or the
component's `with_beam_pipeline_args`). The project default is the DirectRunner with
`--direct_running_mode=multi_threading --direct_num_workers=2`: TF's decoder releases the
GIL, so two threads ingest about as fast as two worker processes once running (~0.6x the
decode-only limit on 2 cores), without multi_processing's ~17 s of start-up (each worker
process imports Beam and TensorFlow) and at half the memory. Threads measured faster end to
end at both 2k and 20k images (BENCHMARKS.md, "Ingest"), so there is no size switch. Two,
not one per core: each thread holds one decoded image, and a container's cgroup limit is
not what Beam's `0` (cpu_count) sees; raise it with `--direct_num_workers=N`.
Dataflow (not exercised here: this machine has no network):
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
  --staging_location=gs://B/staging --setup_file=./setup.py (or --sdk_container_image=IMAGE
  with this project installed) --machine_type=n2-standard-8 --max_num_workers=N
  [--experiments=use_runner_v2] [--number_of_worker_harness_threads=K]
data_root and output_dir must then be gs:// paths the workers' service account can read and
write; the launcher also reads data_root once (layout detection, TFX fingerprint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Iterable, Optional

import apache_beam as beam

from components.image_example_gen import image_probe, report, shards, sources
from components.image_example_gen.options import IngestOptions
from trainer_module import features

MAX_FILE_BYTES = 1 << 30  # larger files are quarantined unread ("file_too_large")
QUARANTINED_TAG = "quarantined"
META_TAG = "meta"


def split_for_hash(sha256_hex: str, eval_fraction: float, test_fraction: float) -> str:
    """Deterministic split from a content hash: the same bytes always get the same split."""
    position = int(sha256_hex[:15], 16) / float(1 << 60)
    if position < eval_fraction:
        return features.EVAL_SPLIT
    if position < eval_fraction + test_fraction:
        return features.TEST_SPLIT
    return features.TRAIN_SPLIT


def _read(path: str) -> tuple[Optional[bytes], Optional[dict]]:
    """(bytes, None) or (None, quarantine fields) for one file."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
        data = sources.read_bytes(path, MAX_FILE_BYTES + 1)
    except (FileNotFoundError, tf.errors.NotFoundError) as err:
        return None, {"reason": "missing_file", "detail": str(err)[:300]}
    except Exception as err:  # any filesystem error is this file's problem only
        return None, {"reason": "unreadable", "detail": f"{type(err).__name__}: {err}"[:300]}
    if len(data) > MAX_FILE_BYTES:
        return None, {"reason": "file_too_large",
                      "detail": f"larger than {MAX_FILE_BYTES} bytes; not read."}
    return data, None


def _example(candidate: sources.Candidate, label: int, result) -> bytes:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    def _bytes(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes(result.image_bytes),
        features.LABEL_KEY: _int(label),
        features.LABEL_NAME_KEY: _bytes(candidate.label_name.encode("utf-8")),
        features.FILENAME_KEY: _bytes(candidate.relpath.encode("utf-8")),
        features.HEIGHT_KEY: _int(result.height),
        features.WIDTH_KEY: _int(result.width),
        features.CHANNELS_KEY: _int(result.channels),
        features.FORMAT_KEY: _bytes(result.format.encode("utf-8")),
    })).SerializeToString(deterministic=True)  # map order would vary between processes


class _ReadAndProbe(beam.DoFn):
    """Candidate -> (split, lane, serialized Example) (main) plus, tagged 'meta',
    (sha256, relpath, label, split, transformed, source bytes, stored bytes); or a
    quarantine entry {"path", "reason", "detail"} (tagged 'quarantined')."""

    def __init__(self, options: IngestOptions):
        self._options = options
        self._vocabulary = None
        self._ids: dict = {}

    def process(self, candidate: sources.Candidate, vocabulary: list) -> Iterable:
        if vocabulary is not self._vocabulary:
            self._vocabulary, self._ids = vocabulary, {n: i for i, n in enumerate(vocabulary)}
        data, failure = _read(candidate.path)
        o = self._options
        if failure is None:
            result = image_probe.probe_image(
                data, verify=o.verify_images, max_pixels=o.max_pixels, max_side=o.max_side,
                jpeg_quality=o.jpeg_quality, unsupported=o.unsupported_formats)
            if not result.ok:
                failure = {"reason": result.reason, "detail": result.detail}
        if failure is not None:
            yield beam.pvalue.TaggedOutput(QUARANTINED_TAG, {"path": candidate.relpath,
                                                             **failure})
            return
        sha = hashlib.sha256(data).hexdigest()
        # pre_split without a validation folder: only train/ files come here, for train or
        # eval; a test/ folder, when there is one, is the test split.
        test_fraction = 0.0 if o.layout == "pre_split" else o.test_fraction
        split = candidate.split or split_for_hash(sha, o.eval_fraction, test_fraction)
        lane = int(sha[:8], 16) % o.num_shards if o.num_shards else 0
        yield split, lane, _example(candidate, self._ids[candidate.label_name], result)
        yield beam.pvalue.TaggedOutput(META_TAG, (
            sha, candidate.relpath, candidate.label_name, split, result.transformed,
            len(data), len(result.image_bytes)))


class IngestImages(beam.PTransform):
    """PBegin -> Split-*/ shards, labels.txt and ingest_report.json under output_dir.

    Args:
      options: what to ingest; `layout="auto"` is resolved here (one listdir of the root).
      output_dir: the Examples artifact root or `imgpipe ingest --output`.

    Returns:
      The PCollection holding the single report dict (also written to disk).

    Raises:
      ValueError: when the pipeline is built, for a missing data root, a layout that
        does not fit it, a manifest that is not text, or an output folder that is a file
        or lies inside the data root. Bad files never raise; they are reported.
    """

    def __init__(self, options: IngestOptions, output_dir: str):
        super().__init__()
        self._options = options
        self._output_dir = output_dir

    def expand(self, pbegin):
        o = dataclasses.replace(self._options, layout=sources.detect_layout(
            self._options.data_root, self._options.layout))
        out = self._output_dir
        sources.check_output_dir(o.data_root, out)
        listed = pbegin | "ListImageFiles" >> sources.ListImageFiles(o.data_root, o.layout)
        candidates = listed["candidates"]
        vocabulary = (candidates
                      | "LabelNames" >> beam.Map(lambda c: c.label_name)
                      | "DistinctLabels" >> beam.Distinct()
                      | "CollectLabels" >> beam.combiners.ToList()
                      | "SortLabels" >> beam.Map(sorted))
        probed = (candidates
                  | "SpreadReads" >> beam.Reshuffle()
                  | "ReadAndProbe" >> beam.ParDo(
                      _ReadAndProbe(o), vocabulary=beam.pvalue.AsSingleton(vocabulary)
                  ).with_outputs(META_TAG, QUARANTINED_TAG, main="records"))
        written = probed.records | "WriteShards" >> shards.WriteShards(
            out, o.compression, o.num_shards, o.target_shard_bytes)
        _ = vocabulary | "WriteLabels" >> beam.Map(report.write_labels, out)

        meta = probed[META_TAG]
        duplicates = (meta
                      | "KeyByContent" >> beam.Map(lambda m: (m[0], (m[1], m[2], m[3])))
                      | "GroupByContent" >> beam.GroupByKey()
                      | "DuplicateGroups" >> beam.FlatMap(report.duplicate_group))
        events = (
            (meta | "IngestedEvents" >> beam.Map(  # (split, label, transformed, bytes...)
                lambda m: ("ingested", (m[3], m[2], m[4], m[5], m[6]))),
             probed[QUARANTINED_TAG] | "QuarantineEvents" >> beam.Map(
                 lambda q: ("quarantined", q)),
             listed["skipped"] | "SkipEvents" >> beam.Map(
                 lambda s: ("skipped", {"path": s.relpath, "reason": s.reason})),
             listed["empty_folders"] | "EmptyFolderEvents" >> beam.Map(
                 lambda f: ("empty_folder", f)),
             written | "ShardEvents" >> beam.Map(lambda s: ("shard", s)),
             vocabulary | "VocabularyEvent" >> beam.Map(lambda v: ("vocabulary", v)),
             duplicates)
            | "AllEvents" >> beam.Flatten())
        built = events | "BuildReport" >> beam.CombineGlobally(report.ReportFn())
        _ = built | "WriteReport" >> beam.Map(report.write_report, o, out)
        return built
