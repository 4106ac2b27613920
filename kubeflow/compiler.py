"""Compiles `create_pipeline(config)` for Kubeflow Pipelines v2 or Vertex AI Pipelines.

The same pipeline as the local runner, plus what only a cluster run needs:
- `data_root` and `epochs` become run-time parameters (their defaults: the config's);
- every task runs in `config.cluster.image`, where the project lives at targets.IMAGE_PROJECT_DIR,
  except a Trainer on an NVIDIA GPU: it runs in `config.cluster.gpu_image` (`trainer_image`);
- per-component CPU/memory (`resources`) and the Trainer's accelerator as ResourceSpecs;
- with `beam_runner: dataflow`, the Beam components run on Dataflow, with the same image
  as the SDK container (its Beam version is the launcher's);
- with `vertex_training` (Vertex only), the Trainer runs as a Vertex AI custom job;
- everything a run writes is an output artifact (create_pipeline's `artifact_outputs`): the
  launcher uploads nothing else, so the schema, the pushed model and the data and run
  reports (the DataReport and RunReport tasks, kubeflow/reports.py) land in the object store.
Target differences are applied afterwards by `targets.finalize`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import yaml
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as v2_runner

from kubeflow import preflight, reports, targets
from kubeflow.options import memory_gb
from pipeline.config import PipelineConfig
from pipeline.wiring import create_pipeline
from trainer_module import features

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def dataflow_args(config: PipelineConfig) -> list:
    """Beam args that send a Beam component to Dataflow, workers on `config.cluster.image`.

    Raises:
      ValueError: naming the settings Dataflow needs that are unset.
    """
    cluster = config.cluster
    needed = {"gcp_project": cluster.gcp_project, "gcp_region": cluster.gcp_region,
              "dataflow_temp_location": cluster.dataflow_temp_location, "image": cluster.image}
    missing = [k for k, v in needed.items() if not v]
    if missing:
        raise ValueError(f"beam_runner=dataflow needs {', '.join(missing)}.")
    return ["--runner=DataflowRunner", f"--project={cluster.gcp_project}",
            f"--region={cluster.gcp_region}", f"--temp_location={cluster.dataflow_temp_location}",
            f"--sdk_container_image={cluster.image}", "--experiments=use_runner_v2"]


def trainer_image(config: PipelineConfig) -> str:
    """The image the Trainer trains in: `gpu_image` when trainer_accelerator names an NVIDIA
    GPU (the CPU `image` has no CUDA libraries), else `image`.

    Raises:
      ValueError: a GPU is asked for and gpu_image is unset.
    """
    if config.cluster.accelerator_kind != "GPU":
        return config.cluster.image
    if not config.cluster.gpu_image:
        raise ValueError(
            f"trainer_accelerator={config.cluster.trainer_accelerator} needs gpu_image: build "
            "the GPU "
            "variant (docker build -f kubeflow/Dockerfile --build-arg VARIANT=gpu -t IMAGE-gpu .) "
            "and set gpu_image (--set gpu_image=IMAGE-gpu).")
    return config.cluster.gpu_image


def set_trainer_image(job: Dict[str, Any], config: PipelineConfig) -> None:
    """Points the compiled Trainer task's container at trainer_image(config), in place.

    Under vertex_training that task only launches the custom job, whose worker pools get the
    image (vertex_training_args), so it keeps `config.cluster.image`.
    """
    if config.cluster.vertex_training:
        return
    spec = job["pipelineSpec"]
    component = spec["root"]["dag"]["tasks"][targets.TRAINER_TASK]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    spec["deploymentSpec"]["executors"][label]["container"]["image"] = trainer_image(config)


def vertex_training_args(config: PipelineConfig) -> Dict[str, Any]:
    """custom_config entries of TFX's Google Cloud Trainer extension (a Vertex custom job).

    `ai_platform_training_args` is a CustomJob minus its display name plus TFX's `project`:
    `job_spec` (a CustomJobSpec) holds one worker pool (1 replica; the chief) and, with
    vertex_replica_count > 1, a second pool of the other replicas, all on trainer_image(config)
    (TFX sets each pool's container command), and `service_account` when it is set.
    """
    if not (config.cluster.gcp_project and config.cluster.gcp_region):
        raise ValueError("vertex_training needs gcp_project and gcp_region.")
    machine = {"machine_type": config.cluster.vertex_machine_type}
    if config.cluster.trainer_accelerator:
        machine.update(accelerator_type=targets.accelerator(targets.VERTEX,
                                                            config.cluster.trainer_accelerator),
                       accelerator_count=config.cluster.trainer_accelerator_count)
    pool = {"machine_spec": machine, "replica_count": 1,
            "container_spec": {"image_uri": trainer_image(config)}}
    pools = [pool]
    if config.cluster.vertex_replica_count > 1:
        pools.append(dict(pool, replica_count=config.cluster.vertex_replica_count - 1))
    job_spec = {"worker_pool_specs": pools}
    if config.cluster.service_account:
        job_spec["service_account"] = config.cluster.service_account
    return {"ai_platform_enable_vertex": True,
            "ai_platform_vertex_region": config.cluster.gcp_region,
            "ai_platform_training_args": {"project": config.cluster.gcp_project,
                                          "job_spec": job_spec}}


def resource_spec(config: PipelineConfig, component_id: str,
                  target: str) -> Optional[ResourceSpec]:
    """The ResourceSpec of one task from `resources` and the Trainer accelerator, or None."""
    wanted = config.cluster.resources.get(component_id, {})
    spec = ResourceSpec()
    if "cpu" in wanted:
        spec.cpu_limit = float(wanted["cpu"])
    if "memory" in wanted:
        spec.memory_limit = memory_gb(wanted["memory"])
    # Under vertex_training the Trainer task only launches the custom job; the accelerator
    # belongs to the job's worker pool.
    if component_id == targets.TRAINER_TASK and config.cluster.trainer_accelerator \
            and not config.cluster.vertex_training:
        spec.accelerator.type = targets.accelerator(target, config.cluster.trainer_accelerator)
        spec.accelerator.count = config.cluster.trainer_accelerator_count
    return spec if spec.ByteSize() else None


def custom_type_paths(pipeline: tfx.dsl.Pipeline) -> Dict[str, str]:
    """{TYPE_NAME: import path} of every output type that is not one of TFX's own."""
    out = {}
    for component in pipeline.components:
        for channel in component.outputs.values():
            kind = channel.type
            if not kind.__module__.startswith("tfx."):
                out[kind.TYPE_NAME] = f"{kind.__module__}.{kind.__qualname__}"
    return out


def build(config: PipelineConfig, target: str) -> tfx.dsl.Pipeline:
    """create_pipeline for `target`: runtime parameters, image paths, resources, Beam args."""
    targets.check_target(target)
    targets.check_pipeline_name(config.pipeline_name)
    if not config.cluster.image:
        raise ValueError("no container image: pass --image (or image: in the config); build "
                         "it from kubeflow/Dockerfile. The stock TFX image lacks this project.")
    trainer_image(config)  # a GPU Trainer without gpu_image fails here, before compiling
    if config.cluster.vertex_training and target != targets.VERTEX:
        raise ValueError("vertex_training runs the Trainer as a Vertex AI custom job; "
                         "it needs --target vertex.")
    beam_args = ingest_args = None
    if config.cluster.beam_runner == "dataflow":
        beam_args = [*dataflow_args(config), *config.beam_pipeline_args]
        ingest_args = beam_args
    pipeline = create_pipeline(
        config,
        data_root=tfx.dsl.experimental.RuntimeParameter(
            name="data_root", ptype=str, default=config.data_root),
        epochs=tfx.dsl.experimental.RuntimeParameter(
            name="epochs", ptype=int, default=config.training.epochs),
        with_baseline=targets.supports_resolver(target),
        project_dir=targets.IMAGE_PROJECT_DIR,
        beam_pipeline_args=beam_args, ingest_beam_args=ingest_args,
        vertex_training_args=(vertex_training_args(config) if config.cluster.vertex_training
                              else None),
        artifact_outputs=True, extra_components=reports.report_tasks(config))
    for component in pipeline.components:
        spec = resource_spec(config, component.id, target)
        if spec is not None:
            component.with_platform_config(spec)
    return pipeline


def compile_pipeline(config: PipelineConfig, target: str,
                     output: Optional[str] = None) -> Dict[str, Any]:
    """Compiles for `target`; writes `output` when given (YAML for kubeflow, JSON for vertex).

    Returns:
      The PipelineJob dict (for kubeflow the file holds only its `pipelineSpec`).
    Raises:
      ValueError: settings the target cannot take, or storage its tasks cannot read or write,
        or run-time parameters the KFP backend would refuse (one line, naming them; see
        kubeflow/preflight.py).
    """
    preflight.check_storage(config, target)
    pipeline = build(config, target)
    runner = v2_runner.KubeflowV2DagRunner(v2_runner.KubeflowV2DagRunnerConfig(
        display_name=config.pipeline_name, default_image=config.cluster.image,
        default_commands=list(targets.ENTRYPOINT), use_pipeline_spec_2_1=True))
    job = runner.run(pipeline, write_out=False)
    targets.finalize(
        job, target, pipeline_root=features.pipeline_root(config.workdir),
        parameter_defaults={"data_root": config.data_root, "epochs": config.training.epochs},
        class_paths=custom_type_paths(pipeline))
    set_trainer_image(job, config)
    preflight.check_job(job, target)
    if output:
        write(job, target, output)
    return job


def write(job: Dict[str, Any], target: str, output: str) -> None:
    """Writes the file each backend takes: a bare PipelineSpec YAML, or PipelineJob JSON."""
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        if target == targets.KUBEFLOW:
            f.write(f"# imgpipe pipeline for Kubeflow Pipelines v2 (schema "
                    f"{targets.SCHEMA_VERSION}); run-time parameters: "
                    f"{', '.join(targets.RUNTIME_PARAMETERS)}\n")
            yaml.safe_dump(job["pipelineSpec"], f, sort_keys=True)
        else:
            json.dump(job, f, sort_keys=True, indent=1)
