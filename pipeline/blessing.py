"""What the Evaluator decided, in plain words: per-class metrics, and why nothing was pushed.

TFMA lists each failed threshold (metric, value, bound; absolute or change) in its
ValidationResult, with an empty `message`; `reasons` writes the sentence.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

from ml_metadata.proto import metadata_store_pb2

from pipeline import history
from trainer_module import features

_NAMES = {"sparse_categorical_accuracy": "accuracy"}


def reasons(validation, per_class_metrics: Optional[Dict[str, dict]] = None,
            accuracy: Optional[Dict[str, float]] = None) -> List[str]:
    """One sentence per failed threshold of a tfma ValidationResult proto.

    `per_class_metrics` (from `per_class`) lets a failed min_class_recall name its classes;
    `accuracy` (from `accuracies`) puts both models' values in the change sentence.
    """
    lines = []
    for per_slice in validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            name = _NAMES.get(key.name, key.name)
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if key.is_diff and threshold.HasField("change_threshold"):
                allowed = threshold.change_threshold.absolute.value
                both = accuracy or {}
                values = (f"{name} {both['candidate']:.3f} is {abs(value):.3f} "
                          f"{'below' if value < 0 else 'above'} the latest blessed model's "
                          f"{both['baseline']:.3f}" if name == "accuracy" and
                          {"candidate", "baseline"} <= set(both) else
                          f"{name} is {abs(value):.3f} {'below' if value < 0 else 'above'} "
                          "the latest blessed model's")
                drop = min(1.0, max(0.0, -allowed))  # the config's max_accuracy_drop
                lines.append(f"{values} (max_accuracy_drop {drop:.3f})")
            elif threshold.value_threshold.HasField("lower_bound"):
                bound = threshold.value_threshold.lower_bound.value
                if name == "accuracy":
                    lines.append(f"{name} {value:.3f} < min_accuracy {bound:.3f}")
                elif name == "min_class_recall":
                    low = sorted((m["recall"], c) for c, m in (per_class_metrics or {}).items()
                                 if m["support"] and m["recall"] < bound)
                    named = ", ".join(f"{c} {r:.3f}" for r, c in low)
                    lines.append(f"recall of {'class ' + named if named else 'a class'} < "
                                 f"min_class_recall {bound:.3f}")
                else:
                    lines.append(f"{name} {value:.3f} < {bound:.3f}")
            else:
                lines.append(f"{name} {value:.3f} failed its threshold")
    return lines or ["the Evaluator did not bless it (no failed threshold recorded)"]


def confusion_matrix(evaluation_uri: str) -> Dict[Tuple[int, int], float]:
    """{(actual class id, predicted class id): examples} of the candidate model on the overall
    slice, argmax-exact (with a baseline, TFMA also stores the baseline's matrix).

    Read from the raw plots proto: TFMA's load_eval_result drops zero-valued fields, so class
    0 would lose its id there.
    """
    import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
    out: Dict[Tuple[int, int], float] = {}
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for keyed in plots.plot_keys_and_values:
            if keyed.key.model_name == tfma.BASELINE_KEY:  # the candidate's matrix only
                continue
            matrices = keyed.value.multi_class_confusion_matrix_at_thresholds.matrices
            for entry in (matrices[0].entries if matrices else []):
                key = (entry.actual_class_id, entry.predicted_class_id)
                out[key] = out.get(key, 0.0) + entry.num_weighted_examples
    return out


def per_class(matrix: Dict[Tuple[int, int], float], classes: List[str]) -> Dict[str, dict]:
    """{class name: {"precision", "recall", "f1", "support"}} from an argmax confusion matrix."""
    out = {}
    for i, name in enumerate(classes):
        true_positive = matrix.get((i, i), 0.0)
        predicted = sum(n for (_, p), n in matrix.items() if p == i)
        actual = sum(n for (a, _), n in matrix.items() if a == i)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(actual)}
    return out


def last_evaluation(workdir: str) -> Optional[dict]:
    """The newest Evaluator execution's {"state", "id", "blessed", "reasons", "classes",
    "matrix", "per_class", "accuracy" (see `accuracies`), "examples" (the evaluated Examples
    URI), "model", "baseline", "evaluation"}, or None."""
    store = history.open_store(features.metadata_path(workdir))
    evaluator = history.latest_execution(store, "Evaluator")
    if evaluator is None:
        return None
    outputs = history.artifact_uris(store, evaluator.id, metadata_store_pb2.Event.OUTPUT)
    if "blessing" not in outputs:  # failed before writing anything
        return None
    inputs = history.artifact_uris(store, evaluator.id, metadata_store_pb2.Event.INPUT)
    return dict(evaluation_of(outputs["evaluation"], outputs["blessing"], inputs["examples"],
                              inputs.get("model"), inputs.get("baseline_model")),
                state=metadata_store_pb2.Execution.State.Name(evaluator.last_known_state),
                id=evaluator.id)


def evaluation_of(evaluation_uri: str, blessing_uri: str, examples_uri: str,
                  model_uri: Optional[str] = None,
                  baseline_uri: Optional[str] = None) -> dict:
    """One Evaluator's decision from its artifacts: {"blessed", "reasons", "classes", "matrix",
    "per_class", "accuracy", "examples", "model", "baseline", "evaluation"}.

    Reads through tf.io.gfile, so the artifacts may be local folders or gs:// URIs.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
    blessed = tf.io.gfile.exists(os.path.join(blessing_uri, "BLESSED"))
    with tf.io.gfile.GFile(os.path.join(examples_uri, features.LABELS_FILE), "r") as f:
        classes = f.read().splitlines()
    matrix = confusion_matrix(evaluation_uri)
    metrics = per_class(matrix, classes)
    accuracy = accuracies(evaluation_uri)
    why = [] if blessed else reasons(tfma.load_validation_result(evaluation_uri),
                                     metrics, accuracy)
    return {"blessed": blessed, "reasons": why, "classes": classes, "matrix": matrix,
            "per_class": metrics, "accuracy": accuracy, "examples": examples_uri,
            "model": model_uri, "baseline": baseline_uri, "evaluation": evaluation_uri}


def accuracies(evaluation_uri: str) -> Dict[str, float]:
    """{"candidate": accuracy, "baseline": accuracy (only with a baseline)} on the overall slice."""
    import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
    out = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for keyed in metrics.metric_keys_and_values:
            key = keyed.key
            if key.name == "sparse_categorical_accuracy" and not key.is_diff:
                role = "baseline" if key.model_name == tfma.BASELINE_KEY else "candidate"
                out[role] = keyed.value.double_value.value
    return out


def mistakes(evaluation_uri: str) -> Optional[dict]:
    """The candidate's eval_metrics.MostConfidentMistakes value on the overall slice
    ({"count", "correct", "misclassified_total", "misclassified": [...]}), or None when the
    evaluation has none (an Evaluator configured without it)."""
    import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
    from pipeline import eval_metrics  # pylint: disable=g-import-not-at-top
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for keyed in metrics.metric_keys_and_values:
            key = keyed.key
            if key.name == eval_metrics.MISTAKES_NAME and key.model_name != tfma.BASELINE_KEY:
                return json.loads(keyed.value.bytes_value.decode("utf-8"))
    return None
