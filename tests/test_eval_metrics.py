"""pipeline/eval_metrics.py: the metrics the Evaluator adds (in real TFMA: test_blessing.py and
the end-to-end run in test_local_runner.py)."""
import json

import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from pipeline import eval_metrics


def test_min_recall_over_present_classes_is_argmax_exact():
    matrix = {(0, 0): 8.0, (0, 1): 2.0, (1, 1): 5.0, (2, 0): 1.0, (2, 2): 3.0}
    assert eval_metrics.min_recall(matrix) == 0.75  # class 2: 3 of 4; class 0: 0.8
    assert eval_metrics.min_recall({}) == 0.0


def _inputs(label, probabilities, filename):
    return metric_types.StandardMetricInputs({
        "labels": np.array([label]), "predictions": np.array(probabilities, np.float32),
        "example_weights": np.array([1.0]),
        "features": {"filename": np.array([filename.encode()], dtype=object)}})


def _combiner(limit):
    computation, = eval_metrics.MostConfidentMistakes(limit=limit).computations()
    return computation.combiner, computation.keys[0]


def test_mistakes_keep_the_most_confident_across_merged_accumulators():
    combiner, key = _combiner(limit=3)
    rows = [(0, [0.9, 0.1], "right.jpg"), (0, [0.2, 0.8], "b/0.8.jpg"),
            (1, [0.6, 0.4], "a/0.6.jpg"), (1, [0.95, 0.05], "a/0.95.jpg"),
            (0, [0.3, 0.7], "b/0.7.jpg"), (1, [0.1, 0.9], "right2.jpg"),
            (1, [0.55, 0.45], "a/0.55.jpg")]
    halves = []
    for part in (rows[:4], rows[4:]):  # two bundles, as Beam may split them
        accumulator = combiner.create_accumulator()
        for label, probabilities, name in part:
            accumulator = combiner.add_input(accumulator, _inputs(label, probabilities, name))
        halves.append(accumulator)
    value = json.loads(combiner.extract_output(combiner.merge_accumulators(halves))[key])
    assert (value["count"], value["correct"], value["misclassified_total"]) == (7, 2, 5)
    assert [(m["filename"], m["label"], m["predicted"]) for m in value["misclassified"]] == [
        ("a/0.95.jpg", 1, 0), ("b/0.8.jpg", 0, 1), ("b/0.7.jpg", 0, 1)]
    assert [m["probability"] for m in value["misclassified"]] == \
        [np.float32(p).item() for p in (0.95, 0.8, 0.7)]


def test_no_mistakes_and_equal_confidence_order_by_filename():
    combiner, key = _combiner(limit=2)
    accumulator = combiner.create_accumulator()
    assert json.loads(combiner.extract_output(accumulator)[key]) == {
        "count": 0, "correct": 0, "misclassified_total": 0, "misclassified": []}
    for name in ("c.png", "a.png", "b.png"):
        accumulator = combiner.add_input(accumulator, _inputs(1, [0.75, 0.25], name))
    value = json.loads(combiner.extract_output(accumulator)[key])
    assert value["misclassified_total"] == 3
    assert [m["filename"] for m in value["misclassified"]] == ["a.png", "b.png"]
