"""Everything that differs between Kubeflow Pipelines and Vertex AI, in one place.

TFX 1.16 compiles for both through `KubeflowV2DagRunner`, and its output does not run
unchanged on either. This module holds the per-target facts and the post-compile step
`finalize()`, which the compiler applies to the compiled PipelineJob dict:

| what | kubeflow (self-hosted KFP >= 2.0.5) | vertex (Vertex AI Pipelines) |
|---|---|---|
| file | bare PipelineSpec, YAML, schema 2.1.0 | PipelineJob JSON, schema 2.1.0 |
| baseline for the change threshold | none: the KFP backend cannot run Resolver nodes, so the pipeline is built without one and blesses on `min_accuracy` alone | LatestBlessedModelStrategy Resolver |
| runtime parameter defaults | written into `root.inputDefinitions` (the YAML drops TFX's runtimeConfig, and KFP refuses a run that omits a parameter without a default) | the same, plus `runtimeConfig.parameterValues` |
| accelerator | `nvidia.com/gpu` (the K8s resource name; no TPUs) | the name as given (`NVIDIA_TESLA_T4`, `TPU_V3`, ...) |
| cron | 6 fields, seconds first, UTC | 5 fields, optional `TZ=` prefix |
| pipeline root | `defaultPipelineRoot` in the spec, which the backend ignores: `imgpipe submit`/`schedule` send it as the run's `runtime_config.pipeline_root` | `runtimeConfig.gcsOutputDirectory` |

On both:
- every task runs `python -m kubeflow.entrypoint` in the project's image (never the stock
  TFX image), and each task's args gain `--artifact_types`, the TFX type of each input and
  output key taken from the same spec's component definitions; the entrypoint uses it to
  repair the types the KFP launcher hands over (see entrypoint.py).
- the ingest task never comes from the cache. TFX's custom drivers do not run under the V2
  compiler, so the data-root fingerprint that keeps local caching honest is missing there;
  with caching on, a changed image folder under an unchanged URI would be served from the
  cache. Turning caching off for ImageExampleGen means every run re-ingests, and, since
  its output is a new artifact, every later task runs again too. That is the price of never
  training on stale data; `enable_cache` still governs the other tasks' settings.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

import yaml

KUBEFLOW, VERTEX = "kubeflow", "vertex"
TARGETS = (KUBEFLOW, VERTEX)
SCHEMA_VERSION = "2.1.0"
ENTRYPOINT = ["python", "-m", "kubeflow.entrypoint"]
IMAGE_PROJECT_DIR = "/opt/imgpipe"  # where kubeflow/Dockerfile puts the project
INGEST_TASK = "ImageExampleGen"
TRAINER_TASK = "Trainer"
# The run-time parameters of the compiled pipeline, named as their PipelineConfig fields.
RUNTIME_PARAMETERS = ("data_root", "epochs")
ARTIFACT_TYPES_FLAG = "--artifact_types"
TARGET_FLAG = "--target"  # tells the entrypoint which launcher hands it the task

_NAME = re.compile(r"[a-z][a-z0-9-]{0,127}")
_KFP_GPU = "nvidia.com/gpu"


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target={target!r}: must be one of {', '.join(TARGETS)}.")
    return target


def supports_resolver(target: str) -> bool:
    """Whether the target's backend runs TFX Resolver nodes (the blessed-model baseline)."""
    return check_target(target) == VERTEX


def check_pipeline_name(name: str) -> str:
    """Both backends take lowercase letters, digits and '-', starting with a letter."""
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"pipeline_name={name!r}: Kubeflow and Vertex need 1-128 lowercase "
                         "letters, digits or '-', starting with a letter (e.g. imgpipe-flowers).")
    return name


