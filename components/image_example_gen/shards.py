"""`WriteShards`: (split, lane, serialized record) -> Split-<split>/data_tfrecord-* files.

Why not `beam.io.WriteToTFRecord`: with `num_shards` set it groups every record by a shard
key, and the DirectRunner holds a grouped PCollection in the launcher's memory, so memory
grew with the dataset. Here records go straight from the DoFn that made them into a
`tf.io.TFRecordWriter` (C++ framing and CRC32C) on the same worker; only small file
descriptions ever cross a shuffle.

Two phases, like Beam's own file sinks:
  1. `_WriteTempShards`: each bundle writes its records to its own temporary files under
     `<output>/.ingest-tmp-<run id>/`, one file per (split, lane). With a target size a
     file is closed and a new one opened once it would exceed the target.
  2. `_FinalizeSplit` (after a GroupByKey on split, of descriptions only) decides the final
     shards and moves the bytes there: a group of one temporary file is renamed; a group of
     several is concatenated byte for byte. Concatenation is valid for TFRecord files (each
     record is self-delimiting) and for GZIP ones (a multi-member gzip stream), which
     `tf.data.TFRecordDataset` and Beam's `ReadFromTFRecord` both read (pinned by tests).

Shard count:
  num_shards > 0   exactly num_shards files per non-empty split; lane = content hash mod
                   num_shards, so which image lands in which shard does not depend on
                   bundling. Every bundle writes up to num_shards files, and phase 2 joins
                   lane j of all bundles into shard j (one sequential copy of the split
                   when there was more than one bundle). Some shards are empty (0 records)
                   when a split has fewer images than shards.
  num_shards == 0  files of at most `target_bytes` of records each (a single record larger
                   than the target gets a file of its own). Full files are renamed; each
                   bundle's last, partial file is packed with others (first-fit decreasing)
                   up to the target, so at most one target's worth per bundle is copied.

Retries: a failed bundle's temporary files are never described downstream and disappear
with the temporary folder. Finalizing is idempotent (a source already moved to an
existing destination is skipped). Afterwards `data_tfrecord-*` files in Split-* folders
that this run did not write (a previous run's) are deleted, and so is the temporary folder.
"""
from __future__ import annotations

import posixpath
import uuid
from typing import Iterable, NamedTuple

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

SHARD_PREFIX = "data_tfrecord"
_COPY_BLOCK = 16 << 20
_RECORD_OVERHEAD = 16  # length (8) + length CRC (4) + data CRC (4)


class TempShard(NamedTuple):
    split: str
    lane: int
    path: str
    bytes: int  # record bytes incl. framing, before compression
    records: int
    full: bool  # closed because the next record would pass the target size


def suffix_for(compression: str) -> str:
    return ".gz" if compression == "gzip" else ""


def _tf():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  # only on workers
    return tf


def _writer_options(compression: str):
    return _tf().io.TFRecordOptions(compression_type="GZIP" if compression == "gzip" else "")


class _Open:
    __slots__ = ("path", "writer", "bytes", "records")

    def __init__(self, path: str, compression: str):
        self.path, self.bytes, self.records = path, 0, 0
        self.writer = _tf().io.TFRecordWriter(path, _writer_options(compression))


class _WriteTempShards(beam.DoFn):
    """(split, lane, record) -> records written to temp files; emits TempShard per file."""

    def __init__(self, temp_dir: str, compression: str, target_bytes: int, fixed_lanes: bool):
        self._temp_dir = temp_dir
        self._compression = compression
        self._target = target_bytes
        self._fixed_lanes = fixed_lanes
        self._open: dict = {}

    def setup(self):
        _tf().io.gfile.makedirs(self._temp_dir)

    def start_bundle(self):
        self._open = {}

    def _close(self, split: str, lane: int, full: bool) -> TempShard:
        f = self._open.pop((split, lane))
        f.writer.close()
        return TempShard(split, lane, f.path, f.bytes, f.records, full)

    def process(self, element: tuple) -> Iterable[TempShard]:
        split, lane, record = element
        f = self._open.get((split, lane))
        size = len(record) + _RECORD_OVERHEAD
        if f is not None and not self._fixed_lanes and f.records and \
                f.bytes + size > self._target:
            yield self._close(split, lane, full=True)
            f = None
        if f is None:
            name = f"{split}-{lane:05d}-{uuid.uuid4().hex}.tfrecord"
            f = self._open[(split, lane)] = _Open(posixpath.join(self._temp_dir, name),
                                                  self._compression)
        f.writer.write(record)
        f.bytes += size
        f.records += 1

    def finish_bundle(self) -> Iterable[WindowedValue]:
        for split, lane in sorted(self._open):
            yield WindowedValue(self._close(split, lane, full=False),
                                window.GlobalWindow().max_timestamp(), [window.GlobalWindow()])


