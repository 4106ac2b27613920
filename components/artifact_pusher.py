"""Pushers: TFX's Pusher, never pushing the model that already serves, and its cluster form.

ServingPusher (local runs): TFX's Pusher to `serving/<version>/`, except that a blessed model
identical to the newest pushed version (same files, byte for byte: `fingerprint`) is not
pushed again. A re-run whose only change is the Evaluator's baseline blesses the very same
model; it stays the one serving, and the output says which (`pushed` = 0, `still_serving` =
that version's folder).

ArtifactPusher (Kubeflow, Vertex): pushes into its own output artifact.

On a cluster nothing a task writes outside its declared output artifacts survives the pod:
the KFP launcher uploads those and nothing else, and a `minio://` or `s3://` serving folder
cannot even be opened (tf.io.gfile has no filesystem for them). TFX's Pusher already copies
the blessed model into its `pushed_model` artifact "for archiving" after writing it to the
push destination; here that artifact IS the destination, so the model lands in the object
store under the pipeline root on every store the launcher supports.

Contract, as TFX's Pusher: a model whose blessing is not BLESSED is not pushed (`pushed` = 0);
a pushed one gets `pushed` = 1, `pushed_version` (Unix seconds, the same versioning as the
local `serving/<version>/`) and `pushed_destination`, the artifact's own URI, in which
saved_model.pb is written last (a serving system that watches for it sees complete models
only).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components import Pusher
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from trainer_module import features

SAVED_MODEL = "saved_model.pb"


def fingerprint(folder: str) -> str:
    """sha256 over every file's relative path and bytes under `folder` (sorted)."""
    import hashlib  # pylint: disable=g-import-not-at-top
    digest = hashlib.sha256()
    files = sorted(os.path.relpath(os.path.join(d, f), folder)
                   for d, _, names in fileio.walk(folder) for f in names)
    for rel in files:
        digest.update(rel.encode("utf-8") + b"\0")
        with fileio.open(os.path.join(folder, rel), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):  # pylint: disable=cell-var-from-loop
                digest.update(block)
    return digest.hexdigest()


def newest_version(base_directory: str):
    """The newest numeric version folder under `base_directory`, or None."""
    if not fileio.isdir(base_directory):
        return None
    versions = [v.rstrip("/") for v in fileio.listdir(base_directory)
                if v.rstrip("/").isdigit()]
    return os.path.join(base_directory, max(versions, key=int)) if versions else None


class ServingPushExecutor(pusher_executor.Executor):
    """TFX's filesystem push, unless the blessed model is already the newest version."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if self.CheckBlessing(input_dict):
            from tfx.proto import pusher_pb2  # pylint: disable=g-import-not-at-top
            from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
            destination = pusher_pb2.PushDestination()
            proto_utils.json_to_proto(
                exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
            serving = newest_version(destination.filesystem.base_directory)
            if serving and fingerprint(serving) == fingerprint(self.GetModelPath(input_dict)):
                self._MarkNotPushed(model_push)
                model_push.set_string_custom_property(features.STILL_SERVING_KEY, serving)
                logging.info("The blessed model is already serving at %s; not pushed again.",
                             serving)
                return
        super().Do(input_dict, output_dict, exec_properties)


class ArtifactPushExecutor(pusher_executor.Executor):
    """Pushes a blessed model into the `pushed_model` artifact only (see the module doc)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        io_utils.copy_dir(model_path, model_push.uri, deny_regex_patterns=[r"saved_model\.pb"])
        if fileio.exists(os.path.join(model_path, SAVED_MODEL)):
            io_utils.copy_file(os.path.join(model_path, SAVED_MODEL),
                               os.path.join(model_push.uri, SAVED_MODEL))
        self._MarkPushed(model_push, pushed_destination=model_push.uri,
                         pushed_version=str(int(time.time())))
        logging.info("Model pushed to %s.", model_push.uri)


class ServingPusher(Pusher):
    """Pusher(model, model_blessing, push_destination) that skips the model already serving."""
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ServingPushExecutor)


class ArtifactPusher(Pusher):
    """Pusher(model, model_blessing) whose destination is its `pushed_model` artifact."""
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ArtifactPushExecutor)
