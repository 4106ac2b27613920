"""kubeflow/compiler.py: both targets compile with the real TFX compiler and load with kfp's
own loaders; the spec holds what the config asks for and nothing it must not."""
from __future__ import annotations

import importlib
import json
import re

import pytest
import yaml
from google.protobuf import json_format
from kfp import components as kfp_components
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.utils import import_utils

from kubeflow import compiler, targets
from pipeline.config import load_config

ALL = ["ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
       "DataReport", "DataGate", "Transform", "Trainer", "Evaluator", "Pusher", "RunReport"]
EDGES = [("ImageExampleGen", "DatasetSchemaGen"), ("DatasetSchemaGen", "StatisticsGen"),
         ("StatisticsGen", "ExampleValidator"), ("ExampleValidator", "DataReport"),
         ("DataReport", "DataGate"), ("DataGate", "Transform"), ("Transform", "Trainer"),
         ("Trainer", "Evaluator"), ("Evaluator", "Pusher"), ("Pusher", "RunReport")]
SETTINGS = {"data_root": "gs://bucket/flowers", "workdir": "gs://bucket/imgpipe",
            "image": "europe-docker.pkg.dev/p/r/imgpipe:0.1", "epochs": 7,
            "gpu_image": "europe-docker.pkg.dev/p/r/imgpipe-gpu:0.1",
            "resources": {"Trainer": {"cpu": 8, "memory": "32G"},
                          "ImageExampleGen": {"cpu": 4, "memory": "512M"}},
            "trainer_accelerator": "NVIDIA_TESLA_T4", "trainer_accelerator_count": 2}


def _config(**extra):
    return load_config(None, {**SETTINGS, **extra})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compiled")
    out = {}
    for target, name in ((targets.KUBEFLOW, "pipeline.yaml"), (targets.VERTEX, "pipeline.json")):
        path = str(tmp / name)
        job = compiler.compile_pipeline(_config(), target, path)
        out[target] = (path, job)
    return out


def _spec(compiled, target):
    return compiled[target][1]["pipelineSpec"]


def _containers(spec):
    return {name: spec["deploymentSpec"]["executors"][c["executorLabel"]].get("container")
            for name, c in spec["components"].items()}


def test_kfp_loader_accepts_the_yaml_and_it_is_a_bare_schema_2_1_spec(compiled):
    path, _ = compiled[targets.KUBEFLOW]
    component = kfp_components.load_component_from_file(path)
    assert component.name == "imgpipe"
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert "pipelineSpec" not in doc and doc["schemaVersion"] == "2.1.0"
    json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())  # strict: no unknown fields
    assert doc["defaultPipelineRoot"] == "gs://bucket/imgpipe/pipeline_root"


