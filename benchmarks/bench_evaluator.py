"""The Evaluator (TFMA) against a plain predict loop over the same eval split, one process.

    .venv/bin/python benchmarks/bench_evaluator.py --workdir W [--rounds 3]

W is a workdir after `imgpipe run`/`make demo` (it reads the latest Evaluator's inputs from
MLMD: the model and the Examples). Round-robin, so background load hits each side alike:

  plain     load the SavedModel, from_examples over the raw eval shards in batches of 64,
            argmax -> accuracy and the confusion matrix with numpy
  tfma      tfma.run_model_analysis with the pipeline's eval_config (accuracy with its
            thresholds, example count, the argmax confusion matrix) on the same model and
            shards, no baseline: what the Evaluator runs, minus TFX's launcher
  tfma+base the same with the model as its own baseline: the change threshold's cost
            (TFMA runs both models over every example)

It checks that both sides give the same accuracy, and reports each side's best wall time
and the ratios. Results: BENCHMARKS.md, "Evaluator".
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_analysis as tfma  # noqa: E402

from pipeline import blessing, history  # noqa: E402
from trainer_module import features  # noqa: E402
from pipeline.evaluation import EvalOptions, eval_config  # noqa: E402
from trainer_module import dataset, export  # noqa: E402


def plain(model_dir: str, files: list) -> float:
    signature = tf.saved_model.load(model_dir).signatures[export.EXAMPLES_SIGNATURE]
    matrix, correct, count = {}, 0, 0
    records = tf.data.TFRecordDataset(files, dataset.shard_compression(files)).batch(64)
    for batch in records:
        predicted = signature(examples=batch)[export.PROBABILITIES_KEY].numpy().argmax(1)
        labels = np.array([int(dataset.parse_image_label(s)[1]) for s in batch])
        for a, p in zip(labels, predicted):
            matrix[(a, p)] = matrix.get((a, p), 0) + 1
        correct += int((labels == predicted).sum())
        count += len(labels)
    return correct / count


def with_tfma(model_dir: str, files: list, baseline: bool) -> float:
    config = eval_config(EvalOptions(min_accuracy=0.0))
    if not baseline:  # a change threshold needs a baseline; the first run has none either
        for spec in config.metrics_specs:
            for metric in spec.metrics:
                metric.threshold.ClearField("change_threshold")
    else:
        candidate = config.model_specs[0]
        config.model_specs[0].name = tfma.CANDIDATE_KEY
        base = config.model_specs.add()
        base.CopyFrom(candidate)
        base.name, base.is_baseline = tfma.BASELINE_KEY, True
    models = [tfma.default_eval_shared_model(model_dir, eval_config=config,
                                             model_name=spec.name)
              for spec in config.model_specs]
    with tempfile.TemporaryDirectory() as out:
        tfma.run_model_analysis(
            eval_shared_model=models if baseline else models[0], eval_config=config,
            data_location=os.path.join(os.path.dirname(files[0]), "*"), output_path=out)
        return blessing.accuracies(out)["candidate"]


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    evaluation = blessing.last_evaluation(args.workdir)
    if evaluation is None:
        raise SystemExit(f"no Evaluator run in {args.workdir}: run imgpipe first.")
    model_dir = os.path.join(evaluation["model"], "Format-Serving")
    files = dataset.list_shards(os.path.join(evaluation["examples"], "Split-eval"))
    store = history.open_store(features.metadata_path(args.workdir))
    recorded = [(e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000
                for e in store.get_executions_by_id([evaluation["id"]])]
    sides = {"plain": lambda: plain(model_dir, files),
             "tfma": lambda: with_tfma(model_dir, files, baseline=False),
             "tfma+base": lambda: with_tfma(model_dir, files, baseline=True)}
    best, accuracy = {k: float("inf") for k in sides}, {}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            start = time.perf_counter()
            accuracy[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    examples = int(sum(evaluation["matrix"].values()))
    print(f"eval examples: {examples}; Evaluator component as recorded in MLMD: "
          f"{recorded[0]:.1f} s")
    for name in sides:
        print(f"{name:10s} best {best[name]:6.1f} s  {best[name] / best['plain']:.2f}x plain  "
              f"accuracy {accuracy[name]:.4f}")
    assert len({round(a, 4) for a in accuracy.values()}) == 1, accuracy
    return {"best": best, "accuracy": accuracy, "recorded": recorded[0]}


if __name__ == "__main__":
    run()