def accelerator(target: str, name: str) -> str:
    """The target's accelerator type for a Vertex-style name such as NVIDIA_TESLA_T4.

    Raises:
      ValueError: a malformed name, or a TPU on Kubeflow.
    """
    check_target(target)
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name or ""):
        raise ValueError(f"trainer_accelerator={name!r}: give a Vertex-style name such as "
                         "NVIDIA_TESLA_T4, NVIDIA_L4, NVIDIA_TESLA_A100 or TPU_V3.")
    if target == VERTEX:
        return name
    if name.startswith("NVIDIA_"):
        # KFP requests GPUs by Kubernetes resource name; the GPU model is chosen by the
        # cluster's node pools, not by this field.
        return _KFP_GPU
    raise ValueError(f"trainer_accelerator={name!r}: on Kubeflow only NVIDIA GPUs "
                     f"({_KFP_GPU}) can be requested; use --target vertex for TPUs.")


# ---- cron: one syntax for the user, converted per target -------------------------------

_CRON_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None),
                ("day of month", 1, 31, None),
                ("month", 1, 12, "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC"),
                ("day of week", 0, 7, "SUN MON TUE WED THU FRI SAT"))


def _cron_value(text: str, low: int, high: int, names: Optional[str]) -> int:
    if names and text.upper() in names.split():
        return names.split().index(text.upper()) + low
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError
    return int(text)


def parse_cron(expression: str) -> tuple:
    """Checks a standard 5-field cron (minute hour day-of-month month day-of-week).

    Each field takes `*`, numbers, names (JAN, MON), ranges `a-b`, steps `*/n` or `a-b/n`
    and comma lists. Day of week is 0-7, both 0 and 7 meaning Sunday, as in Vixie cron;
    `cron()` refuses 7 for Kubeflow.

    Returns:
      (fields, timezone): the five fields, and the IANA zone of a leading `TZ=`/`CRON_TZ=`
      (None without one).
    Raises:
      ValueError: naming the bad field.
    """
    parts = (expression or "").split()
    timezone = None
    if parts and re.match(r"(CRON_)?TZ=", parts[0]):
        timezone = parts.pop(0).split("=", 1)[1]
        if not re.fullmatch(r"[A-Za-z_+\-0-9]+(/[A-Za-z_+\-0-9]+)*", timezone):
            raise ValueError(f"cron {expression!r}: bad time zone {timezone!r}.")
    if len(parts) != 5:
        raise ValueError(f"cron {expression!r}: give 5 fields (minute hour day-of-month month "
                         "day-of-week), e.g. '0 3 * * *' for 03:00 every day.")
    for text, (field, low, high, names) in zip(parts, _CRON_FIELDS):
        for item in text.split(","):
            base, _, step = item.partition("/")
            try:
                if step and (not step.isdigit() or int(step) < 1):
                    raise ValueError
                if base != "*":
                    bounds = [_cron_value(b, low, high, names) for b in base.split("-")]
                    if len(bounds) > 2 or bounds != sorted(bounds):
                        raise ValueError
            except ValueError:
                raise ValueError(f"cron {expression!r}: {field} field {text!r} is not valid "
                                 f"(allowed {low}-{high}, *, a-b, */n, lists).") from None
    return tuple(parts), timezone


def cron(target: str, expression: str, timezone: Optional[str] = None) -> str:
    """The user's 5-field cron (optionally `TZ=Zone ...` or `timezone`) in the target's syntax.

    Day of week 7 (Sunday) is refused for Kubeflow rather than rewritten to 0: KFP's parser
    takes 0-6 only, and rewriting ranges and steps that end at 7 (`5-7`, `1-7/2`) would
    change what the user wrote. Vertex gets the fields unchanged, 7 included.

    Raises:
      ValueError: a malformed cron; on Kubeflow also day of week 7 or a time zone other
        than UTC.
    """
    check_target(target)
    fields, zone = parse_cron(expression)
    if timezone and zone and timezone != zone:
        raise ValueError(f"cron {expression!r} names TZ={zone} but --timezone is {timezone}.")
    zone = timezone or zone
    if zone:
        parse_cron(f"TZ={zone} {' '.join(fields)}")  # same check on a flag's zone
    if target == KUBEFLOW:
        # KFP's API server and ScheduledWorkflow controller parse the cron with robfig/cron
        # v1.2.0, whose day-of-week bounds are 0-6 (a 7 fails the run's creation):
        # https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/apiserver/server/api_converter.go#L1922-L1926
        # https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go#L84
        # https://github.com/robfig/cron/blob/v1.2.0/spec.go#L37
        _, low, high, names = _CRON_FIELDS[4]
        if any(7 in [_cron_value(b, low, high, names) for b in base.split("-")]
               for base in (item.partition("/")[0] for item in fields[4].split(","))
               if base != "*"):
            raise ValueError(f"cron {expression!r}: day of week field {fields[4]!r} is not "
                             "valid on Kubeflow (allowed 0-6 or SUN-SAT; write 0 or SUN "
                             "for Sunday, not 7).")
        if zone and zone.upper() not in ("UTC", "ETC/UTC"):
            raise ValueError(f"time zone {zone}: Kubeflow schedules run in UTC; convert the "
                             "hours to UTC.")
        return "0 " + " ".join(fields)
    return (f"TZ={zone} " if zone else "") + " ".join(fields)


