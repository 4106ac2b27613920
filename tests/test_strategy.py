"""Tests for trainer_module.strategy on this CPU machine: selection, precision, TPU failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import portpicker
import pytest
import tensorflow as tf

from trainer_module import strategy as strategy_lib

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))
TWO_WORKERS = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
               "task": {"type": "worker", "index": 0}}


@pytest.mark.parametrize("name, gpus, tf_config, expected", [
    ("auto", 0, {}, "cpu"),
    ("auto", 1, {}, "gpu"),
    ("auto", 4, {}, "mirrored"),
    ("auto", 0, TWO_WORKERS, "multi_worker"),
    ("auto", 2, {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}}, "multi_worker"),
    ("auto", 0, {"cluster": {"worker": ["a:1"]}}, "cpu"),  # one task: nothing to distribute
    ("tpu", 0, {}, "tpu"),
    ("cpu", 8, TWO_WORKERS, "cpu"),
])
def test_resolve_name(name, gpus, tf_config, expected):
    assert strategy_lib.resolve_name(name, gpus, tf_config) == expected


def test_auto_reads_tf_config_from_the_environment(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(TWO_WORKERS))
    assert strategy_lib.num_workers() == 2
    assert strategy_lib.resolve_name("auto", 0) == "multi_worker"
    monkeypatch.delenv("TF_CONFIG")
    assert strategy_lib.num_workers() == 0


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match=r"strategy='horovod': must be one of auto, cpu"):
        strategy_lib.choose_strategy("horovod")


def test_cpu_and_auto_on_this_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name in ("cpu", "auto") if not HAS_GPU else ("cpu",):
        strategy = strategy_lib.choose_strategy(name)
        assert strategy is tf.distribute.get_strategy()  # the default strategy
        assert strategy_lib.accelerator(strategy) == "cpu"
        assert strategy_lib.precision_policy("auto", strategy) == "float32"
        assert strategy_lib.global_batch_size(4, strategy) == 4


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU error")
@pytest.mark.parametrize("name", ["gpu", "mirrored"])
def test_gpu_strategies_without_a_gpu_fail_clearly(name):
    with pytest.raises(RuntimeError, match=f"strategy='{name}' but TensorFlow sees no GPU"):
        strategy_lib.choose_strategy(name)


def test_mirrored_on_cpu_is_a_cpu_accelerator():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert strategy_lib.accelerator(strategy) == "cpu"
    assert strategy_lib.global_batch_size(8, strategy) == 8 * strategy.num_replicas_in_sync


@pytest.mark.parametrize("precision, device, expected", [
    ("auto", "cpu", "float32"),
    ("auto", "gpu", "mixed_float16"),
    ("auto", "tpu", "mixed_bfloat16"),
    ("float32", "gpu", "float32"),
    ("float32", "tpu", "float32"),
    ("mixed_bfloat16", "gpu", "mixed_bfloat16"),
    ("mixed_float16", "cpu", "mixed_float16"),
])
def test_precision_policy_choice(precision, device, expected):
    assert strategy_lib.policy_for(precision, device) == expected


def test_bad_precision_choices():
    with pytest.raises(ValueError, match="precision='fp8'"):
        strategy_lib.policy_for("fp8", "gpu")
    with pytest.raises(ValueError, match="TPUs compute in bfloat16"):
        strategy_lib.policy_for("mixed_float16", "tpu")


def test_shard_policy_and_batch_checks():
    policy = tf.data.experimental.AutoShardPolicy
    assert strategy_lib.shard_policy(1, 2) == policy.DATA
    assert strategy_lib.shard_policy(4, 2) == policy.FILE
    assert strategy_lib.shard_policy(1, 1) == policy.FILE
    with pytest.raises(ValueError, match="batch_size=0"):
        strategy_lib.global_batch_size(0, tf.distribute.get_strategy())


def test_check_tpu_paths():
    strategy_lib.check_tpu_paths(["gs://b/data/Split-train/*", "gs://b/run", None])
    with pytest.raises(ValueError, match=r"GCS \(gs://...\); got '/tmp/run'"):
        strategy_lib.check_tpu_paths(["gs://b/data", "/tmp/run"])


@pytest.mark.parametrize("address, match", [
    (None, "no TPU is named"),
    ("grpc://127.0.0.1:{port}", "no TPU answers"),
    ("my-tpu", "metadata server, which is unreachable"),
])
def test_tpu_without_a_tpu_fails_fast_and_clearly(monkeypatch, address, match):
    monkeypatch.delenv("TPU_NAME", raising=False)
    if address:
        address = address.format(port=portpicker.pick_unused_port())
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=match):
        strategy_lib.choose_strategy("tpu", tpu_address=address)
    assert time.monotonic() - start < 15  # TPUClusterResolver alone can retry for minutes


def test_multi_worker_after_tensorflow_started_is_a_clear_error(monkeypatch):
    tf.constant(1.0) + 1.0  # the eager context now exists, as in any process that ran ops
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": 0}}))
    with pytest.raises(RuntimeError, match="must be created at program start"):
        strategy_lib.choose_strategy("auto")


# A Trainer that asked for an accelerator must not train on the CPU (check_accelerator).
GPU_MESSAGE = ("this Trainer asked for NVIDIA_TESLA_T4 x1 but TensorFlow sees no GPU: the image "
               "is the CPU variant (build kubeflow/Dockerfile with --build-arg VARIANT=gpu and "
               "set gpu_image) or the node has no GPU driver.")


def test_nothing_asked_for_is_never_refused():
    assert strategy_lib.check_accelerator(None) is None
    assert strategy_lib.check_accelerator(None, None, strategy="tpu") is None


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU error")
def test_a_gpu_asked_for_but_not_visible_is_one_line():
    with pytest.raises(RuntimeError) as err:
        strategy_lib.check_accelerator("GPU", "NVIDIA_TESLA_T4 x1", strategy="gpu")
    assert str(err.value) == GPU_MESSAGE


def test_a_gpu_asked_for_and_visible_passes(monkeypatch):
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [gpu] if kind == "GPU" else [])
    assert strategy_lib.check_accelerator("GPU", "NVIDIA_TESLA_T4 x1") is None


@pytest.mark.parametrize("strategy, address, tpu_name, message", [
    ("auto", None, None, "this Trainer asked for TPU_V3 x8 but strategy='auto' never uses a "
                         "TPU: set strategy: tpu."),
    ("gpu", "local", None, "this Trainer asked for TPU_V3 x8 but strategy='gpu' never uses a "
                           "TPU: set strategy: tpu."),
    ("tpu", None, None, "this Trainer asked for TPU_V3 x8 but no TPU is named: set tpu_address "
                        "(or TPU_NAME) to the Cloud TPU name, 'local' on a TPU VM, or "
                        "grpc://host:8470."),
    ("tpu", "local", None, None),
    ("tpu", None, "my-tpu", None),
])
def test_a_tpu_asked_for_needs_the_tpu_strategy_and_a_tpu_name(monkeypatch, strategy, address,
                                                                tpu_name, message):
    monkeypatch.delenv("TPU_NAME", raising=False)
    if tpu_name:
        monkeypatch.setenv("TPU_NAME", tpu_name)
    start = time.monotonic()
    if message is None:
        assert strategy_lib.check_accelerator("TPU", "TPU_V3 x8", strategy=strategy,
                                              tpu_address=address) is None
    else:
        with pytest.raises(RuntimeError) as err:
            strategy_lib.check_accelerator("TPU", "TPU_V3 x8", strategy=strategy,
                                           tpu_address=address)
        assert str(err.value) == message
    assert time.monotonic() - start < 1  # nothing is contacted


def test_an_unknown_accelerator_kind_is_a_value_error():
    with pytest.raises(ValueError, match=r"^accelerator='gpu': must be GPU, TPU or None\.$"):
        strategy_lib.check_accelerator("gpu")


def test_run_fn_checks_the_accelerator_before_training(monkeypatch):
    from trainer_module import train
    calls = []
    monkeypatch.setattr(train, "train_and_export", lambda *a, **kw: calls.append((a, kw)))

    def run(custom_config):
        train.run_fn(types.SimpleNamespace(
            custom_config=custom_config, train_files=["t"], eval_files=["e"],
            model_run_dir="m", serving_model_dir="s", transform_output="tg"))

    expected = (["t"], ["e"]), {"model_run_dir": "m", "serving_model_dir": "s",
                                "transform_output_dir": "tg", "epochs": 2}
    # Local runs: nothing asked for; the accelerator keys never reach train_and_export.
    run({"epochs": 2, "accelerator": None, "accelerator_request": None})
    run({"epochs": 2})  # a custom_config compiled before the keys existed
    # Inside a Vertex custom job TFX hands over its own job settings too.
    run({"epochs": 2, "ai_platform_enable_vertex": True, "ai_platform_vertex_region": "r",
         "ai_platform_training_args": {"project": "p", "job_spec": {}}})
    assert calls == [expected, expected, expected]
    if not HAS_GPU:
        with pytest.raises(RuntimeError) as err:
            run({"epochs": 2, "accelerator": "GPU", "accelerator_request": "NVIDIA_TESLA_T4 x1"})
        assert str(err.value) == GPU_MESSAGE
        assert len(calls) == 3  # refused before training started


@pytest.mark.slow
def test_a_gpu_trainer_process_without_a_gpu_stops_at_once_with_one_line(tmp_path):
    """A GPU Trainer on the CPU image, end to end: the config's custom_config, through JSON
    as TFX hands it over, into run_fn in a fresh process that sees no GPU."""
    from pipeline.config import load_config
    from pipeline.wiring import trainer_config
    custom_config = trainer_config(
        load_config(None, {"data_root": "/d", "trainer_accelerator": "NVIDIA_TESLA_T4",
                           "trainer_accelerator_count": 1}),
        restarts=True, cluster_accelerator=True)
    script = (
        "import json, sys, types\n"
        "from trainer_module import train\n"
        "train.run_fn(types.SimpleNamespace(\n"
        "    custom_config=json.loads(sys.argv[2]),\n"
        "    train_files=[sys.argv[1] + '/Split-train/*'], eval_files=[sys.argv[1] + '/e'],\n"
        "    model_run_dir=sys.argv[1] + '/run', serving_model_dir=sys.argv[1] + '/serving',\n"
        "    transform_output=None))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path),
                           json.dumps(custom_config)], cwd=root,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"RuntimeError: {GPU_MESSAGE}"
    assert list(tmp_path.iterdir()) == []  # it stopped before writing anything
