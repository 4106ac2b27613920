"""Why a run pushed nothing, in plain words, from what the Evaluator recorded.

TFMA lists each failed threshold (metric, value, bound; absolute or change) in its
ValidationResult, with an empty `message`; `reasons` writes the sentence.
"""
from __future__ import annotations

import os
from typing import List, Optional

from ml_metadata.proto import metadata_store_pb2

from pipeline import history

_NAMES = {"sparse_categorical_accuracy": "accuracy"}


def reasons(validation) -> List[str]:
    """One sentence per failed threshold of a tfma ValidationResult proto."""
    lines = []
    for per_slice in validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            name = _NAMES.get(key.name, key.name)
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if key.is_diff and threshold.HasField("change_threshold"):
                allowed = threshold.change_threshold.absolute.value
                lines.append(f"{name} is {abs(value):.3f} {'below' if value < 0 else 'above'} "
                             f"the latest blessed model's (allowed change: "
                             f"{max(allowed, -1.0):+.3f}; max_accuracy_drop)")
            elif threshold.value_threshold.HasField("lower_bound"):
                bound = threshold.value_threshold.lower_bound.value
                lines.append(f"{name} {value:.3f} < min_accuracy {bound:.3f}"
                             if name == "accuracy" else f"{name} {value:.3f} < {bound:.3f}")
            else:
                lines.append(f"{name} {value:.3f} failed its threshold")
    return lines or ["the Evaluator did not bless it (no failed threshold recorded)"]


def last_evaluation(workdir: str) -> Optional[dict]:
    """{"state", "blessed", "reasons"} of the newest Evaluator execution, or None."""
    import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
    store = history.open_store(os.path.join(workdir, "metadata.sqlite"))
    evaluator = history.latest_execution(store, "Evaluator")
    if evaluator is None:
        return None
    outputs = history.artifact_uris(store, evaluator.id, metadata_store_pb2.Event.OUTPUT)
    if "blessing" not in outputs:  # failed before writing anything
        return None
    blessed = os.path.exists(os.path.join(outputs["blessing"], "BLESSED"))
    why = [] if blessed else reasons(tfma.load_validation_result(outputs["evaluation"]))
    return {"state": metadata_store_pb2.Execution.State.Name(evaluator.last_known_state),
            "blessed": blessed, "reasons": why}