# ---- post-compile ------------------------------------------------------------------------

def _title(artifact_spec: dict) -> str:
    kind = artifact_spec.get("artifactType", {})
    if "schemaTitle" in kind:
        return kind["schemaTitle"]
    return (yaml.safe_load(kind.get("instanceSchema") or "") or {}).get("title", "")


def artifact_types(component: dict,
                   class_paths: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """{input or output key: TFX type} from one compiled component definition.

    First-party types stay titles (tfx.Examples); a custom type's title (its TYPE_NAME,
    which KFP limits to one dot) is replaced by its import path from `class_paths`.
    """
    out = {}
    for section in ("inputDefinitions", "outputDefinitions"):
        for key, spec in component.get(section, {}).get("artifacts", {}).items():
            title = _title(spec)
            out[key] = (class_paths or {}).get(title, title)
    return out


def finalize(job: Dict[str, Any], target: str, *, parameter_defaults: Dict[str, Any],
             pipeline_root: str,
             class_paths: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Applies the target's differences to a compiled PipelineJob dict, in place.

    Args:
      job: `KubeflowV2DagRunner.run(..., write_out=False)`'s dict.
      target: kubeflow or vertex.
      parameter_defaults: default of every run-time parameter.
      pipeline_root: where artifacts go (gs://, minio://, s3://).
      class_paths: {TYPE_NAME: import path} of the pipeline's custom artifact types.
    Returns:
      `job` (for kubeflow, callers write only `job["pipelineSpec"]`).
    Raises:
      RuntimeError: the compiled spec breaks an invariant this module relies on.
    """
    check_target(target)
    spec = job["pipelineSpec"]
    spec["schemaVersion"] = SCHEMA_VERSION
    params = spec["root"].setdefault("inputDefinitions", {}).setdefault("parameters", {})
    missing = set(params) - set(parameter_defaults)
    if missing:
        raise RuntimeError(f"runtime parameter(s) without a default: {sorted(missing)}")
    for name, spec_param in params.items():
        spec_param["defaultValue"] = parameter_defaults[name]
        spec_param["isOptional"] = True

    tasks = spec["root"]["dag"]["tasks"]
    tasks[INGEST_TASK]["cachingOptions"] = {"enableCache": False}
    executors = spec["deploymentSpec"]["executors"]
    for name, component in spec["components"].items():
        executor = executors[component["executorLabel"]]
        if "resolver" in executor and target == KUBEFLOW:
            raise RuntimeError(f"{name} is a resolver task; the KFP backend cannot run it.")
        container = executor.get("container")
        if container is None:
            continue
        if container.get("command") != ENTRYPOINT:
            raise RuntimeError(f"{name} does not run {' '.join(ENTRYPOINT)}.")
        container["args"] = [*container.get("args", []), ARTIFACT_TYPES_FLAG,
                             json.dumps(artifact_types(component, class_paths),
                                        sort_keys=True), TARGET_FLAG, target]

    if target == KUBEFLOW:
        spec["defaultPipelineRoot"] = pipeline_root
        job.pop("runtimeConfig", None)
    else:
        job["runtimeConfig"] = {"gcsOutputDirectory": pipeline_root,
                                "parameterValues": dict(parameter_defaults)}
    return job
