"""ArtifactPusher: TFX's Pusher for Kubeflow and Vertex, pushing into its own output artifact.

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

SAVED_MODEL = "saved_model.pb"


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


class ArtifactPusher(Pusher):
    """Pusher(model, model_blessing) whose destination is its `pushed_model` artifact."""
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ArtifactPushExecutor)
