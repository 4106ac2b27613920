"""kubeflow/targets.py: the per-target facts (cron, accelerators, names) and finalize's checks."""
from __future__ import annotations

import pytest

from kubeflow import targets


@pytest.mark.parametrize("given,kfp,vertex", [
    ("0 3 * * *", "0 0 3 * * *", "0 3 * * *"),
    ("*/15 8-18 * * MON-FRI", "0 */15 8-18 * * MON-FRI", "*/15 8-18 * * MON-FRI"),
    ("0 0 1,15 JAN-JUN 0", "0 0 0 1,15 JAN-JUN 0", "0 0 1,15 JAN-JUN 0"),
    ("TZ=UTC 5 4 * * SUN", "0 5 4 * * SUN", "TZ=UTC 5 4 * * SUN"),
    ("0 6 * * 1-6/2", "0 0 6 * * 1-6/2", "0 6 * * 1-6/2"),
])
def test_one_cron_syntax_converted_per_target(given, kfp, vertex):
    assert targets.cron(targets.KUBEFLOW, given) == kfp
    assert targets.cron(targets.VERTEX, given) == vertex


@pytest.mark.parametrize("given", ["5 4 * * 7", "5 4 * * 5-7", "5 4 * * MON,7",
                                   "5 4 * * 1-7/2", "TZ=UTC 5 4 * * 7"])
def test_day_of_week_7_is_refused_for_kubeflow_and_passed_to_vertex(given):
    """KFP's robfig/cron v1.2.0 bounds day of week to 0-6; Vertex gets 7 as written."""
    with pytest.raises(ValueError) as err:
        targets.cron(targets.KUBEFLOW, given)
    message = str(err.value)
    assert message == (f"cron {given!r}: day of week field {given.split()[-1]!r} is not valid "
                       "on Kubeflow (allowed 0-6 or SUN-SAT; write 0 or SUN for Sunday, "
                       "not 7).")
    assert targets.cron(targets.VERTEX, given) == given


@pytest.mark.parametrize("bad,field", [
    ("0 3 * *", "give 5 fields"), ("0 0 3 * * *", "give 5 fields"),
    ("60 * * * *", "minute field '60'"), ("* 24 * * *", "hour field '24'"),
    ("* * 0 * *", "day of month field '0'"), ("* * * 13 *", "month field '13'"),
    ("* * * * 8", "day of week field '8'"), ("*/0 * * * *", "minute field '*/0'"),
    ("5-1 * * * *", "minute field '5-1'"), ("a * * * *", "minute field 'a'"),
    ("", "give 5 fields"), ("TZ=Bad;Zone 0 3 * * *", "bad time zone"),
])
def test_malformed_cron_names_the_field(bad, field):
    with pytest.raises(ValueError, match="cron .*" + field.replace("*", r"\*")):
        targets.cron(targets.VERTEX, bad)


def test_time_zones_vertex_only_and_consistent():
    assert targets.cron(targets.VERTEX, "0 3 * * *", "Asia/Tokyo") == "TZ=Asia/Tokyo 0 3 * * *"
    assert targets.cron(targets.KUBEFLOW, "0 3 * * *", "UTC") == "0 0 3 * * *"
    with pytest.raises(ValueError, match="Kubeflow schedules run in UTC"):
        targets.cron(targets.KUBEFLOW, "0 3 * * *", "Asia/Tokyo")
    with pytest.raises(ValueError, match="names TZ=UTC but --timezone is Asia/Tokyo"):
        targets.cron(targets.VERTEX, "TZ=UTC 0 3 * * *", "Asia/Tokyo")


def test_accelerator_names():
    assert targets.accelerator(targets.KUBEFLOW, "NVIDIA_L4") == "nvidia.com/gpu"
    assert targets.accelerator(targets.VERTEX, "NVIDIA_L4") == "NVIDIA_L4"
    assert targets.accelerator(targets.VERTEX, "TPU_V3") == "TPU_V3"
    with pytest.raises(ValueError, match="only NVIDIA GPUs"):
        targets.accelerator(targets.KUBEFLOW, "TPU_V3")
    with pytest.raises(ValueError, match="Vertex-style name"):
        targets.accelerator(targets.VERTEX, "nvidia-tesla-t4")


@pytest.mark.parametrize("name,ok", [("imgpipe", True), ("flowers-v2", True),
                                     ("Flowers", False), ("my_pipe", False), ("2cool", False),
                                     ("", False), ("a" * 129, False)])
def test_pipeline_names_both_backends_take(name, ok):
    if ok:
        assert targets.check_pipeline_name(name) == name
    else:
        with pytest.raises(ValueError, match="lowercase"):
            targets.check_pipeline_name(name)


def test_only_vertex_runs_resolvers_and_targets_are_checked():
    assert targets.supports_resolver(targets.VERTEX)
    assert not targets.supports_resolver(targets.KUBEFLOW)
    with pytest.raises(ValueError, match="target='argo'"):
        targets.supports_resolver("argo")


def test_artifact_types_from_schema_titles_and_instance_schemas():
    component = {"inputDefinitions": {"artifacts": {
        "examples": {"artifactType": {"instanceSchema": "title: tfx.Examples\ntype: object\n"}}},
        "parameters": {"x": {"parameterType": "STRING"}}},
        "outputDefinitions": {"artifacts": {
            "model": {"artifactType": {"schemaTitle": "tfx.Model"}}}}}
    assert targets.artifact_types(component) == {"examples": "tfx.Examples", "model": "tfx.Model"}


def _job(**task_extra):
    executor = {"container": {"image": "i", "command": list(targets.ENTRYPOINT), "args": []}}
    return {"pipelineSpec": {
        "root": {"inputDefinitions": {"parameters": {"data_root": {"parameterType": "STRING"}}},
                 "dag": {"tasks": {"ImageExampleGen": {"cachingOptions": {"enableCache": True}},
                                   **task_extra}}},
        "components": {"ImageExampleGen": {"executorLabel": "e"}},
        "deploymentSpec": {"executors": {"e": executor}}}}


def test_finalize_refuses_a_parameter_without_default_and_a_foreign_command():
    with pytest.raises(RuntimeError, match="without a default: \\['data_root'\\]"):
        targets.finalize(_job(), targets.KUBEFLOW, parameter_defaults={}, pipeline_root="gs://b")
    job = _job()
    job["pipelineSpec"]["deploymentSpec"]["executors"]["e"]["container"]["command"] = [
        "python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
    with pytest.raises(RuntimeError, match="does not run python -m kubeflow.entrypoint"):
        targets.finalize(job, targets.VERTEX, parameter_defaults={"data_root": "gs://d"},
                         pipeline_root="gs://b")
    job = _job()
    job["pipelineSpec"]["deploymentSpec"]["executors"]["e"] = {"resolver": {}}
    with pytest.raises(RuntimeError, match="resolver task"):
        targets.finalize(job, targets.KUBEFLOW, parameter_defaults={"data_root": "gs://d"},
                         pipeline_root="gs://b")