def plan_shards(temps: list, num_shards: int, target_bytes: int) -> list:
    """Groups one split's temporary files into final shards: a list of lists of TempShard."""
    temps = sorted(temps, key=lambda t: t.path)
    if num_shards:
        return [[t for t in temps if t.lane == j] for j in range(num_shards)]
    groups = [[t] for t in temps if t.full]
    bins: list = []  # [bytes, [TempShard]]
    for t in sorted((t for t in temps if not t.full), key=lambda t: (-t.bytes, t.path)):
        for b in bins:
            if b[0] + t.bytes <= target_bytes:
                b[0] += t.bytes
                b[1].append(t)
                break
        else:
            bins.append([t.bytes, [t]])
    return groups + [b[1] for b in bins]


def shard_name(split: str, index: int, count: int, compression: str) -> str:
    return posixpath.join(f"Split-{split}",
                          f"{SHARD_PREFIX}-{index:05d}-of-{count:05d}{suffix_for(compression)}")


def _move(group: list, dest: str, compression: str) -> None:
    gfile = _tf().io.gfile
    sources = [t.path for t in group]
    if not sources:
        with _tf().io.TFRecordWriter(dest, _writer_options(compression)):
            pass  # an empty but valid shard keeps the requested shard count
        return
    if not any(gfile.exists(s) for s in sources) and gfile.exists(dest):
        return  # done by an earlier attempt of this bundle
    if len(sources) == 1:
        gfile.rename(sources[0], dest, overwrite=True)
        return
    with gfile.GFile(dest, "wb") as out:
        for source in sources:
            with gfile.GFile(source, "rb") as f:
                for block in iter(lambda: f.read(_COPY_BLOCK), b""):  # pylint: disable=cell-var-from-loop
                    out.write(block)
    for source in sources:
        gfile.remove(source)


class _FinalizeSplit(beam.DoFn):
    """(split, [TempShard]) -> final shards written; emits one dict per final shard."""

    def __init__(self, output_dir: str, compression: str, num_shards: int, target_bytes: int):
        self._output_dir = output_dir
        self._compression = compression
        self._num_shards = num_shards
        self._target = target_bytes

    def process(self, element: tuple) -> Iterable[dict]:
        split, temps = element
        groups = plan_shards(list(temps), self._num_shards, self._target)
        _tf().io.gfile.makedirs(posixpath.join(self._output_dir, f"Split-{split}"))
        for i, group in enumerate(groups):
            name = shard_name(split, i, len(groups), self._compression)
            dest = posixpath.join(self._output_dir, name)
            _move(group, dest, self._compression)
            yield {"split": split, "file": name, "records": sum(t.records for t in group),
                   "bytes": _tf().io.gfile.stat(dest).length}


def _clean_up(written: list, output_dir: str, temp_dir: str) -> None:
    """Removes the temporary folder and shards in Split-* that this run did not write."""
    gfile = _tf().io.gfile
    keep = {posixpath.join(output_dir, s["file"]) for s in written}
    # Listing, not gfile.glob: an output path holding glob characters ("run[1]") would
    # match, and delete, other folders' shards.
    for folder in gfile.listdir(output_dir):
        folder = folder.rstrip("/")
        split_dir = posixpath.join(output_dir, folder)
        if not folder.startswith("Split-") or not gfile.isdir(split_dir):
            continue
        for name in gfile.listdir(split_dir):
            path = posixpath.join(split_dir, name)
            if name.startswith(SHARD_PREFIX + "-") and path not in keep:
                gfile.remove(path)
    if gfile.exists(temp_dir):
        gfile.rmtree(temp_dir)


class WriteShards(beam.PTransform):
    """(split, lane, serialized record) -> Split-<split>/data_tfrecord-SSSSS-of-NNNNN[.gz].

    Args:
      output_dir: the Examples artifact root (any tf.io.gfile filesystem).
      compression: "none" or "gzip" (files then end in .gz).
      num_shards: exact shards per non-empty split; 0 sizes them by `target_bytes`.
      target_bytes: the most record bytes per shard when num_shards is 0.

    Returns:
      PCollection of {"split", "file" (relative to output_dir), "records", "bytes"}, one per
      final shard, emitted once the shard is in place.
    """

    def __init__(self, output_dir: str, compression: str, num_shards: int, target_bytes: int):
        super().__init__()
        self._output_dir = output_dir
        self._compression = compression
        self._num_shards = num_shards
        self._target = target_bytes

    def expand(self, records):
        temp_dir = posixpath.join(self._output_dir, f".ingest-tmp-{uuid.uuid4().hex[:12]}")
        shards = (records
                  | "WriteTempShards" >> beam.ParDo(_WriteTempShards(
                      temp_dir, self._compression, self._target, self._num_shards > 0))
                  | "KeyBySplit" >> beam.Map(lambda t: (t.split, t))
                  | "GroupBySplit" >> beam.GroupByKey()
                  | "FinalizeSplits" >> beam.ParDo(_FinalizeSplit(
                      self._output_dir, self._compression, self._num_shards, self._target)))
        _ = (shards
             | "CollectShards" >> beam.combiners.ToList()
             | "CleanUp" >> beam.Map(_clean_up, self._output_dir, temp_dir))
        return shards
