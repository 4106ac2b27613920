"""pipeline/run_report.py: what the run report collects from a run's records (the report of
a real run, with a real Evaluator and Trainer, is checked in test_local_runner.py)."""
import json
import os

from components.reports import data_page
from helpers import mlmd_store
from pipeline import run_report
from tiny_shards import write_tiny_examples


def test_training_history_joins_both_stages(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "head.done.json").write_text(json.dumps(
        {"epoch": [0, 1], "loss": [2.0, 1.5], "val_accuracy": [0.4, 0.5]}))
    (checkpoints / "fine_tune.done.json").write_text(json.dumps(
        {"epoch": [2], "loss": [1.0], "val_accuracy": [0.7]}))
    history = run_report.training_history(str(tmp_path))
    assert history == {"stage_starts": [2], "loss": [2.0, 1.5, 1.0],
                       "val_accuracy": [0.4, 0.5, 0.7]}


def test_no_evaluation_yet_means_no_report(tmp_path):
    mlmd_store(tmp_path)  # an empty, real store
    assert run_report.build(str(tmp_path)) is None
    assert not os.path.exists(tmp_path / "reports")


def test_the_data_sections_come_from_the_verdict_the_gate_recorded(tmp_path):
    """The gate's result holds its verdict; the report reads it, it does not check again
    (no schema or anomalies are given, so a re-check could not even run)."""
    write_tiny_examples(tmp_path / "examples")
    result = tmp_path / "result"
    result.mkdir()
    assert run_report.gate_record(str(tmp_path / "examples"), None, str(result)) is None
    (result / data_page.VERDICT_JSON).write_text(json.dumps(
        {"passed": True, "blocking": [], "warnings": ["class 'b' has 40% of train"],
         "report": "/elsewhere/index.html"}))
    record = run_report.gate_record(str(tmp_path / "examples"), "stats_uri", str(result))
    assert record == {"examples_uri": str(tmp_path / "examples"), "statistics_uri": "stats_uri",
                      "report": json.loads((tmp_path / "examples" / "ingest_report.json")
                                           .read_text()),
                      "blocking": [], "warnings": ["class 'b' has 40% of train"]}


def test_recorded_accuracies_come_from_each_run_reports_numbers(tmp_path):
    """What `imgpipe runs` shows without TFMA: each report's run.json, by evaluation URI."""
    from components.reports import run_page  # pylint: disable=g-import-not-at-top
    write_tiny_examples(tmp_path / "examples")
    evaluation = {"blessed": True, "reasons": [], "baseline": None, "classes": ["a", "b"],
                  "examples": str(tmp_path / "examples"), "evaluation": "/w/Evaluator/7",
                  "accuracy": {"candidate": 0.75}, "matrix": {(0, 0): 3, (1, 1): 1},
                  "per_class": {}}
    reports = tmp_path / "reports"
    run_page.render(str(reports / "run-7"), evaluation, pushed=None, serving=None,
                    curves={"stage_starts": []}, mistakes=None)
    (reports / "run-8").mkdir()
    (reports / "run-8" / run_page.RUN_JSON).write_text("{not json")  # being written
    (reports / "run-9").mkdir()
    (reports / "run-9" / run_page.RUN_JSON).write_text('{"accuracy": {}}')  # an older report
    assert run_report.recorded_accuracies(str(reports)) == {"/w/Evaluator/7": {"candidate": 0.75}}
    assert run_report.recorded_accuracies(str(tmp_path / "none")) == {}
