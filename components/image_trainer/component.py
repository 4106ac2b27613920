"""ImageTrainer: TFX's Trainer contract (same inputs, outputs and properties) plus `epochs`.

`epochs` is a top-level execution parameter so that the Kubeflow and Vertex specs can make it
a run-time parameter; the executor merges it into `custom_config` for `run_fn`. Everything
else behaves as `tfx.components.Trainer` with `run_fn=`. `vertex=True` swaps in TFX's
Google Cloud Trainer extension, which runs the same `run_fn` as a Vertex AI custom job
configured by `custom_config["ai_platform_training_args"]`.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.image_trainer import executor


class ImageTrainerSpec(standard_component_specs.TrainerSpec):
    PARAMETERS = {**standard_component_specs.TrainerSpec.PARAMETERS,
                  executor.EPOCHS_KEY: ExecutionParameter(type=int, optional=True)}


class ImageTrainer(base_component.BaseComponent):
    """Trains with `run_fn` on raw Examples plus a transform graph.

    Args:
      examples, transform_graph, schema: channels, as for tfx.components.Trainer.
      run_fn: dotted path of the training function.
      train_args, eval_args: TrainArgs / EvalArgs protos.
      custom_config: JSON-able dict handed to run_fn as fn_args.custom_config.
      epochs: overrides custom_config["epochs"]; an int or an int RuntimeParameter.
      vertex: run the training as a Vertex AI custom job instead of in this container.
    """

    SPEC_CLASS = ImageTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, *, examples: types.BaseChannel, transform_graph: types.BaseChannel,
                 schema: types.BaseChannel, run_fn: str,
                 train_args: trainer_pb2.TrainArgs, eval_args: trainer_pb2.EvalArgs,
                 custom_config: Dict[str, Any],
                 epochs: Optional[Union[int, data_types.RuntimeParameter]] = None,
                 vertex: bool = False):
        spec = ImageTrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema,
            train_args=train_args, eval_args=eval_args, run_fn=run_fn,
            custom_config=json.dumps(custom_config, sort_keys=True), epochs=epochs,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun))
        custom = None
        if vertex:  # imported only here: it pulls in google-cloud-aiplatform (~9 s)
            from components.image_trainer import vertex_executor  # pylint: disable=g-import-not-at-top
            custom = executor_spec.ExecutorClassSpec(vertex_executor.VertexExecutor)
        super().__init__(spec=spec, custom_executor_spec=custom)
