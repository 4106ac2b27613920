"""pipeline/wiring.py: create_pipeline is pure and wires the components in order."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.config import load_config
from pipeline.wiring import (CURATED_SCHEMA, SETUP_PY, create_pipeline, trainer_config,
                               with_dependency_flag)

ORDER = ["ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
         "DataGate", "Transform", "Trainer", "latest_blessed_model_resolver", "Evaluator",
         "Pusher"]


def _config(tmp_path, **overrides):
    return load_config(None, {"data_root": str(tmp_path / "missing"),
                              "workdir": str(tmp_path / "work"), **overrides})


def test_components_in_order_and_pure(tmp_path):
    pipeline = create_pipeline(_config(tmp_path))
    ids = [c.id for c in pipeline.components]
    assert sorted(ids) == sorted(ORDER)
    # TFX sorts topologically: every data dependency of the design runs before its consumer.
    for upstream, downstream in [("ImageExampleGen", "DatasetSchemaGen"),
                                 ("DatasetSchemaGen", "StatisticsGen"),
                                 ("StatisticsGen", "ExampleValidator"),
                                 ("ExampleValidator", "DataGate"), ("DataGate", "Transform"),
                                 ("DatasetSchemaGen", "Transform"), ("Transform", "Trainer"),
                                 ("Trainer", "Evaluator"), ("Evaluator", "Pusher")]:
        assert ids.index(upstream) < ids.index(downstream)
    by_id = {c.id: c for c in pipeline.components}
    assert by_id["DataGate"] in by_id["Transform"].upstream_nodes  # the gate stops training
    # Pure: building the pipeline touches nothing on disk, not even for a missing data root.
    assert os.listdir(tmp_path) == []
    assert pipeline.pipeline_info.pipeline_root == str(tmp_path / "work" / "pipeline_root")


def test_wiring_uses_dotted_paths_not_module_files(tmp_path):
    by_id = {c.id: c for c in create_pipeline(_config(tmp_path, image_size=64)).components}
    transform = by_id["Transform"].exec_properties
    assert transform["preprocessing_fn"] == "trainer_module.preprocessing.preprocessing_fn"
    assert transform["module_file"] is None
    assert '"image_size": 64' in transform["custom_config"]
    assert by_id["Transform"].exec_properties["force_tf_compat_v1"] == 0
    trainer = by_id["Trainer"].exec_properties
    assert trainer["run_fn"] == "trainer_module.train.run_fn" and trainer.get("module_file") is None
    # materialize=False: no transformed examples output, so no decoded pixels on disk.
    assert "transformed_examples" not in by_id["Transform"].outputs
    # Evaluator reads the raw eval split; Pusher targets workdir/serving.
    assert by_id["Evaluator"].exec_properties["example_splits"] == '["eval"]'
    assert str(tmp_path / "work" / "serving") in by_id["Pusher"].exec_properties[
        "push_destination"]


def test_trainer_backups_only_where_the_same_execution_can_be_restarted(tmp_path):
    def backup_interval(config, **kwargs):
        trainer = {c.id: c for c in create_pipeline(config, **kwargs).components}["Trainer"]
        return json.loads(trainer.exec_properties["custom_config"])["backup_interval_s"]

    # Kubeflow and Vertex restart the same execution: 60 s. A local run is a new execution
    # with a new model_run folder every time, so its backups could never be read: none.
    assert backup_interval(_config(tmp_path)) == 60.0
    assert backup_interval(_config(tmp_path), trainer_restarts=False) is None
    # A value the user sets is kept either way.
    assert backup_interval(_config(tmp_path, backup_interval_s=0),
                           trainer_restarts=False) == 0
    from pipeline import local_runner  # pylint: disable=g-import-not-at-top
    trainer = {c.id: c for c in local_runner.build(_config(tmp_path)).components}["Trainer"]
    assert json.loads(trainer.exec_properties["custom_config"])["backup_interval_s"] is None


def test_dataset_schema_in_the_workdir_by_default_and_user_schema_when_given(tmp_path):
    default = {c.id: c for c in create_pipeline(_config(tmp_path)).components}
    props = default["DatasetSchemaGen"].exec_properties
    assert props["schema_path"] == str(tmp_path / "work" / "schema" / "schema.pbtxt")
    assert props.get("template_path") is None and props["create"] == 1  # the shipped one
    assert default["DataGate"].exec_properties["accept_hint"] == \
        f"imgpipe schema update --workdir {tmp_path / 'work'}"
    mine = str(tmp_path / "my_schema.pbtxt")
    shutil.copy(CURATED_SCHEMA, mine)
    custom = {c.id: c for c in create_pipeline(_config(tmp_path, schema_path=mine)).components}
    assert custom["DatasetSchemaGen"].exec_properties["schema_path"] == mine
    assert custom["DatasetSchemaGen"].exec_properties["create"] == 0
    assert custom["DataGate"].exec_properties["accept_hint"] == f"edit {mine}"


def test_artifact_outputs_write_nothing_outside_the_artifacts(tmp_path):
    """Kubeflow/Vertex: the launcher uploads declared outputs only."""
    local = {c.id: c for c in create_pipeline(_config(tmp_path)).components}
    cluster = {c.id: c for c in create_pipeline(_config(tmp_path),
                                                artifact_outputs=True).components}
    assert cluster["DatasetSchemaGen"].exec_properties["schema_path"] == ""
    assert cluster["DatasetSchemaGen"].exec_properties["create"] == 1
    assert cluster["DataGate"].exec_properties["report_dir"] == ""
    assert "schema_path" in cluster["DataGate"].exec_properties["accept_hint"]
    assert type(cluster["Pusher"]).__name__ == "ArtifactPusher"
    assert cluster["Pusher"].exec_properties["push_destination"] is None
    assert local["DataGate"].exec_properties["report_dir"] == str(tmp_path / "work" / "reports")
    assert type(local["Pusher"]).__name__ == "ServingPusher"
    # A GPU request is the cluster's; the same config run locally trains on what it has.
    gpu = _config(tmp_path, trainer_accelerator="NVIDIA_TESLA_T4", trainer_accelerator_count=1)
    for kwargs, expected in (({}, None), ({"artifact_outputs": True}, "GPU")):
        trainer = {c.id: c for c in create_pipeline(gpu, **kwargs).components}["Trainer"]
        assert json.loads(trainer.exec_properties["custom_config"])["accelerator"] == expected


def test_extra_components_are_wired_to_the_pipelines_channels(tmp_path):
    from tfx.components import StatisticsGen  # pylint: disable=g-import-not-at-top
    seen = {}

    def extra(by_id):
        seen.update(by_id)
        return [StatisticsGen(examples=by_id["ImageExampleGen"].outputs["examples"]
                              ).with_id("ExtraStats")]
    ids = [c.id for c in create_pipeline(_config(tmp_path), extra_components=extra).components]
    assert set(seen) == set(ORDER) and "ExtraStats" in ids
    assert ids.index("ImageExampleGen") < ids.index("ExtraStats")


def test_validate_only_stops_at_the_gate(tmp_path):
    ids = [c.id for c in create_pipeline(_config(tmp_path), validate_only=True).components]
    assert ids == ORDER[:5]


def test_dependency_flag_added_once():
    assert with_dependency_flag([]) == []
    assert with_dependency_flag(["--direct_num_workers=2"]) == [
        "--direct_num_workers=2", f"--setup_file={SETUP_PY}"]
    given = ["--runner=DataflowRunner", "--sdk_container_image=img"]
    assert with_dependency_flag(given) == given


def test_target_options_without_baseline_and_with_an_image_project_dir(tmp_path):
    pipeline = create_pipeline(_config(tmp_path), with_baseline=False, project_dir="/opt/x")
    by_id = {c.id: c for c in pipeline.components}
    assert "latest_blessed_model_resolver" not in by_id
    assert "baseline_model" not in by_id["Evaluator"].inputs
    assert "--setup_file=/opt/x/setup.py" in by_id["ImageExampleGen"].executor_spec.beam_pipeline_args


@pytest.mark.slow
def test_a_local_run_skips_aiplatform_and_freezes_the_libraries_out_of_gc(tmp_path):
    """tfx.v1 (and the Vertex trainer extension) import google-cloud-aiplatform, ~9 s of
    every run's start on 2 cores; a local pipeline is built without them. What the libraries'
    import created is frozen out of the garbage collector's passes, which are on again."""
    code = ("import gc, json, sys\n"
            "from pipeline import local_runner\n"
            "from pipeline.config import load_config\n"
            f"config = load_config(None, {{'data_root': {str(tmp_path / 'data')!r}, "
            f"'workdir': {str(tmp_path / 'w')!r}}})\n"
            "built = local_runner.build(config)\n"
            "print(json.dumps([len(built.components), sorted(m for m in sys.modules "
            "if m.startswith('google.cloud.aiplatform')), gc.isenabled(), "
            "gc.get_freeze_count() > 100000]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [10, [], True, True]


def test_trainer_config_is_json_able():
    import json
    config = load_config(None, {"data_root": "/d"})
    assert json.loads(json.dumps(trainer_config(config, restarts=False, cluster_accelerator=True)))["image_size"] == 300


@pytest.mark.parametrize("accelerator, count, kind, asked", [
    (None, 0, None, None),
    ("NVIDIA_TESLA_T4", 1, "GPU", "NVIDIA_TESLA_T4 x1"),
    ("NVIDIA_L4", 2, "GPU", "NVIDIA_L4 x2"),
    ("TPU_V3", 8, "TPU", "TPU_V3 x8"),
])
def test_trainer_config_carries_what_trainer_accelerator_asks_for(accelerator, count, kind,
                                                                   asked):
    import json
    config = load_config(None, {"data_root": "/d", "trainer_accelerator": accelerator,
                                "trainer_accelerator_count": count})
    custom = json.loads(json.dumps(trainer_config(config, restarts=False, cluster_accelerator=True)))
    assert (custom["accelerator"], custom["accelerator_request"]) == (kind, asked)
