"""ImageExampleGen: image folders, pre-split trees or CSV manifests -> Examples.

A thin declaration over `ingest.IngestImages`. Outputs the standard `Examples` artifact:
`Split-train/`, `Split-eval/` (and `Split-test/` when asked for) TFRecord shards of
tf.train.Example with the features in `trainer_module/features.py`, plus `labels.txt` and
`ingest_report.json` at the artifact root.

Caching: `FingerprintDriver` adds a hash of the data root's listing (relative paths, sizes,
mtimes; a manifest's bytes) to the exec properties, so a rerun on unchanged data reuses
the cached artifact and any added, removed or edited file runs the ingest again.
`data_root`, when given, replaces the options' data root. It may be a TFX
RuntimeParameter, which is how the Kubeflow and Vertex specs make the data root a run-time
parameter (custom drivers do not run there; see kubeflow/targets.py for how the cache is kept
honest without the fingerprint).
Beam flags come from `.with_beam_pipeline_args([...])`; ingest.py lists the DirectRunner
modes and the Dataflow flags.
"""
from __future__ import annotations

from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.image_example_gen import driver, executor
from components.image_example_gen.options import IngestOptions


class ImageExampleGenSpec(types.ComponentSpec):
    PARAMETERS = {
        driver.INGEST_OPTIONS_KEY: ExecutionParameter(type=str),
        # Overrides the options' data_root; a RuntimeParameter on Kubeflow/Vertex.
        driver.DATA_ROOT_KEY: ExecutionParameter(type=str, optional=True),
        # Filled in by FingerprintDriver at run time; part of the cache key.
        driver.INPUT_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class ImageExampleGen(base_beam_component.BaseBeamComponent):
    """Ingests images as encoded bytes into sharded tf.Example TFRecords.

    Args:
      options: what to ingest (data root, resolved layout, splits, verification, shards).
      data_root: replaces `options.data_root` at run time when given (str or a str
        RuntimeParameter).
      input_fingerprint: normally left to FingerprintDriver.
    """

    SPEC_CLASS = ImageExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.FingerprintDriver

    def __init__(self, options: IngestOptions,
                 data_root: Optional[Union[str, data_types.RuntimeParameter]] = None,
                 input_fingerprint: Optional[str] = None):
        spec = ImageExampleGenSpec(
            ingest_options=options.to_json(),
            data_root=data_root,
            input_fingerprint=input_fingerprint,
            examples=types.Channel(type=standard_artifacts.Examples))
        super().__init__(spec=spec)
