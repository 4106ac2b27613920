"""Choosing the tf.distribute strategy, the mixed-precision policy and the batch layout.

Strategies (`name`):
  auto          multi_worker when TF_CONFIG names several tasks, mirrored for >1 GPU,
                gpu for one GPU, else cpu. Never picks a TPU: ask for one explicitly.
  cpu           the default strategy, GPUs hidden.
  gpu           MirroredStrategy on /gpu:0 (BackupAndRestore rejects OneDeviceStrategy).
  mirrored      MirroredStrategy over all local GPUs.
  multi_worker  MultiWorkerMirroredStrategy from TF_CONFIG. It must be created before
                TensorFlow runs any op, so `train_and_export` creates it first of all.
  tpu           TPUStrategy via TPUClusterResolver; data and model paths must be on GCS.

Precision: auto -> mixed_float16 on GPU, mixed_bfloat16 on TPU, float32 on CPU.
`batch_size` is per replica: the global batch is batch_size x replicas, so a TPU (8 cores)
trains with an 8x larger batch than one GPU.
"""
from __future__ import annotations

import json
import os
import socket
from typing import Iterable, Optional
from urllib.parse import urlsplit

import tensorflow as tf
import tf_keras

from trainer_module.options import PRECISIONS, STRATEGIES

AUTO_POLICY = {"cpu": "float32", "gpu": "mixed_float16", "tpu": "mixed_bfloat16"}
GCE_METADATA = ("metadata.google.internal", 80)  # named Cloud TPUs are looked up through it


def reachable(host: str, port: int, timeout: float = 5.0) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def num_workers(tf_config: Optional[dict] = None) -> int:
    """Tasks that train (chief + workers) in a TF_CONFIG dict (default: the environment)."""
    cluster = (_tf_config() if tf_config is None else tf_config).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_name(name: str, num_gpus: int, tf_config: Optional[dict] = None) -> str:
    """The concrete strategy `name` stands for; pure, so `auto` can be tested anywhere.

    Raises:
      ValueError: unknown name.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r}: must be one of {', '.join(STRATEGIES)}.")
    if name != "auto":
        return name
    if num_workers(tf_config) > 1:
        return "multi_worker"
    if num_gpus > 1:
        return "mirrored"
    return "gpu" if num_gpus else "cpu"


def choose_strategy(name: str = "auto", tpu_address: Optional[str] = None):
    """Returns a tf.distribute.Strategy; see the module docstring.

    Raises:
      ValueError: unknown name.
      RuntimeError: gpu/mirrored with no GPU, no reachable TPU for tpu, or multi_worker
        asked for after TensorFlow already ran ops.
    """
    gpus = tf.config.list_physical_devices("GPU")
    name = resolve_name(name, len(gpus))
    # OneDeviceStrategy would be the obvious choice for cpu/gpu, but BackupAndRestore
    # (resume after a kill) rejects it; the default and Mirrored strategies are supported.
    if name == "cpu":
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError as err:
                raise RuntimeError("strategy='cpu' must be chosen before TensorFlow "
                                   "initializes the GPU.") from err
        return tf.distribute.get_strategy()
    if name in ("gpu", "mirrored") and not gpus:
        raise RuntimeError(f"strategy={name!r} but TensorFlow sees no GPU.")
    if name == "gpu":
        return tf.distribute.MirroredStrategy(["/gpu:0"])
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as err:
            raise RuntimeError(
                "strategy='multi_worker' must be created at program start, before TensorFlow "
                f"runs any op ({err}). Call train_and_export/run_fn first thing in the "
                "process.") from err
    return _tpu_strategy(tpu_address)


def tpu_name(tpu_address: Optional[str] = None) -> Optional[str]:
    """The TPU `tpu` connects to: `tpu_address`, else $TPU_NAME, else None (none named)."""
    return tpu_address or os.environ.get("TPU_NAME") or None


def check_accelerator(expected: Optional[str], request: Optional[str] = None, *,
                      strategy: str = "auto", tpu_address: Optional[str] = None) -> None:
    """Fails fast when the Trainer asked for an accelerator it would not train on.

    Cheap (no TPU contacted; only `list_physical_devices`, which choose_strategy also calls
    before creating multi_worker), so run_fn calls it before anything slow.

    Args:
      expected: "GPU", "TPU" or None (nothing asked for: no check), as
        PipelineConfig.trainer_config() sets custom_config["accelerator"].
      request: what was asked for, for the message ("NVIDIA_TESLA_T4 x1").
      strategy, tpu_address: the Trainer's settings of those names.

    Raises:
      ValueError: `expected` is not GPU, TPU or None.
      RuntimeError: one line naming the request, what is missing and what to do: no GPU
        visible to TensorFlow; or a TPU with a strategy other than tpu, or with no TPU named.
    """
    if expected is None:
        return
    asked = f"this Trainer asked for {request or expected}"
    if expected == "GPU":
        if not tf.config.list_physical_devices("GPU"):
            raise RuntimeError(
                f"{asked} but TensorFlow sees no GPU: the image is the CPU variant (build "
                "kubeflow/Dockerfile with --build-arg VARIANT=gpu and set gpu_image) or the "
                "node has no GPU driver.")
    elif expected == "TPU":
        if strategy != "tpu":
            raise RuntimeError(f"{asked} but strategy={strategy!r} never uses a TPU: set "
                               "strategy: tpu.")
        if not tpu_name(tpu_address):
            raise RuntimeError(f"{asked} but no TPU is named: set tpu_address (or TPU_NAME) "
                               "to the Cloud TPU name, 'local' on a TPU VM, or "
                               "grpc://host:8470.")
    else:
        raise ValueError(f"accelerator={expected!r}: must be GPU, TPU or None.")


def _tpu_strategy(tpu_address: Optional[str]):
    """Connects to a TPU, failing fast (no minutes-long retries) when there is none."""
    address = tpu_name(tpu_address)
    if not address:
        raise RuntimeError(
            "strategy='tpu' but no TPU is named: set tpu_address (or TPU_NAME) to the Cloud "
            "TPU name, 'local' on a TPU VM, or grpc://host:8470.")
    if address.startswith("grpc://"):
        parts = urlsplit(address)
        if not (parts.hostname and parts.port
                and reachable(parts.hostname, parts.port)):
            raise RuntimeError(f"strategy='tpu': no TPU answers at tpu_address={address!r}.")
    elif address != "local" and not reachable(*GCE_METADATA):
        raise RuntimeError(
            f"strategy='tpu': the TPU name {address!r} is looked up through the Google Cloud "
            "metadata server, which is unreachable here (not on Google Cloud?).")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except Exception as err:  # resolver/runtime errors have no common type
        raise RuntimeError(f"strategy='tpu': could not initialize the TPU at {address!r} "
                           f"({type(err).__name__}: {err}).") from err


def accelerator(strategy) -> str:
    """'tpu', 'gpu' or 'cpu': what `strategy` computes on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if isinstance(strategy, (tf.distribute.MirroredStrategy,
                             tf.distribute.MultiWorkerMirroredStrategy)):
        devices = strategy.extended.worker_devices
        return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"
    # The default strategy places ops on a visible GPU when there is one.
    return "gpu" if tf.config.get_visible_devices("GPU") else "cpu"


