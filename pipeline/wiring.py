"""`create_pipeline(config)`: the one wiring of the TFX pipeline.

Pure: builds component objects from the config and touches no files, environment or
network. Every runner (local, `tfx` CLI, Kubeflow, Vertex) calls it and adds only paths
and runner settings.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Union

# Not `from tfx import v1`: tfx.v1 imports every extension, and with them
# google-cloud-aiplatform (~9 s of every local run's start on 2 cores).
from tfx.components import Evaluator, ExampleValidator, StatisticsGen, Transform
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.orchestration import data_types
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import pusher_pb2, trainer_pb2, transform_pb2
from tfx.types import Channel, standard_artifacts

from components.artifact_pusher import ArtifactPusher, ServingPusher
from components.data_validation import schema as schema_lib
from components.data_validation.component import DataGate, DatasetSchemaGen
from components.image_example_gen.component import ImageExampleGen
from components.image_trainer.component import ImageTrainer
from pipeline import evaluation
from pipeline.config import PipelineConfig
from trainer_module import features
from trainer_module.options import RESTART_BACKUP_INTERVAL_S

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURATED_SCHEMA = schema_lib.CURATED_TEMPLATE
SETUP_PY = os.path.join(PROJECT_DIR, "setup.py")
PREPROCESSING_FN = "trainer_module.preprocessing.preprocessing_fn"
RUN_FN = "trainer_module.train.run_fn"
BASELINE_RESOLVER_ID = "latest_blessed_model_resolver"
_DEPENDENCY_FLAGS = ("--setup_file", "--extra_package", "--requirements_file",
                     "--sdk_container_image", "--worker_harness_container_image")


def with_dependency_flag(beam_args: list, setup_py: str = SETUP_PY) -> list:
    """Adds --setup_file=<this project> unless the args already say how workers get our code.

    Without one, TFX builds a throwaway sdist of itself for every Beam component run.
    """
    if not beam_args or any(a.startswith(_DEPENDENCY_FLAGS) for a in beam_args):
        return list(beam_args)
    return [*beam_args, f"--setup_file={setup_py}"]


def trainer_config(config: PipelineConfig, *, restarts: bool,
                   cluster_accelerator: bool) -> dict:
    """The JSON-able custom_config the Trainer's run_fn receives: every TrainOptions field,
    the ingest's `max_pixels` (the serving limit), and `accelerator` ("GPU", "TPU" or None)
    with `accelerator_request` ("NVIDIA_TESLA_T4 x2" or None), which run_fn checks before
    training (None unless `cluster_accelerator`: local runs ignore the cluster's request).
    An unset backup_interval_s becomes RESTART_BACKUP_INTERVAL_S when the orchestrator
    `restarts` the same Trainer execution."""
    custom = dataclasses.asdict(config.training)
    if custom["backup_interval_s"] is None and restarts:
        custom["backup_interval_s"] = RESTART_BACKUP_INTERVAL_S
    custom["max_pixels"] = config.ingest.max_pixels
    cluster = config.cluster if cluster_accelerator else None
    custom["accelerator"] = cluster.accelerator_kind if cluster else None
    custom["accelerator_request"] = cluster.accelerator_request if cluster else None
    return custom


def accept_hint(config: PipelineConfig, artifact_outputs: bool = False) -> str:
    """How a user accepts an intended data change that the gate stopped."""
    if config.validation.schema_path:
        return f"edit {config.validation.schema_path}"
    if artifact_outputs:
        return ("copy schema.pbtxt from this run's DatasetSchemaGen schema artifact, edit it, "
                "and compile with schema_path set to it (gs:// or a path in the image)")
    return f"imgpipe schema update --workdir {config.workdir}"


def create_pipeline(config: PipelineConfig, *,
                    metadata_connection_config: Optional[object] = None,
                    beam_pipeline_args: Optional[list] = None,
                    ingest_beam_args: Optional[list] = None,
                    data_root: Optional[Union[str, data_types.RuntimeParameter]] = None,
                    epochs: Optional[Union[int, data_types.RuntimeParameter]] = None,
                    with_baseline: bool = True,
                    project_dir: str = PROJECT_DIR,
                    vertex_training_args: Optional[dict] = None,
                    validate_only: bool = False,
                    trainer_restarts: bool = True,
                    artifact_outputs: bool = False,
                    extra_components: Optional[Callable[[Dict[str, object]], List[object]]]
                    = None) -> tfx_pipeline.Pipeline:
    """Wires ingest -> stats -> schema -> validation -> Transform -> Trainer -> Evaluator -> Pusher.

    Args:
      config: validated settings.
      metadata_connection_config: MLMD connection; None lets the orchestrator supply one.
      beam_pipeline_args: overrides `config.beam_pipeline_args` (runners add e.g. Dataflow).
      ingest_beam_args: overrides `config.ingest_beam_args`.
      data_root, epochs: override the config's values; either may be a RuntimeParameter.
      with_baseline: resolve the latest blessed model as the Evaluator's baseline (the
        change threshold). Off for Kubeflow, whose backend cannot run Resolver nodes.
      project_dir: where this project lives where the pipeline runs (Beam's --setup_file is
        its setup.py); the container image's folder for Kubeflow/Vertex.
      vertex_training_args: when given, the Trainer runs as a Vertex AI custom job with these
        `ai_platform_training_args` (TFX's Google Cloud Trainer extension).
      validate_only: only ingest, schema, statistics, validation and the gate (with its data
        report): a quick look at the data before any training (`imgpipe validate`).
      trainer_restarts: the orchestrator may restart the same Trainer execution (Kubeflow,
        Vertex), so its backups can be read: an unset `backup_interval_s` means 60 s.
        LocalDagRunner gives every run a new execution: False, and unset means no backups.
      artifact_outputs: everything the run writes is an output artifact (Kubeflow, Vertex:
        the KFP launcher uploads declared outputs and nothing else). The schema is generated
        into the Schema artifact unless `schema_path` names one, the gate writes no report
        folder (the cluster's DataReport task, kubeflow/reports.py, renders it into
        an artifact before the gate), and the Pusher pushes into its `pushed_model`
        artifact (components/artifact_pusher.py) instead of workdir/serving/.
      extra_components: a runner's own steps: called with {component id: component} of
        the wired pipeline, returns components to add (Kubeflow's report tasks). They must
        be created inside this call: TFX registers a node with the pipeline being built.
    """
    setup_py = os.path.join(project_dir, "setup.py")
    # Images -> encoded-bytes tf.Examples, with a quarantine report and the label vocabulary.
    example_gen = ImageExampleGen(options=config.ingest, data_root=data_root)
    example_gen.with_beam_pipeline_args(with_dependency_flag(
        config.ingest_beam_args if ingest_beam_args is None else ingest_beam_args, setup_py))

    # This dataset's schema (curated template + its vocabulary), written on the first run to
    # workdir/schema/ for the user to read and edit; inferred schemas mistype labels.
    schema_gen = DatasetSchemaGen(
        examples=example_gen.outputs["examples"],
        schema_path=config.validation.schema_path or ("" if artifact_outputs
                                           else features.schema_file(config.workdir)),
        create=config.validation.schema_path is None)

    # Dataset statistics, for the schema check and for people reading the data.
    statistics_gen = StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"])

    # Anomalies against the schema (new classes, formats, missing features, bad channels).
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])

    # Stops the run on any anomaly, in plain words, with a data report; warns on skew,
    # imbalance and quarantine rate.
    gate = DataGate(
        examples=example_gen.outputs["examples"], statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"], anomalies=example_validator.outputs["anomalies"],
        report_dir="" if artifact_outputs else features.reports_dir(config.workdir),
        accept_hint=accept_hint(config, artifact_outputs),
        label_skew_threshold=config.validation.label_skew_threshold,
        imbalance_ratio=config.validation.imbalance_ratio,
        max_quarantine_fraction=config.validation.max_quarantine_fraction)

    def assemble(later_steps: list) -> tfx_pipeline.Pipeline:
        steps = [c for c in [example_gen, schema_gen, statistics_gen, example_validator, gate,
                             *later_steps] if c]
        if extra_components is not None:
            steps += extra_components({c.id: c for c in steps})
        return tfx_pipeline.Pipeline(
            pipeline_name=config.pipeline_name,
            pipeline_root=features.pipeline_root(config.workdir),
            components=steps,
            enable_cache=config.enable_cache,
            metadata_connection_config=metadata_connection_config,
            beam_pipeline_args=with_dependency_flag(
                config.beam_pipeline_args if beam_pipeline_args is None
                else beam_pipeline_args, setup_py))

    if validate_only:  # the data steps alone: no consumer may exist beyond the gate
        return assemble([])

    # Decode -> resize as a transform graph only (materialize=False): no pixels on disk.
    transform = Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN, materialize=False, disable_statistics=True,
        splits_config=transform_pb2.SplitsConfig(analyze=[features.TRAIN_SPLIT]),
        custom_config={"image_size": config.training.image_size})
    transform.add_upstream_node(gate)  # nothing trains on data the gate stopped

    # EfficientNetB3 fed by make_dataset on the raw shards; exports both signatures.
    custom_config = trainer_config(config, restarts=trainer_restarts,
                                   cluster_accelerator=artifact_outputs)
    training = config.training
    total_steps = training.train_steps * (training.epochs + training.fine_tune_epochs) \
        if training.train_steps else 0
    if vertex_training_args is not None:
        custom_config.update(vertex_training_args)
    trainer = ImageTrainer(
        run_fn=RUN_FN, examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=trainer_pb2.TrainArgs(num_steps=total_steps),
        eval_args=trainer_pb2.EvalArgs(num_steps=config.training.eval_steps or 0),
        custom_config=custom_config, epochs=epochs,
        vertex=vertex_training_args is not None).with_id("Trainer")

    # The latest blessed model is the baseline for the change threshold.
    baseline = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id(BASELINE_RESOLVER_ID) if with_baseline else None

    # TFMA on the raw eval split through the from_examples signature; blesses or not.
    evaluator = Evaluator(
        examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"] if baseline else None,
        eval_config=evaluation.eval_config(config.evaluation),
        example_splits=[features.EVAL_SPLIT])

    # Only a blessed model reaches workdir/serving/<version>/ (on a cluster: the object store).
    # A model already serving is not pushed again (a re-run that only gained a baseline).
    pusher = ArtifactPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
    ).with_id("Pusher") if artifact_outputs else ServingPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=features.serving_dir(config.workdir)))).with_id("Pusher")

    return assemble([transform, trainer, baseline, evaluator, pusher])
