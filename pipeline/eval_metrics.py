"""TFMA metrics this project adds to the Evaluator.

`MinClassRecall`: the lowest per-class recall over classes present in the eval split, with
the argmax decision the classifier makes (TFMA's binarized Recall is one-vs-rest at a 0.5
probability threshold instead). It shares the multi-class confusion matrices that
`MultiClassConfusionMatrixPlot` computes (same thresholds, so TFMA computes them once), and
can carry a threshold, so the Evaluator itself refuses to bless a model that fails a class.

The Evaluator imports this module by name (`MetricConfig.module`), so it must be importable
wherever the Evaluator runs: the project is installed in the pipeline's image.
"""
from __future__ import annotations

from typing import Dict, Optional

from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as mc
from tensorflow_model_analysis.proto import config_pb2

MIN_CLASS_RECALL_NAME = "min_class_recall"
_ARGMAX = [0.0]  # the plot's default threshold: every example's top class counts


def min_recall(entries: Dict[tuple, float]) -> float:
    """Lowest recall over actual classes of {(actual, predicted): weight}; 0.0 when empty."""
    actual, hits = {}, {}
    for (actual_id, predicted_id), weight in entries.items():
        actual[actual_id] = actual.get(actual_id, 0.0) + weight
        if actual_id == predicted_id:
            hits[actual_id] = hits.get(actual_id, 0.0) + weight
    return min((hits.get(c, 0.0) / n for c, n in actual.items() if n > 0), default=0.0)


class MinClassRecall(metric_types.Metric):
    """min over classes of TP / (TP + FN), argmax-exact."""

    def __init__(self, name: str = MIN_CLASS_RECALL_NAME):
        super().__init__(metric_util.merge_per_key_computations(_min_class_recall), name=name)


metric_types.register_metric(MinClassRecall)


def _min_class_recall(name: str = MIN_CLASS_RECALL_NAME,
                      eval_config: Optional[config_pb2.EvalConfig] = None,
                      model_name: str = "", output_name: str = "",
                      example_weighted: bool = False) -> metric_types.MetricComputations:
    key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                 example_weighted=example_weighted)
    computations = mc.multi_class_confusion_matrices(
        thresholds=_ARGMAX, eval_config=eval_config, model_name=model_name,
        output_name=output_name, example_weighted=example_weighted)
    matrices_key = computations[-1].keys[-1]

    def result(metrics):
        matrices = metrics[matrices_key]
        entries = next(iter(matrices.values()), {}) if matrices else {}
        return {key: min_recall({(k.actual_class_id, k.predicted_class_id): v
                                 for k, v in entries.items()})}

    computations.append(metric_types.DerivedMetricComputation(keys=[key], result=result))
    return computations
