"""pipeline/config.py: YAML + overrides -> validated PipelineConfig."""
import os

import pytest
import yaml

from pipeline.config import SECTIONS, PipelineConfig, known_keys, load_config
from trainer_module import features
from trainer_module.options import TrainOptions


def _write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


def test_defaults_and_overrides():
    config = load_config(None, {"data_root": "/d", "workdir": "/w", "epochs": "3",
                                "image_size": 64, "train_steps": None})
    assert config.training.epochs == 3 and config.training.image_size == 64
    assert config.training.train_steps is None
    assert config.training.batch_size == TrainOptions.batch_size
    assert features.pipeline_root(config.workdir) == os.path.join("/w", "pipeline_root")
    assert features.metadata_path(config.workdir) == os.path.join("/w", "metadata.sqlite")
    assert features.serving_dir(config.workdir) == os.path.join("/w", "serving")


def test_yaml_then_overrides_win(tmp_path):
    path = _write(tmp_path, {"data_root": "/from/yaml", "workdir": "/w", "epochs": 7,
                             "batch_size": 4, "verify_images": False,
                             "ingest_beam_args": ["--direct_num_workers=4"]})
    config = load_config(path, {"epochs": 2, "batch_size": None})
    assert config.data_root == "/from/yaml"
    assert config.training.epochs == 2  # override wins
    assert config.training.batch_size == 4  # a None override does not clobber the file
    assert config.ingest.verify_images is False
    assert config.ingest_beam_args == ["--direct_num_workers=4"]


def test_string_coercion_from_env_style_values():
    config = load_config(None, {"data_root": "/d", "verify_images": "false", "xla": "1",
                                "learning_rate": "0.01", "max_side": "1024",
                                "beam_pipeline_args": "--runner=DirectRunner --a=b"})
    assert config.ingest.verify_images is False and config.training.xla is True
    assert config.training.learning_rate == pytest.approx(0.01)
    assert config.ingest.max_side == 1024
    assert config.beam_pipeline_args == ["--runner=DirectRunner", "--a=b"]
    assert load_config(None, {"data_root": "/d", "backup_interval_s": "30"}) \
        .training.backup_interval_s == 30.0
    for unset in ("none", "off", "", "null"):
        assert load_config(None, {"data_root": "/d", "backup_interval_s": unset}) \
            .training.backup_interval_s is None
    # An Optional string is unset by the same words; a plain string keeps them.
    config = load_config(None, {"data_root": "/d", "schema_path": "none", "weights": "none"})
    assert config.validation.schema_path is None and config.training.weights == "none"


def test_yaml_is_safe_loaded(tmp_path):
    path = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    path.write_text(f"data_root: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError, match="not valid YAML.*python/object/apply"):
        load_config(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": 0}, "epochs"),
    ({"strategy": "quantum"}, "strategy='quantum'"),
    ({"layout": "zip"}, "layout"),
    ({"eval_fraction": 1.5}, "eval_fraction"),
    ({"eval_fraction": 0.6, "test_fraction": 0.5}, "eval_fraction + test_fraction"),
    ({"eval_fraction": 0.0}, "eval split"),
    ({"image_size": 16}, "image_size=16"),
    ({"image_size": "big"}, "image_size='big'"),
    ({"verify_images": "maybe"}, "verify_images"),
    ({"unknown_key": 1}, "unknown config key"),
    ({"training": {"layout": "csv"}}, "unknown config key.*training.layout"),
    ({"seed": -1}, "seed=-1"),
    ({"random_crop": True, "cache": "memory"}, "random_crop=true with cache='memory'"),
    ({"random_crop": True, "augment": False}, "random_crop=true is the augmentation's zoom"),
    ({"resources": {"Trainr": {"cpu": 2}}}, "unknown component 'Trainr'"),
    ({"trainer_accelerator": "NVIDIA_L4"}, "set both"),
    ({"beam_runner": "spark"}, "beam_runner='spark'"),
    ({"imbalance_ratio": 0.5}, "imbalance_ratio=0.5"),
    ({"max_pixels": 0}, "max_pixels=0"),
    ({"epochs": None, "batch_size": "x"}, "batch_size='x': must be a finite int"),
    ({"data_root": ""}, "data_root"),
    ({"jpeg_quality": 101}, "jpeg_quality"),
    ({"min_accuracy": 2}, "min_accuracy"),
    ({"min_class_recall": 1.5}, "min_class_recall"),
    ({"lr_schedule": "step"}, "lr_schedule"),
    ({"target_shard_mb": "inf"}, "target_shard_mb='inf': must be a finite float"),
    ({"learning_rate": "nan"}, "learning_rate='nan': must be a finite float"),
    ({"target_shard_mb": 2.0 ** 31}, "target_shard_mb"),
    ({"batch_size": float("inf")}, "batch_size=inf: must be a finite int"),
    ({"image_size": True}, "image_size=True: must be a finite int"),
    ({"augment": 0.5}, "augment=0.5: must be true or false"),
    ({"learning_rate": -1}, "learning_rate=-1.0: must be > 0"),
    ({"fine_tune_learning_rate": 0}, "fine_tune_learning_rate=0.0: must be > 0"),
    ({"shuffle_buffer": 0}, "shuffle_buffer=0"),
    ({"backup_interval_s": -1}, "backup_interval_s=-1"),
    ({"backup_interval_s": float("nan")}, "backup_interval_s=nan"),
    ({"cache": "5"}, "cache=.5.: must be auto, none, memory, or an absolute"),
    ({"cache": "/tmp/"}, "cache='/tmp/'"),
    ({"profile_batches": "abc"}, "profile_batches='abc'"),
    ({"weights": "imagenett"}, "weights='imagenett': no such file"),
    ({"weights": "/nonexistent.h5"}, "no such file"),
    ({"schema_path": "/nope.pbtxt"}, "schema_path='/nope.pbtxt': no such file"),
])
def test_bad_values_name_the_field(overrides, message):
    values = {"data_root": "/d", **overrides}
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("(", r"\(")):
        load_config(None, values)


