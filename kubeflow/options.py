"""`ClusterOptions`: Kubeflow Pipelines / Vertex AI settings, declared, defaulted and
validated here only. Local runs ignore them. Plain Python (no kfp, no TFX).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

BEAM_RUNNERS = ("direct", "dataflow")
# Component ids of create_pipeline, the keys `resources` may name.
COMPONENTS = ("ImageExampleGen", "DatasetSchemaGen", "StatisticsGen", "ExampleValidator",
              "DataGate", "Transform", "Trainer", "Evaluator", "Pusher",
              "DataReport", "RunReport")  # the last two: Kubeflow/Vertex only
_RESOURCE_KEYS = ("cpu", "memory")
# A service account's email: NAME@PROJECT.iam (user-managed), or a project's default compute
# (NUMBER-compute@developer) or App Engine (PROJECT@appspot) account.
_SERVICE_ACCOUNT = re.compile(
    r"[a-z0-9][a-z0-9-]{0,62}@([a-z0-9][a-z0-9.-]*\.iam|developer|appspot)"
    r"\.gserviceaccount\.com")


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """Where and how compiled pipelines run (`imgpipe compile|submit|schedule`).

    Raises (on construction):
      ValueError: naming the first bad field, its value and what is allowed.
    """
    image: str = ""  # container image of every task (build it from kubeflow/Dockerfile)
    # The GPU variant of `image` (kubeflow/Dockerfile --build-arg VARIANT=gpu), used by the
    # Trainer when trainer_accelerator names a GPU (NVIDIA_*).
    gpu_image: str = ""
    # Per component id (see COMPONENTS): {"Trainer": {"cpu": 8, "memory": "32G"}}; memory in
    # G (or a number of GB), cpu in cores. In YAML a mapping; with --set, a YAML/JSON string.
    resources: dict = dataclasses.field(default_factory=dict)
    # One accelerator name for both targets, Vertex style (NVIDIA_TESLA_T4, NVIDIA_L4,
    # NVIDIA_TESLA_A100, TPU_V3, ...); kubeflow/targets.py maps it (KFP: nvidia.com/gpu).
    trainer_accelerator: Optional[str] = None
    trainer_accelerator_count: int = 0
    beam_runner: str = "direct"  # one of BEAM_RUNNERS, for the Beam components when compiled
    gcp_project: Optional[str] = None  # Dataflow and Vertex custom training
    gcp_region: Optional[str] = None
    dataflow_temp_location: Optional[str] = None  # gs://bucket/tmp for Dataflow
    # Vertex only: run the Trainer as a Vertex AI custom job (TFX's Google Cloud Trainer
    # extension) on this machine type, with trainer_accelerator and replicas.
    vertex_training: bool = False
    vertex_machine_type: str = "n1-standard-8"
    vertex_replica_count: int = 1  # >1 adds a worker pool (MultiWorkerMirroredStrategy)
    # Google service account of Vertex's pipeline and training jobs; None: the project's default
    service_account: Optional[str] = None

    def __post_init__(self):
        if self.beam_runner not in BEAM_RUNNERS:
            raise ValueError(f"beam_runner={self.beam_runner!r}: must be one of "
                             f"{', '.join(BEAM_RUNNERS)}.")
        _check_resources(self.resources)
        if self.service_account is not None and not _SERVICE_ACCOUNT.fullmatch(
                self.service_account):
            raise ValueError(f"service_account={self.service_account!r}: must be a service "
                             "account email such as name@my-project.iam.gserviceaccount.com, "
                             "or unset.")
        if self.trainer_accelerator_count < 0 or self.vertex_replica_count < 1:
            raise ValueError("trainer_accelerator_count must be >= 0 and "
                             "vertex_replica_count >= 1.")
        if bool(self.trainer_accelerator) != (self.trainer_accelerator_count > 0):
            raise ValueError(f"trainer_accelerator={self.trainer_accelerator!r} with "
                             f"trainer_accelerator_count={self.trainer_accelerator_count}: "
                             "set both (a type and a count >= 1) or neither.")

    @property
    def accelerator_kind(self) -> Optional[str]:
        """"GPU" (NVIDIA_*), "TPU" (TPU_*) or None: what run_fn checks TF can see."""
        name = self.trainer_accelerator or ""
        return "GPU" if name.startswith("NVIDIA_") else "TPU" if name.startswith("TPU_") else None

    @property
    def accelerator_request(self) -> Optional[str]:
        """"NVIDIA_TESLA_T4 x2", or None: named in run_fn's error when TF sees no such device."""
        if self.accelerator_kind is None:
            return None
        return f"{self.trainer_accelerator} x{self.trainer_accelerator_count}"


def memory_gb(value: Any) -> float:
    """'32G', '512M', '16Gi' or a number of GB -> GB as a float (what ResourceSpec takes)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9.]+)\s*([GgMm])i?[Bb]?\s*", str(value))
        if not match:
            raise ValueError(f"memory={value!r}: give e.g. 16G, 512M or a number of GB.")
        number = float(match.group(1)) / (1024 if match.group(2) in "Mm" else 1)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"memory={value!r}: must be > 0.")
    return number


def _check_resources(resources: Any) -> None:
    if not isinstance(resources, dict):
        raise ValueError(f"resources={resources!r}: must be a mapping of component id to "
                         "{cpu: N, memory: 16G}.")
    for component, spec in resources.items():
        if component not in COMPONENTS:
            raise ValueError(f"resources: unknown component {component!r}; one of "
                             f"{', '.join(COMPONENTS)}.")
        if not isinstance(spec, dict) or not spec or set(spec) - set(_RESOURCE_KEYS):
            raise ValueError(f"resources.{component}={spec!r}: give cpu and/or memory, "
                             "e.g. {cpu: 4, memory: 16G}.")
        cpu = spec.get("cpu")
        if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, (int, float))
                                or not 0 < cpu < math.inf):
            raise ValueError(f"resources.{component}.cpu={cpu!r}: must be a number > 0.")
        if "memory" in spec:
            memory_gb(spec["memory"])
