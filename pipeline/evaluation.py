"""The Evaluator's settings (`EvalOptions`) and its TFMA config (`eval_config`).

`EvalOptions` is plain Python (settings load without TFMA); `eval_config` imports TFMA.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

from trainer_module import features


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """When the Evaluator blesses a model.

    Raises (on construction):
      ValueError: naming the first bad field, its value and what is allowed.
    """
    min_accuracy: float = 0.5  # absolute lower bound of the eval split's accuracy
    max_accuracy_drop: float = 0.0  # allowed drop against the latest blessed model
    # Lowest allowed recall of any class (argmax decisions); None: no per-class threshold.
    min_class_recall: Optional[float] = None

    def __post_init__(self):
        if not 0.0 <= _number(self.min_accuracy) <= 1.0:
            raise ValueError(f"min_accuracy={self.min_accuracy!r}: must be in [0, 1].")
        if not 0.0 <= _number(self.max_accuracy_drop) < math.inf:
            raise ValueError(f"max_accuracy_drop={self.max_accuracy_drop!r}: must be >= 0.")
        if self.min_class_recall is not None and not 0.0 <= _number(
                self.min_class_recall) <= 1.0:
            raise ValueError(f"min_class_recall={self.min_class_recall!r}: must be in [0, 1] "
                             "(or unset).")


def eval_config(options: EvalOptions):
    """TFMA config on the from_examples signature: accuracy (absolute and change thresholds),
    example count, and the argmax multi-class confusion matrix (per-class precision, recall
    and F1 derive from it: pipeline/blessing.py); with `min_class_recall`, also the lowest
    per-class recall (pipeline/eval_metrics.py), which no class may fall below; and the most
    confident mistakes with their filenames (eval_metrics.MostConfidentMistakes: the run
    report's grid). model_type is pinned to tf_generic so TFMA does not guess it by trying
    to load a Keras model."""
    import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
    from pipeline import eval_metrics  # pylint: disable=g-import-not-at-top
    accuracy = tfma.MetricConfig(
        class_name="SparseCategoricalAccuracy",
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(
                lower_bound={"value": options.min_accuracy}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -options.max_accuracy_drop - 1e-10})))
    metrics = [accuracy, tfma.MetricConfig(class_name="ExampleCount"),
               tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
               tfma.MetricConfig(class_name="MostConfidentMistakes",
                                 module=eval_metrics.__name__)]
    if options.min_class_recall is not None:
        metrics.append(tfma.MetricConfig(
            class_name="MinClassRecall", module=eval_metrics.__name__,
            threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                lower_bound={"value": options.min_class_recall}))))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=features.EXAMPLES_SIGNATURE,
                                    model_type=tfma.TF_GENERIC,
                                    label_key=features.LABEL_KEY,
                                    prediction_key=features.PROBABILITIES_KEY)],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)
