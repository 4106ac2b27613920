"""pipeline/evaluation.py: the Evaluator's settings and its TFMA config."""
import pytest

from pipeline.evaluation import EvalOptions, eval_config


def test_eval_config_thresholds():
    cfg = eval_config(EvalOptions(min_accuracy=0.7, max_accuracy_drop=0.02))
    (spec,) = cfg.model_specs
    assert (spec.signature_name, spec.label_key, spec.prediction_key) == (
        "from_examples", "label", "probabilities")
    accuracy = cfg.metrics_specs[0].metrics[0]
    assert accuracy.class_name == "SparseCategoricalAccuracy"
    assert accuracy.threshold.value_threshold.lower_bound.value == 0.7
    assert accuracy.threshold.change_threshold.absolute.value < -0.02 + 1e-9
    names = [m.class_name for m in cfg.metrics_specs[0].metrics]
    assert "MinClassRecall" not in names


def test_min_class_recall_adds_its_threshold():
    cfg = eval_config(EvalOptions(min_class_recall=0.4))
    (recall,) = [m for m in cfg.metrics_specs[0].metrics if m.class_name == "MinClassRecall"]
    assert recall.module == "pipeline.eval_metrics"
    assert recall.threshold.value_threshold.lower_bound.value == pytest.approx(0.4)


@pytest.mark.parametrize("field, value", [
    ("min_accuracy", 1.5), ("min_accuracy", -0.1), ("min_accuracy", True),
    ("max_accuracy_drop", -0.01), ("max_accuracy_drop", float("inf")),
    ("min_class_recall", 2.0), ("min_class_recall", float("nan"))])
def test_options_refuse_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=f"^{field}="):
        EvalOptions(**{field: value})
