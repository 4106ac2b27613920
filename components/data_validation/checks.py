"""The gate's verdict: anomalies in plain words (blocking) and warnings (not blocking).

Blocking:
  - every TFDV anomaly ExampleValidator found against the dataset schema, per split, named by
    feature with what the schema expects;
  - a class of the schema's vocabulary with no image in a split (train, eval, and test when
    present): TFDV cannot express "every value present".
Warnings (thresholds from the config):
  - train/eval skew: the L-infinity distance between the splits' class proportions;
  - class imbalance: the largest class over the smallest (classes with images);
  - a high quarantine rate at ingest.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from components.data_validation import schema as schema_lib


def _expected(schema: schema_pb2.Schema, feature_name: str) -> str:
    for feature in schema.feature:
        if feature.name != feature_name:
            continue
        if feature.HasField("string_domain"):
            values = list(feature.string_domain.value)
            shown = ", ".join(values[:20]) + (", ..." if len(values) > 20 else "")
            return f"one of [{shown}]"
        if feature.HasField("int_domain"):
            d = feature.int_domain
            low = d.min if d.HasField("min") else "-inf"
            high = d.max if d.HasField("max") else "inf"
            return f"an integer in [{low}, {high}]"
        if feature.presence.min_fraction:
            return f"present in {feature.presence.min_fraction:.0%} of examples"
    return "what the schema says"


def anomaly_lines(anomalies: Dict[str, anomalies_pb2.Anomalies],
                  schema: schema_pb2.Schema) -> List[str]:
    """One plain-words line per (split, feature) anomaly, sorted."""
    lines = []
    for split, result in sorted(anomalies.items()):
        for feature, info in sorted(result.anomaly_info.items()):
            found = "; ".join((r.description or r.short_description).strip()
                              for r in info.reason) \
                or (info.description or info.short_description).strip()
            lines.append(f"{split} split, feature '{feature}': expected "
                         f"{_expected(schema, feature)}; found: {found}")
        if result.HasField("dataset_anomaly_info"):
            info = result.dataset_anomaly_info
            lines.append(f"{split} split: {info.description or info.short_description}")
    return lines


def missing_class_lines(per_split: Dict[str, Dict[str, int]],
                        schema: schema_pb2.Schema) -> List[str]:
    """A line per schema class with no image in a split that has images."""
    lines = []
    for split, counts in sorted(per_split.items()):
        if not sum(counts.values()):
            continue
        for name in schema_lib.classes(schema):
            if not counts.get(name):
                lines.append(f"{split} split, class '{name}': expected images of every class "
                             f"in the schema; found none (the split has "
                             f"{', '.join(sorted(c for c, n in counts.items() if n))}).")
    return lines


def warning_lines(report: dict, *, label_skew_threshold: float, imbalance_ratio: float,
                  max_quarantine_fraction: float) -> List[str]:
    """Non-blocking warnings from the ingest report (see the module docstring)."""
    lines = []
    per_split = report.get("per_split", {})
    train, eval_ = per_split.get("train", {}), per_split.get("eval", {})
    if sum(train.values()) and sum(eval_.values()):
        names = sorted(set(train) | set(eval_))
        distance, worst = max(
            (abs(train.get(c, 0) / sum(train.values()) - eval_.get(c, 0) / sum(eval_.values())),
             c) for c in names)
        if distance > label_skew_threshold:
            lines.append(f"label skew: class '{worst}' is "
                         f"{train.get(worst, 0) / sum(train.values()):.0%} of train but "
                         f"{eval_.get(worst, 0) / sum(eval_.values()):.0%} of eval "
                         f"(L-inf {distance:.2f} > label_skew_threshold "
                         f"{label_skew_threshold}).")
    counts = {c: n for c, n in report.get("per_class", {}).items() if n}
    if len(counts) >= 2:
        big, small = max(counts, key=counts.get), min(counts, key=counts.get)
        if counts[big] / counts[small] > imbalance_ratio:
            lines.append(f"class imbalance: '{big}' has {counts[big]} images, '{small}' "
                         f"{counts[small]} ({counts[big] / counts[small]:.1f}x > "
                         f"imbalance_ratio {imbalance_ratio}).")
    totals = report.get("counts", {})
    looked_at = totals.get("ingested", 0) + totals.get("quarantined", 0)
    if looked_at and totals.get("quarantined", 0) / looked_at > max_quarantine_fraction:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(
            report.get("quarantine_reasons", {}).items(), key=lambda kv: -kv[1]))
        lines.append(f"quarantine rate: {totals['quarantined']} of {looked_at} image files "
                     f"({totals['quarantined'] / looked_at:.0%} > max_quarantine_fraction "
                     f"{max_quarantine_fraction}): {reasons}.")
    return lines


def verdict(anomalies: Dict[str, anomalies_pb2.Anomalies], schema: schema_pb2.Schema,
            report: dict, **thresholds) -> Tuple[List[str], List[str]]:
    """(blocking lines, warning lines) for one run."""
    blocking = anomaly_lines(anomalies, schema) + missing_class_lines(
        report.get("per_split", {}), schema)
    return blocking, warning_lines(report, **thresholds)
