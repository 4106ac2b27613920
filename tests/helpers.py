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


def gif_with_screen(data: bytes, width: int, height: int) -> bytes:
    """A GIF's bytes with its logical screen set to width x height; its frames unchanged."""
    patched = bytearray(data)
    patched[6:10] = struct.pack("<HH", width, height)
    return bytes(patched)


def _gif_image_block(data: bytes) -> Tuple[bytes, bytes, int]:
    """(global colour table, first image block from its descriptor to its terminator,
    global table's size bits) of a GIF, found by walking its blocks."""
    packed = data[10]
    table = data[13:13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)]
    pos = 13 + len(table)
    while data[pos] == 0x21:  # extensions: introducer, label, sub-blocks
        pos += 2
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
    assert data[pos] == 0x2C, "no image descriptor"
    end = pos + 10 + (3 << ((data[pos + 9] & 7) + 1) if data[pos + 9] & 0x80 else 0) + 1
    while data[end]:
        end += 1 + data[end]
    return table, data[pos:end + 1], packed & 7


def gif_append_frame(first: bytes, later: bytes) -> bytes:
    """`first` with `later`'s first frame appended as a second frame (carrying `later`'s
    global colour table as its local one): a frame larger than the screen if `later` is."""
    table, block, bits = _gif_image_block(later)
    descriptor = bytearray(block[:10])
    descriptor[9] = 0x80 | bits  # local colour table follows
    return first[:-1] + bytes(descriptor) + table + block[10:] + b";"


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose logical screen is 1 x 1 and whose first frame's descriptor declares
    width x height, with a 2 x 2 frame's data after it: a decoder fails on it, a header
    reader that trusts the screen lets it by."""
    data = encode(Image.new("P", (2, 2)), "GIF")
    _, block, _ = _gif_image_block(data)
    start = data.index(block)
    patched = bytearray(gif_with_screen(data, 1, 1))
    patched[start + 5:start + 9] = struct.pack("<HH", width, height)
    return bytes(patched)


def gif_and_bmp_variants() -> Dict[str, bytes]:
    """Small GIFs and BMPs in each layout TF decodes differently (image_probe's table), plus
    plain JPEG/PNG: {name: bytes}. Names ending in "*" are the ones TF decodes to other
    pixels than the file holds."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    frames = [Image.fromarray(rng.integers(0, 200, (30, 40), dtype=np.uint8)).convert("P")
              for _ in range(3)]
    gif = encode(frames[0], "GIF")
    small = encode(Image.fromarray(rgb).convert("P"), "GIF")  # 10 x 12
    return {
        "jpeg": encode(rgb, "JPEG"), "png": encode(rgb, "PNG"),
        "gif": gif,
        "gif animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "gif frame larger than its screen": gif_with_screen(gif, 10, 10),
        "gif frame smaller than its screen*": gif_with_screen(gif, 80, 60),
        "gif later frame larger than the first*": gif_append_frame(small, gif),
        "bmp 24-bit": encode(rgb, "BMP"),
        "bmp 32-bit": encode(Image.fromarray(rgb).convert("RGBA"), "BMP"),
        "bmp 8-bit grey": encode(Image.fromarray(rgb).convert("L"), "BMP"),
        "bmp 8-bit palette*": encode(Image.fromarray(rgb).convert("P"), "BMP"),
        "bmp 1-bit*": encode(Image.fromarray(rgb).convert("1"), "BMP"),
        "bmp trailing bytes*": encode(rgb, "BMP") + b"\0" * 7,
    }


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
