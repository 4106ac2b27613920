"""What several test modules write and read (not a test module): small images and files,
and the SQLite MLMD store of a workdir. tiny_shards.py builds ImageExampleGen output on these.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Dict, List, Tuple, Union

import numpy as np
from ml_metadata.proto import metadata_store_pb2
from PIL import Image


# ------------------------------------------------------------------------- images, files
def encode(image: Union[np.ndarray, Image.Image], fmt: str, **kw) -> bytes:
    """The bytes of `image` (an array or a PIL image) saved as `fmt` ("JPEG", "PNG", ...)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(seed: Union[int, np.random.Generator], height: int, width: int) -> np.ndarray:
    """Uniform RGB noise, height x width; `seed` may be a Generator to draw from in turn."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def write_file(root, rel: str, data: bytes) -> str:
    """Writes root/rel (making its folders); returns its path."""
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def png_declaring(width: int, height: int, rows: int = 0) -> bytes:
    """An 8-bit RGB PNG whose header declares width x height; only the first `rows` rows of
    black pixels follow (0: none), so a decoder fails on it but a header reader does not.
    With rows == height it is a complete, valid image (zlib keeps black rows tiny)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0, then black RGB
    body = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------- MLMD
def mlmd_store(workdir):
    """The MetadataStore of workdir/metadata.sqlite (created if missing)."""
    from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(str(workdir), "metadata.sqlite")
    return metadata_store.MetadataStore(config)


def state_name(execution) -> str:
    """"COMPLETE", "CACHED", "FAILED", ... of an execution."""
    return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


def _type_names(store) -> Dict[int, str]:
    """{execution type id: short name}, e.g. "ImageExampleGen"."""
    return {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}


def executions(workdir, type_name: str) -> List:
    """The executions of one component type (short name), oldest first."""
    store = mlmd_store(workdir)
    ids = {i for i, name in _type_names(store).items() if name == type_name}
    return sorted((e for e in store.get_executions() if e.type_id in ids), key=lambda e: e.id)


def latest_states(workdir) -> Dict[str, Tuple[str, object]]:
    """{component type short name: (state name, execution)} of each type's newest execution."""
    store = mlmd_store(workdir)
    names = _type_names(store)
    return {names[e.type_id]: (state_name(e), e)
            for e in sorted(store.get_executions(), key=lambda e: e.id)}


def states_by_run(workdir) -> Dict[str, Dict[str, str]]:
    """{pipeline run id: {component type short name: state name}}."""
    store = mlmd_store(workdir)
    names = _type_names(store)
    return {context.name: {names[e.type_id]: state_name(e)
                           for e in store.get_executions_by_context(context.id)}
            for context in store.get_contexts_by_type("pipeline_run")}


def latest_artifact_uri(workdir, type_name: str) -> str:
    """The URI of the newest artifact of a type ("Examples", ...)."""
    return max(mlmd_store(workdir).get_artifacts_by_type(type_name), key=lambda a: a.id).uri


# ---------------------------------------------------------------- runs written into MLMD

STATES = {"ran": metadata_store_pb2.Execution.COMPLETE,
          "cached": metadata_store_pb2.Execution.CACHED,
          "failed": metadata_store_pb2.Execution.FAILED,
          "running": metadata_store_pb2.Execution.RUNNING}


def output(store, uri: str, type_name: str = "PushedModel",
           **properties) -> metadata_store_pb2.Artifact:
    """A LIVE output artifact for `record_run` (a cached execution outputs the very artifact
    of the execution it reuses: give it to both)."""
    artifact = metadata_store_pb2.Artifact(
        uri=uri, state=metadata_store_pb2.Artifact.LIVE,
        type_id=store.put_artifact_type(metadata_store_pb2.ArtifactType(name=type_name)))
    for name, value in properties.items():
        field = "int_value" if isinstance(value, int) else "string_value"
        setattr(artifact.custom_properties[name], field, value)
    return artifact


def record_run(store, run_id: str, nodes) -> dict:
    """Writes one pipeline run as TFX's launcher does: an execution per node, in order,
    associated with the run's `pipeline_run` context and the node's `node` context, with an
    OUTPUT event per output key (a failed execution has none). nodes: [(node id, "ran" |
    "cached" | "failed" | "running", {output key: `output` artifact})]. Returns the run as
    history.runs reads it."""
    def context(type_name: str, name: str) -> metadata_store_pb2.Context:
        return metadata_store_pb2.Context(name=name, type_id=store.put_context_type(
            metadata_store_pb2.ContextType(name=type_name)))

    for node, state, outputs in nodes:
        execution = metadata_store_pb2.Execution(
            type_id=store.put_execution_type(
                metadata_store_pb2.ExecutionType(name=f"components.{node}")),
            last_known_state=STATES[state])
        artifacts_and_events = []
        for key, artifact in outputs.items():
            event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
            event.path.steps.add().key = key
            event.path.steps.add().index = 0
            artifacts_and_events.append((artifact, event))
        _, artifact_ids, _ = store.put_execution(
            execution, artifacts_and_events,
            [context("pipeline_run", run_id), context("node", f"imgpipe.{node}")],
            reuse_context_if_already_exist=True)
        for (artifact, _), artifact_id in zip(artifacts_and_events, artifact_ids):
            artifact.id = artifact_id
    from pipeline import history  # pylint: disable=g-import-not-at-top
    return next(r for r in history.runs(store) if r["id"] == run_id)
