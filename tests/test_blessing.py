"""pipeline/blessing.py: TFMA's failed thresholds as sentences (the end-to-end run with a real
Evaluator is in test_local_runner.py)."""
import pytest
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
        "accuracy is 0.040 below the latest blessed model's (max_accuracy_drop 0.010)"]


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


def test_change_failure_names_both_accuracies_when_known():
    result = validation_result_pb2.ValidationResult(validation_ok=False)
    _failure(result, value=-0.04, is_diff=True, change=-0.01)
    assert blessing.reasons(result, accuracy={"candidate": 0.78, "baseline": 0.82}) == [
        "accuracy 0.780 is 0.040 below the latest blessed model's 0.820 "
        "(max_accuracy_drop 0.010)"]


def test_failed_min_class_recall_names_the_classes_below_it():
    result = validation_result_pb2.ValidationResult(validation_ok=False)
    failure = result.metric_validations_per_slice.add().failures.add()
    failure.metric_key.name = "min_class_recall"
    failure.metric_value.double_value.value = 0.25
    failure.metric_threshold.value_threshold.lower_bound.value = 0.6
    per_class = {"cat": {"recall": 0.25, "support": 4}, "dog": {"recall": 0.5, "support": 2},
                 "owl": {"recall": 0.9, "support": 10}, "yak": {"recall": 0.0, "support": 0}}
    assert blessing.reasons(result, per_class) == [
        "recall of class cat 0.250, dog 0.500 < min_class_recall 0.600"]


def _color_model(export_dir, good: bool, size: int = 32) -> str:
    """A SavedModel with the pipeline's signatures: `good` tells red from blue by mean color,
    the other always says red."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top
    from trainer_module import export  # pylint: disable=g-import-not-at-top
    pixels = tf_keras.Input((size, size, 3), dtype=tf.float32)
    mean = tf_keras.layers.GlobalAveragePooling2D()(pixels)
    dense = tf_keras.layers.Dense(2, activation="softmax")
    outputs = dense(mean)
    weights = [[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]] if good else [[0.0] * 2] * 3
    dense.set_weights([tf.constant(weights).numpy() * 0.05,
                       tf.constant([0.0, 0.0] if good else [1.0, 0.0]).numpy()])
    return export.export_model(tf_keras.Model(pixels, outputs), ["red", "blue"], size,
                               str(export_dir))


def test_a_worse_candidate_fails_the_change_threshold_in_real_tfma(tmp_path):
    """The pipeline's eval_config in real TFMA: a model worse than the baseline is not
    blessed, and the reason names the change threshold with both accuracies."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
    from helpers import encode  # pylint: disable=g-import-not-at-top
    from pipeline.evaluation import EvalOptions, eval_config  # pylint: disable=g-import-not-at-top
    from tiny_shards import make_example  # pylint: disable=g-import-not-at-top

    data = tmp_path / "eval.tfrecord"
    with tf.io.TFRecordWriter(str(data)) as writer:
        for i in range(8):
            label = i % 2
            color = (220, 30, 30) if label == 0 else (30, 30, 220)
            png = encode(np.full((20, 24, 3), color, np.uint8), "PNG")
            writer.write(make_example(png, label, ["red", "blue"][label], "png",
                                      (20, 24), filename=f"{['red', 'blue'][label]}/{i}.png"))
    config = eval_config(EvalOptions(min_accuracy=0.0, max_accuracy_drop=0.0))
    candidate = config.model_specs[0]
    candidate.name = tfma.CANDIDATE_KEY
    baseline = config.model_specs.add()
    baseline.CopyFrom(candidate)
    baseline.name, baseline.is_baseline = tfma.BASELINE_KEY, True
    models = [tfma.default_eval_shared_model(_color_model(tmp_path / "bad", good=False),
                                             eval_config=config, model_name=candidate.name),
              tfma.default_eval_shared_model(_color_model(tmp_path / "good", good=True),
                                             eval_config=config, model_name=baseline.name)]
    out = str(tmp_path / "evaluation")
    tfma.run_model_analysis(eval_shared_model=models, eval_config=config,
                            data_location=str(data), output_path=out)
    validation = tfma.load_validation_result(out)
    assert not validation.validation_ok
    accuracy = blessing.accuracies(out)
    assert accuracy == {"candidate": 0.5, "baseline": 1.0}
    assert blessing.reasons(validation, accuracy=accuracy) == [
        "accuracy 0.500 is 0.500 below the latest blessed model's 1.000 "
        "(max_accuracy_drop 0.000)"]
    # The run report's grid: the candidate's mistakes (it calls every image red), with the
    # files they came from and the probability serving_default gives, not the baseline's.
    served = tf.saved_model.load(str(tmp_path / "bad")).signatures["serving_default"]
    (tmp_path / "blue.png").write_bytes(encode(np.full((20, 24, 3), (30, 30, 220), np.uint8),
                                               "PNG"))
    probability = float(np.max(served(image_bytes=tf.constant(
        [(tmp_path / "blue.png").read_bytes()]))["probabilities"].numpy()))
    mistakes = blessing.mistakes(out)
    assert {k: mistakes[k] for k in ("count", "correct", "misclassified_total")} == {
        "count": 8, "correct": 4, "misclassified_total": 4}
    assert [m["filename"] for m in mistakes["misclassified"]] == [
        "blue/1.png", "blue/3.png", "blue/5.png", "blue/7.png"]
    for m in mistakes["misclassified"]:
        assert (m["label"], m["predicted"]) == (1, 0)
        assert m["probability"] == pytest.approx(probability, abs=1e-5)