def policy_for(precision: str, device: str) -> str:
    """The Keras mixed-precision policy for `precision` on `device` (cpu|gpu|tpu).

    Raises:
      ValueError: unknown precision or device, or float16 asked for on a TPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: must be one of {', '.join(PRECISIONS)}.")
    if device not in AUTO_POLICY:
        raise ValueError(f"device={device!r}: must be one of {', '.join(AUTO_POLICY)}.")
    if precision == "auto":
        return AUTO_POLICY[device]
    if precision == "mixed_float16" and device == "tpu":
        raise ValueError("precision='mixed_float16': TPUs compute in bfloat16; use auto or "
                         "mixed_bfloat16.")
    return precision


def precision_policy(precision: str, strategy) -> str:
    """`policy_for` on the device the strategy computes on."""
    return policy_for(precision, accelerator(strategy))


def set_precision(policy: str) -> None:
    """Sets the global Keras policy; call before building the model."""
    tf_keras.mixed_precision.set_global_policy(policy)


def global_batch_size(batch_size: int, strategy) -> int:
    """Per-replica `batch_size` -> the global batch the dataset must produce."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1.")
    return batch_size * strategy.num_replicas_in_sync


def shard_policy(num_files: int, workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE sharding when every worker gets a file, else DATA (each reads all, keeps 1/N)."""
    if workers > 1 and num_files < workers:
        return tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.experimental.AutoShardPolicy.FILE


def check_tpu_paths(paths: Iterable) -> None:
    """TPUs read and write only GCS.

    Raises:
      ValueError: naming the first path that is not gs://.
    """
    for path in paths:
        if path and not str(path).startswith("gs://"):
            raise ValueError(f"strategy='tpu' needs data and model paths on GCS (gs://...); "
                             f"got {path!r}.")