def test_vertex_json_parses_into_the_pipeline_job_proto(compiled):
    path, _ = compiled[targets.VERTEX]
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    job = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(doc["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert spec.schema_version == "2.1.0"
    assert job.runtime_config.gcs_output_directory == "gs://bucket/imgpipe/pipeline_root"
    assert job.runtime_config.parameter_values["epochs"].number_value == 7


@pytest.mark.parametrize("target", targets.TARGETS)
def test_dag_holds_every_component_in_dependency_order(compiled, target):
    tasks = _spec(compiled, target)["root"]["dag"]["tasks"]
    assert set(ALL) <= set(tasks)

    def upstream(name, seen=None):
        seen = set() if seen is None else seen
        for dep in tasks[name].get("dependentTasks", []):
            if dep not in seen:
                seen.add(dep)
                upstream(dep, seen)
        return seen

    for before, after in EDGES:
        assert before in upstream(after), (before, after)


def test_kubeflow_has_no_resolver_or_lifecycle_tasks_and_vertex_keeps_the_baseline(compiled):
    kfp = _spec(compiled, targets.KUBEFLOW)
    assert sorted(kfp["root"]["dag"]["tasks"]) == sorted(ALL)
    assert all("container" in e for e in kfp["deploymentSpec"]["executors"].values())
    assert "baseline_model" not in kfp["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["artifacts"]
    assert "exitHandler" not in json.dumps(kfp) and "triggerPolicy" not in json.dumps(kfp)
    vertex = _spec(compiled, targets.VERTEX)
    evaluator = vertex["root"]["dag"]["tasks"]["Evaluator"]
    assert evaluator["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"][
        "producerTask"] == "latest_blessed_model_resolver-model-resolver"


@pytest.mark.parametrize("target", targets.TARGETS)
def test_every_class_path_and_dotted_function_imports(compiled, target):
    spec = _spec(compiled, target)
    containers = [c for c in _containers(spec).values() if c]
    for container in containers:
        args = container["args"]
        path = args[args.index("--executor_class_path") + 1]
        import_utils.import_class_by_path(path)
        # The container command is a module of this project's installed environment.
        assert container["command"] == ["python", "-m", "kubeflow.entrypoint"]
        importlib.import_module(container["command"][2])
    functions = re.findall(r'"((?:trainer_module|pipeline|components|kubeflow)(?:\.\w+)+)"',
                           json.dumps(spec).replace('\\"', '"'))
    assert {"trainer_module.train.run_fn", "trainer_module.preprocessing.preprocessing_fn",
            "pipeline.eval_metrics"} <= set(functions)
    # The Evaluator's metric module (MetricConfig.module), which TFMA imports by name.
    assert hasattr(importlib.import_module("pipeline.eval_metrics"), "MostConfidentMistakes")
    for dotted in set(functions) - {"kubeflow.entrypoint", "pipeline.eval_metrics"}:
        module, _, name = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), dotted


@pytest.mark.parametrize("target", targets.TARGETS)
def test_image_runtime_parameters_caching_and_schema_path(compiled, target):
    spec = _spec(compiled, target)
    assert {c["image"] for name, c in _containers(spec).items() if c and name != "Trainer"} \
        == {SETTINGS["image"]}  # the GPU Trainer's: test_gpu_trainer_runs_the_gpu_image
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params == {
        "data_root": {"parameterType": "STRING", "defaultValue": "gs://bucket/flowers",
                      "isOptional": True},
        "epochs": {"parameterType": "NUMBER_INTEGER", "defaultValue": 7, "isOptional": True}}
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["ImageExampleGen"]["inputs"]["parameters"]["data_root"] == \
        {"componentInputParameter": "data_root"}
    assert tasks["Trainer"]["inputs"]["parameters"]["epochs"] == \
        {"componentInputParameter": "epochs"}
    assert tasks["ImageExampleGen"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["Trainer"]["cachingOptions"]["enableCache"] is True
    schema = tasks["DatasetSchemaGen"]["inputs"]["parameters"]
    assert "template_path" not in schema  # the curated template inside the image
    # No schema file outside an artifact: the launcher would never upload it.
    assert schema["schema_path"]["runtimeValue"]["constant"] == ""
    # Each task knows the TFX type of each artifact key, for the entrypoint's repair.
    stats_args = _containers(spec)["StatisticsGen"]["args"]
    assert json.loads(stats_args[stats_args.index("--artifact_types") + 1]) == {
        "examples": "tfx.Examples", "schema": "tfx.Schema", "statistics": "tfx.ExampleStatistics"}
    gate_args = _containers(spec)["DataGate"]["args"]
    assert json.loads(gate_args[gate_args.index("--artifact_types") + 1])["result"] == \
        "components.data_validation.component.DataValidation"


@pytest.mark.parametrize("target", targets.TARGETS)
def test_nothing_is_written_outside_the_pipeline_roots_artifacts(compiled, target):
    """The KFP launcher uploads declared output artifacts and nothing else: no task may be
    told to write the workdir's serving/, reports/ or schema/ folders."""
    spec = _spec(compiled, target)
    text = json.dumps(spec)
    for folder in ("serving", "reports", "schema/schema.pbtxt"):
        assert f"gs://bucket/imgpipe/{folder}" not in text, folder
    pusher = _containers(spec)["Pusher"]["args"]
    assert pusher[pusher.index("--executor_class_path") + 1] == \
        "components.artifact_pusher.ArtifactPushExecutor"
    gate = spec["root"]["dag"]["tasks"]["DataGate"]["inputs"]["parameters"]
    assert gate["report_dir"]["runtimeValue"]["constant"] == ""
    for task in ("DataReport", "RunReport"):
        component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
        kind = component["outputDefinitions"]["artifacts"]["report"]["artifactType"]
        assert yaml.safe_load(kind["instanceSchema"])["title"] == "system.HTML"


@pytest.mark.parametrize("target,gpu", [(targets.KUBEFLOW, "nvidia.com/gpu"),
                                        (targets.VERTEX, "NVIDIA_TESLA_T4")])
def test_resources_and_accelerators_as_configured(compiled, target, gpu):
    containers = _containers(_spec(compiled, target))
    assert containers["Trainer"]["resources"] == {
        "cpuLimit": 8.0, "memoryLimit": 32.0, "accelerator": {"type": gpu, "count": "2"}}
    assert containers["ImageExampleGen"]["resources"] == {"cpuLimit": 4.0, "memoryLimit": 0.5}
    assert "resources" not in containers["StatisticsGen"]


def test_default_beam_args_and_dataflow_args(tmp_path):
    containers = _containers(_spec({"k": (None, compiler.compile_pipeline(
        _config(), targets.KUBEFLOW))}, "k"))
    assert "--direct_running_mode=multi_threading" in containers["ImageExampleGen"]["args"]
    assert "--setup_file=/opt/imgpipe/setup.py" in containers["ImageExampleGen"]["args"]
    job = compiler.compile_pipeline(_config(
        beam_runner="dataflow", gcp_project="my-proj", gcp_region="europe-west4",
        dataflow_temp_location="gs://bucket/tmp",
        beam_pipeline_args="--max_num_workers=20"), targets.VERTEX)
    containers = _containers(job["pipelineSpec"])
    dataflow = ["--runner=DataflowRunner", "--project=my-proj", "--region=europe-west4",
                "--temp_location=gs://bucket/tmp",
                f"--sdk_container_image={SETTINGS['image']}", "--experiments=use_runner_v2"]
    for name in ("ImageExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = containers[name]["args"]
        assert all(a in args for a in dataflow), name
        assert not any(a.startswith(("--setup_file", "--direct_")) for a in args), name
    assert "--max_num_workers=20" in containers["StatisticsGen"]["args"]


def test_vertex_training_job_worker_pools(tmp_path):
    job = compiler.compile_pipeline(_config(
        vertex_training=True, gcp_project="my-proj", gcp_region="us-central1",
        vertex_machine_type="n1-highmem-16", vertex_replica_count=3), targets.VERTEX)
    containers = _containers(job["pipelineSpec"])
    trainer = containers["Trainer"]
    args = trainer["args"]
    assert args[args.index("--executor_class_path") + 1] == \
        "components.image_trainer.vertex_executor.VertexExecutor"
    assert "accelerator" not in trainer.get("resources", {})  # it is the job's, not the launcher's
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    custom = json.loads(tasks["Trainer"]["inputs"]["parameters"]["custom_config"][
        "runtimeValue"]["constant"])
    assert custom["ai_platform_enable_vertex"] is True
    assert custom["backup_interval_s"] == 60.0  # a preempted job restarts the same execution
    assert custom["ai_platform_vertex_region"] == "us-central1"
    pools = custom["ai_platform_training_args"]["job_spec"]["worker_pool_specs"]
    assert custom["ai_platform_training_args"]["project"] == "my-proj"
    assert [p["replica_count"] for p in pools] == [1, 2]
    assert pools[0]["machine_spec"] == {"machine_type": "n1-highmem-16",
                                        "accelerator_type": "NVIDIA_TESLA_T4",
                                        "accelerator_count": 2}
    assert pools[0]["container_spec"] == {"image_uri": SETTINGS["gpu_image"]}


def test_vertex_training_job_is_a_custom_job_tfx_builds_and_vertex_parses():
    """The compiled custom_config, through TFX's own Vertex job client, into a CustomJob.

    Nothing is sent: TFX's client is created without its API client (whose constructor
    needs Application Default Credentials); create_training_job does not use it.
    """
    from google.cloud import aiplatform_v1
    from tfx.extensions.google_cloud_ai_platform import training_clients
    from tfx.types import artifact_utils, standard_artifacts

    from components.image_trainer import vertex_executor
    from components.image_trainer.executor import merge_epochs

    account = "trainer@my-proj.iam.gserviceaccount.com"
    job = compiler.compile_pipeline(_config(
        vertex_training=True, gcp_project="my-proj", gcp_region="us-central1",
        vertex_machine_type="n1-highmem-16", vertex_replica_count=3,
        service_account=account), targets.VERTEX)
    parameters = job["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    # What the launcher hands the Trainer: the compiled constants plus this run's epochs.
    exec_properties = merge_epochs({
        **{k: v["runtimeValue"]["constant"] for k, v in parameters.items()
           if "runtimeValue" in v}, "epochs": 4})
    custom_config = json.loads(exec_properties["custom_config"])

    def artifact(kind, uri):
        item = kind()
        item.uri = uri
        return [item]

    inputs = {"examples": artifact(standard_artifacts.Examples, "gs://b/examples/1"),
              "schema": artifact(standard_artifacts.Schema, "gs://b/schema/2"),
              "transform_graph": artifact(standard_artifacts.TransformGraph, "gs://b/tg/3")}
    outputs = {"model": artifact(standard_artifacts.Model, "gs://b/model/4"),
               "model_run": artifact(standard_artifacts.ModelRun, "gs://b/model_run/4")}
    # As GenericExecutor.Do and runner.start_cloud_training do (TFX 1.16):
    # https://github.com/tensorflow/tfx/blob/v1.16.0/tfx/extensions/google_cloud_ai_platform/runner.py#L194-L200
    job_args = dict(custom_config["ai_platform_training_args"])
    assert job_args.pop("project") == "my-proj"
    assert custom_config["ai_platform_vertex_region"] == "us-central1"
    client = training_clients.VertexJobClient.__new__(training_clients.VertexJobClient)
    # pylint: disable=protected-access
    client._region = custom_config["ai_platform_vertex_region"]
    executor_class = vertex_executor.VertexExecutor()._GetExecutorClass()
    # pylint: enable=protected-access
    executor_path = f"{executor_class.__module__}.{executor_class.__qualname__}"
    body = client.create_training_job(inputs, outputs, exec_properties, executor_path,
                                      job_args, "imgpipe-trainer", None)

    # Strict: an unknown or misplaced field raises. The proto-plus form is what
    # JobServiceClient.create_custom_job makes of the dict it is given.
    json_format.ParseDict(body, aiplatform_v1.CustomJob.pb(aiplatform_v1.CustomJob()))
    custom = aiplatform_v1.CreateCustomJobRequest(
        parent="projects/my-proj/locations/us-central1", custom_job=body).custom_job
    assert custom.display_name == "imgpipe-trainer"
    spec = custom.job_spec
    assert spec.service_account == account
    assert [p.replica_count for p in spec.worker_pool_specs] == [1, 2]
    for pool in spec.worker_pool_specs:
        assert pool.machine_spec.machine_type == "n1-highmem-16"
        assert pool.machine_spec.accelerator_type == \
            aiplatform_v1.AcceleratorType.NVIDIA_TESLA_T4
        assert pool.machine_spec.accelerator_count == 2
        assert pool.container_spec.image_uri == SETTINGS["gpu_image"]
        command = list(pool.container_spec.command)
        # TFX's own entrypoint, not the image's: its run_executor runs the stock trainer
        # executor, with the epochs merged above and the artifacts' URIs.
        assert command[:3] == ["python", "-m", "tfx.scripts.run_executor"]
        importlib.import_module(command[2])
        assert command[command.index("--executor_class_path") + 1] == \
            "tfx.components.trainer.executor.GenericExecutor"
        sent = json.loads(command[command.index("--exec-properties") + 1])
        assert json.loads(sent["custom_config"])["epochs"] == 4
        assert sent["run_fn"] == "trainer_module.train.run_fn"
        sent_inputs = artifact_utils.parse_artifact_dict(
            command[command.index("--inputs") + 1])
        assert sent_inputs["examples"][0].uri == "gs://b/examples/1"
        assert not pool.container_spec.args


def test_no_secret_looking_strings_in_any_spec(compiled):
    secret = re.compile(r"(?i)(password|passwd|secret|private_key|api[_-]?key|bearer|"
                        r"access[_-]?token|client_secret|AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*KEY|"
                        r"ya29\.|AIza[0-9A-Za-z_-]{20})")
    for target in targets.TARGETS:
        path, _ = compiled[target]
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert not secret.search(text), secret.search(text)


@pytest.mark.parametrize("settings,target,message", [
    ({"image": ""}, targets.KUBEFLOW, "no container image"),
    ({"pipeline_name": "Flowers_v2"}, targets.VERTEX, "pipeline_name='Flowers_v2'"),
    ({"trainer_accelerator": "TPU_V3"}, targets.KUBEFLOW, "only NVIDIA GPUs"),
    ({"vertex_training": True}, targets.KUBEFLOW, "needs --target vertex"),
    ({"vertex_training": True}, targets.VERTEX, "needs gcp_project and gcp_region"),
    ({"beam_runner": "dataflow", "gcp_project": "p"}, targets.KUBEFLOW,
     "needs gcp_region, dataflow_temp_location"),
])
def test_settings_a_target_cannot_take_are_one_line_errors(settings, target, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compiler.build(_config(**settings), target)


def test_bad_resources_fail_at_config_time():
    with pytest.raises(ValueError, match="unknown component 'Trainr'"):
        _config(resources={"Trainr": {"cpu": 2}})
    with pytest.raises(ValueError, match="memory='lots'"):
        _config(resources={"Trainer": {"memory": "lots"}})
    with pytest.raises(ValueError, match="set both"):
        _config(trainer_accelerator_count=0)
    assert _config(resources="{Pusher: {cpu: 1}}").cluster.resources == {"Pusher": {"cpu": 1}}


# The Trainer on an NVIDIA GPU runs the GPU variant of the image (gpu_image).
@pytest.mark.parametrize("target", targets.TARGETS)
def test_gpu_trainer_runs_the_gpu_image_and_every_other_task_the_cpu_image(compiled, target):
    images = {name: c["image"] for name, c in _containers(_spec(compiled, target)).items() if c}
    assert images.pop("Trainer") == SETTINGS["gpu_image"]
    assert images and set(images.values()) == {SETTINGS["image"]}
    # The file written is the one that runs.
    path, _ = compiled[target]
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) if target == targets.KUBEFLOW else json.load(f)["pipelineSpec"]
    assert _containers(doc)["Trainer"]["image"] == SETTINGS["gpu_image"]


def test_a_trainer_without_a_gpu_keeps_the_cpu_image():
    for extra in ({"trainer_accelerator": None, "trainer_accelerator_count": 0},
                  {"trainer_accelerator": "TPU_V3", "trainer_accelerator_count": 8,
                   "gpu_image": ""}):
        assert compiler.trainer_image(_config(**extra)) == SETTINGS["image"]
    job = compiler.compile_pipeline(
        _config(trainer_accelerator=None, trainer_accelerator_count=0), targets.KUBEFLOW)
    assert {c["image"] for c in _containers(job["pipelineSpec"]).values() if c} == \
        {SETTINGS["image"]}


def test_vertex_training_pools_run_the_gpu_image_and_the_launcher_the_cpu_image():
    job = compiler.compile_pipeline(_config(
        vertex_training=True, gcp_project="my-proj", gcp_region="us-central1",
        vertex_replica_count=2), targets.VERTEX)
    containers = _containers(job["pipelineSpec"])
    assert containers["Trainer"]["image"] == SETTINGS["image"]  # it only launches the job
    custom = json.loads(job["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["inputs"][
        "parameters"]["custom_config"]["runtimeValue"]["constant"])
    pools = custom["ai_platform_training_args"]["job_spec"]["worker_pool_specs"]
    assert [p["container_spec"]["image_uri"] for p in pools] == [SETTINGS["gpu_image"]] * 2
    assert (custom["accelerator"], custom["accelerator_request"]) == ("GPU", "NVIDIA_TESLA_T4 x2")


@pytest.mark.parametrize("target,extra", [
    (targets.KUBEFLOW, {}), (targets.VERTEX, {}),
    (targets.VERTEX, {"vertex_training": True, "gcp_project": "p", "gcp_region": "r"})])
def test_a_gpu_trainer_without_gpu_image_is_a_one_line_error(target, extra):
    message = ("trainer_accelerator=NVIDIA_TESLA_T4 needs gpu_image: build the GPU variant "
               "(docker build -f kubeflow/Dockerfile --build-arg VARIANT=gpu -t IMAGE-gpu .) "
               "and set gpu_image (--set gpu_image=IMAGE-gpu).")
    for step in (compiler.build, compiler.compile_pipeline):
        with pytest.raises(ValueError) as err:
            step(_config(gpu_image="", **extra), target)
        assert str(err.value) == message
