"""Reading past runs back from the workdir's MLMD store (no TFX orchestration involved).

`latest_execution` finds the newest execution of a component type (any state, failed ones
included: a stopped run is what a user asks about), `artifact_uris` what it read or wrote.
`runs` groups executions by pipeline run; `pushed` and `run_summary` say what one run did.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from trainer_module import features


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    """The SQLite store of a workdir. Raises ValueError when there is none yet."""
    if not os.path.isfile(metadata_path):
        raise ValueError(f"no runs yet: {metadata_path} does not exist (run imgpipe run "
                         "first, with this --workdir).")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def latest_execution(store, type_suffix: str) -> Optional[metadata_store_pb2.Execution]:
    """The newest execution whose type name ends with `type_suffix`, or None."""
    ids = [t.id for t in store.get_execution_types() if t.name.endswith(type_suffix)]
    executions = [e for e in store.get_executions() if e.type_id in ids]
    return max(executions, key=lambda e: e.id) if executions else None


def _artifacts(store, execution_id: int, kind: int) -> Dict[str, metadata_store_pb2.Artifact]:
    """{key: artifact} of the execution's input (kind=Event.INPUT) or output artifacts."""
    events = [e for e in store.get_events_by_execution_ids([execution_id]) if e.type == kind]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    out = {}
    for event in events:
        # One event lists every key of an artifact given twice (model and baseline_model).
        for step in event.path.steps:
            if step.HasField("key"):
                out[step.key] = artifacts[event.artifact_id]
    return out


def artifact_uris(store, execution_id: int, kind: int) -> Dict[str, str]:
    """{key: uri} of the execution's input (kind=Event.INPUT) or output artifacts."""
    return {key: a.uri for key, a in _artifacts(store, execution_id, kind).items()}


def latest_artifact_uri(store, type_name: str) -> Optional[str]:
    """The URI of the newest live artifact of a type (e.g. Examples), or None."""
    live = [a for a in store.get_artifacts_by_type(type_name)
            if a.state == metadata_store_pb2.Artifact.LIVE]
    return max(live, key=lambda a: a.id).uri if live else None


def _plain(custom_properties) -> Dict[str, object]:
    """MLMD custom properties -> {name: int | float | str} (other kinds are left out)."""
    out = {}
    for name, value in custom_properties.items():
        kind = value.WhichOneof("value")
        if kind in ("int_value", "double_value", "string_value"):
            out[name] = getattr(value, kind)
    return out


def properties(execution: metadata_store_pb2.Execution) -> Dict[str, object]:
    """The execution's exec properties as plain values."""
    return _plain(execution.custom_properties)


_TERMINAL = {metadata_store_pb2.Execution.COMPLETE: "ran",
             metadata_store_pb2.Execution.CACHED: "cached",
             metadata_store_pb2.Execution.FAILED: "FAILED",
             metadata_store_pb2.Execution.CANCELED: "canceled"}


def state_word(execution: metadata_store_pb2.Execution, active: bool = True) -> str:
    """ran | cached | FAILED | canceled | running; "not finished" instead of running when
    no run is `active` in the workdir (a run that was killed)."""
    return _TERMINAL.get(execution.last_known_state, "running" if active else "not finished")


def seconds(execution: metadata_store_pb2.Execution) -> float:
    """Wall time of an execution: registered just before its executor starts, updated when
    it is published."""
    return max(0.0, (execution.last_update_time_since_epoch
                     - execution.create_time_since_epoch) / 1000)


def node_ids(store, executions) -> Dict[int, str]:
    """{execution id: pipeline node id ("Trainer", "Evaluator", ...)}."""
    node_type = next((t.id for t in store.get_context_types() if t.name == "node"), None)
    out = {}
    for execution in executions:
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id == node_type:
                out[execution.id] = context.name.split(".", 1)[-1]
    return out


def runs(store) -> list:
    """Every pipeline run, newest first: {"id", "start", "end" (ms since epoch), "nodes":
    [(node id, execution)] in execution order}."""
    out = []
    for context in store.get_contexts_by_type("pipeline_run"):
        executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
        if not executions:
            continue
        names = node_ids(store, executions)
        out.append({"id": context.name, "start": min(e.create_time_since_epoch
                                                     for e in executions),
                    "end": max(e.last_update_time_since_epoch for e in executions),
                    "nodes": [(names.get(e.id, "?"), e) for e in executions]})
    return sorted(out, key=lambda r: r["start"], reverse=True)


def artifact_properties(store, uri: str) -> Dict[str, object]:
    """Custom properties of the newest artifact at `uri` as plain values ({} if none)."""
    matches = store.get_artifacts_by_uri(uri)
    return _plain(max(matches, key=lambda a: a.id).custom_properties) if matches else {}


def push_record(store, execution: metadata_store_pb2.Execution) -> Optional[dict]:
    """What a Pusher execution recorded on its `pushed_model` output: {"pushed": bool,
    "destination" (the pushed version's folder), "version" (str), "still_serving" (the
    folder of the model already serving, when that is why nothing was pushed); each absent
    one None}. None when it recorded nothing: it failed, was canceled or has not finished."""
    if state_word(execution) not in ("ran", "cached"):
        return None
    artifact = _artifacts(store, execution.id, metadata_store_pb2.Event.OUTPUT).get(
        "pushed_model")
    if artifact is None:
        return None
    values = _plain(artifact.custom_properties)
    return {"pushed": bool(values.get("pushed")),
            "destination": values.get("pushed_destination"),
            "version": values.get("pushed_version"),
            "still_serving": values.get(features.STILL_SERVING_KEY)}


def pushed(store, run: dict) -> Optional[dict]:
    """What the Pusher of `run` (one of `runs`) recorded: `push_record` plus "cached" (True
    when the execution came from the cache: then its record is an earlier run's decision, and
    this run pushed nothing). None when the run has no Pusher that finished."""
    for node, execution in run["nodes"]:
        if node == "Pusher":
            record = push_record(store, execution)
            return None if record is None else dict(
                record, cached=state_word(execution) == "cached")
    return None


def run_since(store, first_execution_id: int) -> Optional[dict]:
    """The run (as in `runs`) that started when `first_execution_id` was the store's next
    execution id: the oldest one whose executions all have ids >= it; None if there is none."""
    later = [r for r in runs(store) if r["nodes"][0][1].id >= first_execution_id]
    return min(later, key=lambda r: r["nodes"][0][1].id) if later else None


def run_summary(store, run: dict, active: bool) -> dict:
    """What one run (of `runs`) did, resolvers left out: {"counts": {state word: executions}
    in order of first appearance, "failed": [(node id, state word)] of the executions that
    neither ran nor came from the cache, "evaluation": the URI of its finished Evaluator's
    evaluation or None, "pushed": the version its Pusher pushed (ran or cached) or None}.
    `active` as in `state_word`."""
    counts, failed, evaluation = {}, [], None
    for node, execution in run["nodes"]:
        if node.endswith("resolver"):
            continue
        word = state_word(execution, active)
        counts[word] = counts.get(word, 0) + 1
        if word not in ("ran", "cached"):
            failed.append((node, word))
        elif node == "Evaluator":
            evaluation = artifact_uris(store, execution.id,
                                       metadata_store_pb2.Event.OUTPUT).get("evaluation")
    record = pushed(store, run)
    return {"counts": counts, "failed": failed, "evaluation": evaluation,
            "pushed": record["version"] if record and record["pushed"] else None}
