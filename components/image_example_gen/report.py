"""`ingest_report.json` and `labels.txt`: folding ingest events into one report.

Every file the listing found produces exactly one of three events: ingested, quarantined
({"path", "reason", "detail"}) or skipped ({"path", "reason"}), so
`counts.found == ingested + quarantined + skipped` holds by construction. Other events add
context without counting as files: duplicate groups, empty class folders, the label
vocabulary and the final shards.

Report keys (JSON):
  data_root, layout, options      what ran
  counts                          {found, ingested, quarantined, skipped}
  classes                         the vocabulary, = labels.txt (label id = position)
  per_class                       {class: images ingested}, every class of the vocabulary
  per_split                       {split: {class: images}}; split_sizes {split: images}
  classes_without_images          classes of the vocabulary with no image ingested
  empty_folders                   class folders holding no (non-hidden) file at all
  quarantine_reasons, skip_reasons  {reason: count}
  quarantined, skipped            the entries, sorted by path (first 100,000 of each)
  duplicates                      [{sha256, paths, labels, splits, labels_conflict,
                                    crosses_splits}] for identical content under >1 path
  duplicate_summary               {groups, files, labels_conflicts, crossing_splits}
  transformed                     {how: count} for re-encoded/downscaled images
  bytes                           {source, stored}: image bytes read and stored
  shards                          {split: {files, records, bytes}} as written

After the pipeline, `finish_output` reads the report back, removes the folders of empty
splits and raises a one-line RuntimeError when the data cannot train a classifier. Both the
TFX executor and `imgpipe ingest` call it; it imports neither TFX nor (for local paths)
TensorFlow.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import posixpath
from typing import Iterable

import apache_beam as beam

from components.image_example_gen import sources
from trainer_module import features

MAX_LISTED = 100_000  # per report list; beyond this only counts are kept
_LISTS = ("quarantined", "skipped", "duplicates", "empty_folders")


class ReportFn(beam.CombineFn):
    """Folds (kind, payload) events into the report dict (see the module docstring)."""

    def create_accumulator(self):
        return {"per_split": collections.Counter(), "transformed": collections.Counter(),
                "quarantine_reasons": collections.Counter(),
                "skip_reasons": collections.Counter(), "ingested": 0, "source_bytes": 0,
                "stored_bytes": 0, "vocabulary": None, "shards": {},
                **{key: [] for key in _LISTS}}

    def add_input(self, acc, event):
        kind, payload = event
        if kind == "ingested":
            split, label, transformed, source_bytes, stored_bytes = payload
            acc["ingested"] += 1
            acc["per_split"][(split, label)] += 1
            acc["source_bytes"] += source_bytes
            acc["stored_bytes"] += stored_bytes
            if transformed:
                acc["transformed"][transformed] += 1
        elif kind == "vocabulary":
            acc["vocabulary"] = list(payload)
        elif kind == "shard":
            totals = acc["shards"].setdefault(payload["split"],
                                              {"files": 0, "records": 0, "bytes": 0})
            totals["files"] += 1
            totals["records"] += payload["records"]
            totals["bytes"] += payload["bytes"]
        else:
            if kind == "quarantined":
                acc["quarantine_reasons"][payload["reason"]] += 1
            elif kind == "skipped":
                acc["skip_reasons"][payload["reason"]] += 1
            key = {"duplicate": "duplicates", "empty_folder": "empty_folders"}.get(kind, kind)
            if len(acc[key]) < MAX_LISTED:
                acc[key].append(payload)
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            for key in ("per_split", "transformed", "quarantine_reasons", "skip_reasons"):
                merged[key].update(acc[key])
            for key in ("ingested", "source_bytes", "stored_bytes"):
                merged[key] += acc[key]
            for key in _LISTS:
                merged[key].extend(acc[key][:MAX_LISTED - len(merged[key])])
            for split, totals in acc["shards"].items():
                into = merged["shards"].setdefault(split, {"files": 0, "records": 0, "bytes": 0})
                for name, value in totals.items():
                    into[name] += value
            if acc["vocabulary"] is not None:
                merged["vocabulary"] = acc["vocabulary"]
        return merged

    def extract_output(self, acc):
        vocabulary = acc["vocabulary"] or []
        per_class = {name: 0 for name in vocabulary}
        per_split: dict = {}
        for (split, label), count in sorted(acc["per_split"].items()):
            per_split.setdefault(split, {})[label] = count
            per_class[label] = per_class.get(label, 0) + count
        quarantined = sum(acc["quarantine_reasons"].values())
        skipped = sum(acc["skip_reasons"].values())
        duplicates = sorted(acc["duplicates"], key=lambda d: d["paths"])
        return {
            "counts": {"found": acc["ingested"] + quarantined + skipped,
                       "ingested": acc["ingested"], "quarantined": quarantined,
                       "skipped": skipped},
            "classes": vocabulary,
            "per_class": per_class,
            "per_split": per_split,
            "split_sizes": {s: sum(c.values()) for s, c in per_split.items()},
            "classes_without_images": [name for name in vocabulary if not per_class[name]],
            "empty_folders": sorted(acc["empty_folders"]),
            "quarantine_reasons": dict(sorted(acc["quarantine_reasons"].items())),
            "skip_reasons": dict(sorted(acc["skip_reasons"].items())),
            "quarantined": sorted(acc["quarantined"], key=lambda e: e["path"]),
            "skipped": sorted(acc["skipped"], key=lambda e: e["path"]),
            "duplicates": duplicates,
            "duplicate_summary": {
                "groups": len(duplicates), "files": sum(len(d["paths"]) for d in duplicates),
                "labels_conflicts": sum(d["labels_conflict"] for d in duplicates),
                "crossing_splits": sum(d["crosses_splits"] for d in duplicates)},
            "transformed": dict(sorted(acc["transformed"].items())),
            "bytes": {"source": acc["source_bytes"], "stored": acc["stored_bytes"]},
            "shards": dict(sorted(acc["shards"].items())),
        }


def duplicate_group(item: tuple) -> Iterable[tuple]:
    """(sha256, [(relpath, label, split)]) -> a ('duplicate', group) event if > 1 path."""
    sha, members = item
    members = sorted(members)
    if len(members) > 1:
        splits = sorted({m[2] for m in members})
        labels = sorted({m[1] for m in members})
        yield ("duplicate", {
            "sha256": sha, "paths": [m[0] for m in members], "labels": labels,
            "splits": splits, "labels_conflict": len(labels) > 1,
            "crosses_splits": len(splits) > 1})


def _write_text(path: str, text: str) -> None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(text.encode("utf-8"))


def write_report(report: dict, options, output_dir: str) -> None:
    report = dict(report, data_root=options.data_root, layout=options.layout,
                  options=dataclasses.asdict(options))
    _write_text(posixpath.join(output_dir, features.REPORT_FILE),
                json.dumps(report, indent=1, ensure_ascii=False, sort_keys=True))


def write_labels(vocabulary: list, output_dir: str) -> None:
    """labels.txt: one class name per line, UTF-8; line i is label id i."""
    bad = [name for name in vocabulary if "\n" in name or "\r" in name or not name]
    if bad:
        raise RuntimeError(f"class names must be non-empty single lines; got {bad!r}")
    _write_text(posixpath.join(output_dir, features.LABELS_FILE),
                "".join(name + "\n" for name in vocabulary))


def check_report(report: dict) -> None:
    """Raises RuntimeError (one line) when the ingested data cannot train a classifier."""
    counts = report["counts"]
    if counts["ingested"] == 0:
        raise RuntimeError(
            f"no images ingested from {report['data_root']}: {counts['found']} files found, "
            f"{counts['quarantined']} quarantined, {counts['skipped']} skipped "
            f"(see {features.REPORT_FILE}).")
    with_images = [name for name, n in report["per_class"].items() if n]
    if len(with_images) < 2:
        raise RuntimeError(f"need at least 2 classes with images, found {len(with_images)} "
                           f"({', '.join(with_images)}) in {report['data_root']}.")
    for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
        if not report["per_split"].get(split):
            raise RuntimeError(
                f"split '{split}' is empty: {counts['ingested']} images are too few for the "
                f"split fractions, or the pre-split tree has no '{split}' folder.")


def finish_output(output_dir: str) -> dict:
    """Reads the report, removes shard folders of empty splits, validates; returns the report.

    Raises:
      RuntimeError: no report (the ingest did not finish) or unusable data (check_report).
    """
    path = posixpath.join(output_dir, features.REPORT_FILE)
    if not sources.path_exists(path):
        raise RuntimeError(f"no {features.REPORT_FILE} in {output_dir}: the ingest did not finish.")
    report = json.loads(sources.read_bytes(path).decode("utf-8"))
    for split in features.SPLITS:
        split_dir = posixpath.join(output_dir, f"Split-{split}")
        if not report["per_split"].get(split) and sources.path_exists(split_dir):
            sources.remove_tree(split_dir)
    check_report(report)
    return report
