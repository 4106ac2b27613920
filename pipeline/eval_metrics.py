"""TFMA metrics this project adds to the Evaluator.

`MinClassRecall`: the lowest per-class recall over classes present in the eval split, with
the argmax decision the classifier makes (TFMA's binarized Recall is one-vs-rest at a 0.5
probability threshold instead). It shares the multi-class confusion matrices that
`MultiClassConfusionMatrixPlot` computes (same thresholds, so TFMA computes them once), and
can carry a threshold, so the Evaluator itself refuses to bless a model that fails a class.

`MostConfidentMistakes`: the eval examples the model gets wrong (argmax != label), the
`limit` most confident first, with their filenames: the run report's grid. It rides on the
predictions TFMA computes anyway, so no component runs the model over the eval split a
second time for it. Its value is a JSON string (`mistakes_json`; TFMA stores a str as the
metric's bytes_value and skips it when diffing against a baseline).

The Evaluator imports this module by name (`MetricConfig.module`), so it must be importable
wherever the Evaluator runs: the project is installed in the pipeline's image.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as mc
from tensorflow_model_analysis.proto import config_pb2
from tensorflow_model_analysis.utils import util

from trainer_module import features

MIN_CLASS_RECALL_NAME = "min_class_recall"
MISTAKES_NAME = "misclassified"
MISTAKES_LIMIT = 64
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


class MostConfidentMistakes(metric_types.Metric):
    """{"count", "correct", "misclassified_total", "misclassified": [{"filename", "label",
    "predicted", "probability"}, ...]} as JSON: at most `limit` mistakes, most confident
    first (ties: by filename). Labels and predictions are class ids."""

    def __init__(self, name: str = MISTAKES_NAME, limit: int = MISTAKES_LIMIT):
        super().__init__(metric_util.merge_per_key_computations(_mistakes), name=name,
                         limit=limit)


metric_types.register_metric(MostConfidentMistakes)


def _mistakes(name: str = MISTAKES_NAME, limit: int = MISTAKES_LIMIT,
              eval_config: Optional[config_pb2.EvalConfig] = None,
              model_name: str = "", output_name: str = "",
              example_weighted: bool = False) -> metric_types.MetricComputations:
    key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                 example_weighted=example_weighted)
    return [metric_types.MetricComputation(
        keys=[key],
        preprocessors=[metric_types.FeaturePreprocessor(feature_keys=[features.FILENAME_KEY])],
        combiner=_MistakesCombiner(key, eval_config, limit))]


def _rank(mistake: tuple) -> tuple:
    return -mistake[0], mistake[1]  # most confident first; ties by filename


class _MistakesCombiner(beam.CombineFn):
    """Accumulator: [examples seen, mistakes seen, mistakes as (probability, filename,
    label, predicted), trimmed to the `limit` best ranked whenever it reaches 2 x limit]."""

    def __init__(self, key: metric_types.MetricKey,
                 eval_config: Optional[config_pb2.EvalConfig], limit: int):
        self._key, self._eval_config, self._limit = key, eval_config, limit

    def create_accumulator(self) -> list:
        return [0, 0, []]

    def _trim(self, mistakes: list, at: int) -> list:
        return sorted(mistakes, key=_rank)[:self._limit] if len(mistakes) >= at else mistakes

    def add_input(self, accumulator: list,
                  element: metric_types.StandardMetricInputs) -> list:
        for label, prediction, _ in metric_util.to_label_prediction_example_weight(
                element, eval_config=self._eval_config, model_name=self._key.model_name,
                output_name=self._key.output_name, flatten=False,
                require_single_example_weight=True):
            probabilities = np.asarray(prediction, dtype=np.float64).reshape(-1)
            actual = int(np.asarray(label).reshape(-1)[0])
            predicted = int(probabilities.argmax())
            accumulator[0] += 1
            if predicted == actual:
                continue
            accumulator[1] += 1
            filename = util.get_by_keys(element.features, [features.FILENAME_KEY],
                                        optional=True)
            filename = np.asarray(filename).reshape(-1)[0] if filename is not None else b""
            if isinstance(filename, bytes):
                filename = filename.decode("utf-8", "replace")
            accumulator[2].append((float(probabilities[predicted]), str(filename), actual,
                                   predicted))
            accumulator[2] = self._trim(accumulator[2], 2 * self._limit)
        return accumulator

    def merge_accumulators(self, accumulators) -> list:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged[0] += accumulator[0]
            merged[1] += accumulator[1]
            merged[2] = self._trim(merged[2] + accumulator[2], 2 * self._limit)
        return merged

    def extract_output(self, accumulator: list) -> Dict[metric_types.MetricKey, str]:
        return {self._key: mistakes_json(accumulator[0], accumulator[1],
                                         self._trim(accumulator[2], 0))}


def mistakes_json(count: int, total: int, ranked: List[tuple]) -> str:
    """The metric's value from (probability, filename, label, predicted) tuples, already
    ranked (`_rank`) and trimmed."""
    return json.dumps({
        "count": count, "correct": count - total, "misclassified_total": total,
        "misclassified": [{"filename": f, "label": l, "predicted": p, "probability": q}
                          for q, f, l, p in ranked]}, ensure_ascii=False)
