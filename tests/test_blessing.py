"""pipeline/blessing.py: TFMA's failed thresholds as sentences (the end-to-end run with a real
Evaluator is in test_local_runner.py)."""
from tensorflow_model_analysis.proto import validation_result_pb2

from pipeline import blessing


def _failure(result, *, value, is_diff, lower_bound=None, change=None):
    failure = result.metric_validations_per_slice.add().failures.add()
    failure.metric_key.name = "sparse_categorical_accuracy"
    failure.metric_key.is_diff = is_diff
    failure.metric_value.double_value.value = value
    if lower_bound is not None:
        failure.metric_threshold.value_threshold.lower_bound.value = lower_bound
    if change is not None:
        failure.metric_threshold.change_threshold.absolute.value = change


def test_absolute_and_change_failures_in_words():
    result = validation_result_pb2.ValidationResult(validation_ok=False)
    _failure(result, value=0.41, is_diff=False, lower_bound=0.5)
    _failure(result, value=-0.04, is_diff=True, change=-0.01)
    assert blessing.reasons(result) == [
        "accuracy 0.410 < min_accuracy 0.500",
        "accuracy is 0.040 below the latest blessed model's (allowed change: -0.010; "
        "max_accuracy_drop)"]


def test_no_recorded_failure_still_gives_a_reason():
    assert blessing.reasons(validation_result_pb2.ValidationResult()) == [
        "the Evaluator did not bless it (no failed threshold recorded)"]


def test_per_class_precision_recall_f1_from_an_argmax_confusion_matrix():
    matrix = {(0, 0): 8.0, (0, 1): 2.0, (1, 1): 5.0, (1, 0): 0.0, (2, 0): 1.0}
    result = blessing.per_class(matrix, ["a", "b", "c"])
    assert result["a"] == {"precision": 8 / 9, "recall": 0.8,
                           "f1": 2 * (8 / 9) * 0.8 / (8 / 9 + 0.8), "support": 10}
    assert result["b"]["precision"] == 5 / 7 and result["b"]["recall"] == 1.0
    assert result["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