def test_workdir_inside_the_data_root_is_refused(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="inside data_root"):
        load_config(None, {"data_root": str(tmp_path / "images"),
                           "workdir": str(tmp_path / "images" / "work")})
    load_config(None, {"data_root": str(tmp_path / "images"), "workdir": str(tmp_path / "w")})


def test_yaml_syntax_errors_and_a_workdir_that_is_a_file_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_size: 64\n  x: :\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(str(bad), {"data_root": "/d"})
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        load_config(None, {"data_root": "/d", "workdir": str(a_file)})


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(str(path))


def test_service_account_is_an_email_of_a_service_account_or_unset():
    assert load_config(None, {"data_root": "/d"}).cluster.service_account is None
    for email in ("trainer@my-proj.iam.gserviceaccount.com",
                  "123456789-compute@developer.gserviceaccount.com"):
        assert load_config(None, {"data_root": "/d", "service_account": email}) \
            .cluster.service_account == email
    assert load_config(None, {"data_root": "/d", "service_account": ""}) \
        .cluster.service_account is None  # `--set service_account=` unsets it
    for bad in ("trainer", "trainer@gmail.com", "Trainer@p.iam.gserviceaccount.com",
                "trainer@my-proj.iam.gserviceaccount.com.evil.org"):
        with pytest.raises(ValueError) as err:
            load_config(None, {"data_root": "/d", "service_account": bad})
        message = str(err.value)
        assert message.startswith(f"service_account={bad!r}: must be a service account email")
        assert "\n" not in message


def test_gpu_image_defaults_to_unset_and_is_a_plain_setting(tmp_path):
    assert load_config(None, {"data_root": "/d"}).cluster.gpu_image == ""
    path = _write(tmp_path, {"data_root": "/d", "gpu_image": "r/imgpipe-gpu:0.1"})
    assert load_config(path).cluster.gpu_image == "r/imgpipe-gpu:0.1"
    assert load_config(path, {"gpu_image": "r/other:2"}).cluster.gpu_image == "r/other:2"


def test_sections_flat_and_nested_keys_reach_every_setting(tmp_path):
    """Each setting has one home (its layer's options class); YAML may name it flat, as
    configs always did, or under its section."""
    path = _write(tmp_path, {"data_root": "/d", "epochs": 7, "random_crop": True,
                             "training": {"seed": 3, "batch_size": 8},
                             "ingest": {"max_side": 512}, "evaluation": {"min_accuracy": 0.8},
                             "cluster": {"image": "r/imgpipe:1"}, "validation": {
                                 "imbalance_ratio": 4}})
    config = load_config(path, {"training": {"batch_size": "16"}})
    assert (config.training.epochs, config.training.seed, config.training.batch_size) == (
        7, 3, 16)
    assert config.training.random_crop is True and config.ingest.max_side == 512
    assert config.evaluation.min_accuracy == 0.8 and config.cluster.image == "r/imgpipe:1"
    assert config.validation.imbalance_ratio == 4.0
    declared = {f for cls in SECTIONS.values() for f in cls.__dataclass_fields__}
    assert set(known_keys()) == declared | {"workdir", "pipeline_name", "enable_cache",
                                            "ingest_beam_args", "beam_pipeline_args"}
    assert {"random_crop", "seed"} <= set(known_keys())


def test_every_default_is_the_sections_own():
    config = load_config(None, {"data_root": "/d"})
    for name, cls in SECTIONS.items():
        section = getattr(config, name)
        assert isinstance(section, cls)
        if name != "ingest":
            assert section == cls(), name
    assert isinstance(config, PipelineConfig)
