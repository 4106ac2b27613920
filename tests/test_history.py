"""pipeline/history.py: what one run did, read back from a real SQLite MLMD store written here
the way TFX's local launcher writes it (no TFX run: each test takes milliseconds)."""
import pytest

from helpers import mlmd_store, output, record_run
from pipeline import history
from trainer_module import features

def _pushed_model(store, uri, version=None, still_serving=None):
    """A Pusher's outputs as its executor records them (components/artifact_pusher.py):
    pushed = 1 with the destination and version, or pushed = 0 (and still_serving when the
    blessed model is the one serving)."""
    properties = {"pushed": 1 if version else 0}
    if version:
        properties.update(pushed_destination=f"/w/serving/{version}", pushed_version=version)
    if still_serving:
        properties[features.STILL_SERVING_KEY] = still_serving
    return {"pushed_model": output(store, uri, **properties)}


@pytest.fixture
def store(tmp_path):
    return mlmd_store(tmp_path)


def test_a_run_whose_pusher_pushed_gives_its_version_and_destination(store):
    run = record_run(store, "run-1", [
        ("Evaluator", "ran", {"evaluation": output(store, "/w/Evaluator/evaluation/7",
                                                   "ModelEvaluation")}),
        ("Pusher", "ran", _pushed_model(store, "/w/Pusher/pushed_model/8", version="1700000000"))])
    assert history.pushed(store, run) == {
        "pushed": True, "destination": "/w/serving/1700000000", "version": "1700000000",
        "still_serving": None, "cached": False}
    assert history.run_summary(store, run, active=False) == {
        "counts": {"ran": 2}, "failed": [], "evaluation": "/w/Evaluator/evaluation/7",
        "pushed": "1700000000"}


def test_a_pusher_that_found_the_model_already_serving_recorded_pushed_0(store):
    run = record_run(store, "run-2", [
        ("Pusher", "ran", _pushed_model(store, "/w/Pusher/pushed_model/9",
                                        still_serving="/w/serving/1700000000"))])
    assert history.pushed(store, run) == {
        "pushed": False, "destination": None, "version": None,
        "still_serving": "/w/serving/1700000000", "cached": False}
    assert history.run_summary(store, run, active=False)["pushed"] is None


def test_an_unblessed_model_is_not_pushed_and_nothing_serves_for_that_reason(store):
    run = record_run(store, "run-3", [
        ("Pusher", "ran", _pushed_model(store, "/w/Pusher/pushed_model/10"))])
    assert history.pushed(store, run) == {
        "pushed": False, "destination": None, "version": None, "still_serving": None,
        "cached": False}


def test_a_run_without_a_pusher_has_no_push_record(store):
    run = record_run(store, "validate-only", [
        ("ImageExampleGen", "ran", {"examples": output(store, "/w/ImageExampleGen/examples/1",
                                                       "Examples")}),
        ("DataGate", "ran", {})])
    assert history.pushed(store, run) is None
    assert history.run_summary(store, run, active=False) == {
        "counts": {"ran": 2}, "failed": [], "evaluation": None, "pushed": None}


def test_a_failed_pusher_recorded_no_decision(store):
    run = record_run(store, "run-4", [
        ("Trainer", "cached", {}),
        ("Evaluator", "ran", {"evaluation": output(store, "/w/Evaluator/evaluation/11",
                                                   "ModelEvaluation")}),
        ("Pusher", "failed", {})])
    assert history.pushed(store, run) is None
    assert history.run_summary(store, run, active=False) == {
        "counts": {"cached": 1, "ran": 1, "FAILED": 1}, "failed": [("Pusher", "FAILED")],
        "evaluation": "/w/Evaluator/evaluation/11", "pushed": None}


def test_a_cached_pusher_repeats_an_earlier_runs_record_and_says_it_is_cached(store):
    earlier = _pushed_model(store, "/w/Pusher/pushed_model/12", version="1700000000")
    record_run(store, "run-5", [("Pusher", "ran", earlier)])
    run = record_run(store, "run-6", [("Pusher", "cached", earlier)])
    assert history.pushed(store, run) == {
        "pushed": True, "destination": "/w/serving/1700000000", "version": "1700000000",
        "still_serving": None, "cached": True}
    # The runs table shows which version that Pusher's record names, as for a run that ran.
    assert history.run_summary(store, run, active=False)["pushed"] == "1700000000"


def test_an_unfinished_run_counts_its_node_as_running_or_not_finished(store):
    run = record_run(store, "run-7", [
        ("latest_blessed_model_resolver", "ran", {}),
        ("Trainer", "running", {})])
    assert history.run_summary(store, run, active=True)["failed"] == [("Trainer", "running")]
    summary = history.run_summary(store, run, active=False)
    assert summary["counts"] == {"not finished": 1}  # the resolver is bookkeeping
    assert summary["failed"] == [("Trainer", "not finished")]
    assert history.pushed(store, run) is None


def test_run_since_finds_the_run_that_started_after_an_execution_id(store):
    record_run(store, "before", [("Pusher", "ran", _pushed_model(store, "/w/p/1", version="1"))])
    first_id = max(e.id for e in store.get_executions()) + 1
    assert history.run_since(store, first_id) is None
    record_run(store, "this", [("Trainer", "ran", {}),
                               ("Pusher", "ran", _pushed_model(store, "/w/p/2", version="2"))])
    record_run(store, "after", [("Trainer", "cached", {})])
    run = history.run_since(store, first_id)
    assert run["id"] == "this"
    assert history.pushed(store, run)["version"] == "2"
