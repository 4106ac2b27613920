"""The run report of a local run, from what MLMD recorded (`build(workdir)`; `imgpipe
report` rebuilds it), into workdir/reports/run-<Evaluator execution id>/ (the files:
components/reports/run_page.py).

Inputs: the Evaluator's metrics and plots (TFMA, read by pipeline/blessing.py), the Trainer's
model_run folder (checkpoints/<stage>.done.json histories), the Pusher's output, and the
DataGate's recorded verdict with the examples and statistics it read. Nothing is recomputed:
not the model's predictions, not the gate's checks.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, Optional

from ml_metadata.proto import metadata_store_pb2

from components.reports import data_page, run_page
from components.reports.page import gfile
from pipeline import blessing, history
from trainer_module import features


def training_history(model_run_uri: str) -> Dict[str, list]:
    """{metric: per-epoch values} over both stages, and "stage_starts" (epoch indexes)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from trainer_module import train  # pylint: disable=g-import-not-at-top
    out: Dict[str, list] = {"stage_starts": []}
    for stage in (train.HEAD, train.FINE_TUNE):
        path = os.path.join(model_run_uri, "checkpoints", f"{stage}.done.json")
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path, "r") as f:
            stage_history = json.load(f)
        first = max((len(v) for k, v in out.items() if k != "stage_starts"), default=0)
        if first:
            out["stage_starts"].append(first)
        for key, values in stage_history.items():
            if key != "epoch":
                out.setdefault(key, []).extend(float(v) for v in values)
    return out


def _producer_outputs(store, artifact_uri: str) -> Dict[str, str]:
    """Output URIs of the execution that wrote the artifact at `artifact_uri`."""
    artifacts = store.get_artifacts_by_uri(artifact_uri) if artifact_uri else []
    if not artifacts:
        return {}
    events = [e for e in store.get_events_by_artifact_ids([a.id for a in artifacts])
              if e.type == metadata_store_pb2.Event.OUTPUT]
    return history.artifact_uris(store, events[0].execution_id,
                                 metadata_store_pb2.Event.OUTPUT) if events else {}


def _pushed(store) -> Optional[dict]:
    """The newest Pusher's record (history.push_record), or None."""
    pusher = history.latest_execution(store, "Pusher")
    return history.push_record(store, pusher) if pusher is not None else None


def recorded_accuracies(reports_dir: str) -> Dict[str, dict]:
    """{Evaluator output URI: its accuracies} from the run reports in `reports_dir` (their
    run.json): what `imgpipe runs` shows without importing TFMA (~10 s) to read the metrics
    again. Runs without a report (e.g. `tfx run create`) are not in it."""
    found = {}
    for path in glob.glob(os.path.join(reports_dir, "run-*", run_page.RUN_JSON)):
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            found[saved["evaluation"]] = saved["accuracy"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a report of an older version, or one being written
    return found


def gate_record(examples_uri: str, statistics_uri: Optional[str],
                result_uri: str) -> Optional[dict]:
    """data_page.render's arguments from what a DataGate recorded: the verdict in its result
    artifact (written when it passed) and the examples and statistics it read; None when the
    result holds no verdict."""
    files = gfile()
    path = os.path.join(result_uri, data_page.VERDICT_JSON)
    if not files.exists(path):
        return None
    with files.GFile(path, "r") as f:
        verdict = json.load(f)
    with files.GFile(os.path.join(examples_uri, features.REPORT_FILE), "r") as f:
        report = json.load(f)
    return {"examples_uri": examples_uri, "statistics_uri": statistics_uri, "report": report,
            "blocking": verdict["blocking"], "warnings": verdict["warnings"]}


def _gate_record(store) -> Optional[dict]:
    gate = history.latest_execution(store, "DataGate")
    if gate is None:
        return None
    inputs = history.artifact_uris(store, gate.id, metadata_store_pb2.Event.INPUT)
    result = history.artifact_uris(store, gate.id, metadata_store_pb2.Event.OUTPUT).get(
        "result")
    if not result or "examples" not in inputs:
        return None
    return gate_record(inputs["examples"], inputs.get("statistics"), result)


def build(workdir: str, reports_dir: Optional[str] = None,
          evaluation: Optional[dict] = None) -> Optional[str]:
    """Renders the report of the latest evaluated run; returns index.html's path, or None
    when no Evaluator has run in `workdir` yet. `evaluation`: blessing.last_evaluation's
    result when the caller already has it."""
    evaluation = evaluation or blessing.last_evaluation(workdir)
    if evaluation is None:
        return None
    store = history.open_store(features.metadata_path(workdir))
    out_dir = os.path.join(reports_dir or features.reports_dir(workdir),
                           f"run-{evaluation['id']}")
    serving_root = features.serving_dir(workdir)
    versions = sorted((v for v in os.listdir(serving_root) if v.isdigit()), key=int) \
        if os.path.isdir(serving_root) else []
    model_run = _producer_outputs(store, evaluation["model"] or "").get("model_run")
    return run_page.render(
        out_dir, evaluation, pushed=_pushed(store),
        serving=os.path.join(serving_root, versions[-1]) if versions else None,
        curves=training_history(model_run) if model_run else {"stage_starts": []},
        mistakes=blessing.mistakes(evaluation["evaluation"]),
        data=_gate_record(store))
