"""Compile-time preflight: what the backend would refuse, found before anything is sent.

Two checks, each modelled on the published source of the far side:

`check_spec` / `check_job`: the run-time parameter checks that Kubeflow Pipelines v2
applies between "create run" and the first task's container. In KFP these live in three
places, not in one "root driver" check:
  1. the API server refuses the run (`validatePipelineJobInputs`): a root parameter with no
     value, no default and not optional; a run value whose JSON kind is not the declared
     parameterType's; a value outside the declared `literals` (2.16+); a run value for a name
     the pipeline does not declare;
  2. the Argo compiler fills the missing root values: the default, else null when optional;
  3. the root-DAG driver stores those values as they are (root_dag.go: "TODO validate
     executorInput matches component spec types"); each task's driver then resolves
     `componentInputParameter` / `runtimeValue.constant` inputs and checks their JSON kind
     against the *component's* declared parameterType (`resolveInputs`), failing that task.
  Numbers travel as google.protobuf.Value doubles, so KFP accepts 2.5 for NUMBER_INTEGER;
  TFX's container entrypoint then truncates it with int(). This module refuses it instead.
  For Vertex AI (closed source) the same rules are applied to the PipelineJob's
  `runtimeConfig.parameterValues`, merged with submit-time values as google-cloud-aiplatform
  merges them.

`check_storage`: the URIs a compiled pipeline hands to tasks, against what can read and write
them: the KFP root driver and launcher (pipeline root: gs://, minio://, s3:// only), Vertex
(gs:// only), TF 2.16's tf.io.gfile in the task image (gs:// and local paths; no s3:// or
minio:// filesystem) and Beam's Dataflow runner (gs:// only).

Upstream sources followed (KFP 2.17.0; the same logic at 2.5.0, except literals, new in 2.16):
  API server: https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/apiserver/template/v2_template.go#L442-L532
    (2.5.0: https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/apiserver/template/v2_template.go#L358-L443)
  defaults: https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/v2/compiler/argocompiler/argo.go#L96-L106
    (2.5.0: https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/compiler/argocompiler/argo.go#L71-L82)
  root driver: https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/v2/driver/root_dag.go#L97-L135
    (2.5.0: https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/driver/driver.go#L139-L209)
  task driver: https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/v2/driver/resolve.go#L169-L256
    and #L323-L357, #L375-L425
    (2.5.0: https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/driver/driver.go#L1425-L1504
    and #L1553-L1620)
  literals: https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/common/util/validate_literal.go#L27-L47
  pipeline root: https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/v2/config/env.go#L118-L154
    https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/v2/objectstore/config.go#L118-L139
    https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/v2/component/launcher_v2.go#L1239-L1253
    (LocalPathForURI) and #L1280-L1307 (prepareOutputFolders: an unmappable output URI fails
    the task before the user's command runs)
  launcher defaults: https://github.com/kubeflow/pipelines/blob/2.17.0/backend/src/v2/component/launcher_v2.go#L1310-L1330
  TFX int(): https://github.com/tensorflow/tfx/blob/v1.16.0/tfx/orchestration/kubeflow/v2/container/kubeflow_v2_entrypoint_utils.py#L150-L157
  aiplatform merge: https://github.com/googleapis/python-aiplatform/blob/v1.165.1/google/cloud/aiplatform/utils/pipeline_utils.py#L121-L138
    and #L200-L203 (None dropped), #L239-L244 (unknown names refused)
  Vertex root: https://cloud.google.com/python/docs/reference/aiplatform/latest/google.cloud.aiplatform_v1.types.PipelineJob.RuntimeConfig
    (gcs_output_directory: "Required. A path in a Cloud Storage bucket")
  Beam: https://github.com/apache/beam/blob/v2.61.0/sdks/python/apache_beam/options/pipeline_options_validator.py#L124-L125
    and #L176-L196 (validate_gcs_path)
"""
from __future__ import annotations

import json
import math
import posixpath
import re
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from kubeflow import targets
from trainer_module import features

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

# parameterType -> (JSON kind of a structpb.Value, how the kind is named to users).
JSON_KINDS = {
    "STRING": ("string", "a JSON string"),
    "NUMBER_INTEGER": ("number", "a whole JSON number"),
    "NUMBER_DOUBLE": ("number", "a JSON number"),
    "BOOLEAN": ("bool", "true or false"),
    "LIST": ("list", "a JSON list"),
    "STRUCT": ("struct", "a JSON object"),
}
# Every kind a google.protobuf.Value can hold.
PB_KINDS = ("null", "bool", "number", "string", "list", "struct")
_TRUNCATED_BY_TFX = ("TFX's container entrypoint truncates NUMBER_INTEGER values with int() "
                     "(kubeflow_v2_entrypoint_utils.parse_execution_properties)")

# backend/src/v2/objectstore/config.go#L118 (2.17.0): what KFP parses as a bucket URI.
_BUCKET_URI = re.compile(r"(^[a-z][a-z0-9]+:///?)([^/?]+)(/[^?]*)?(\?.+)?\Z")
# The providers the root driver can open a session for (config/env.go#L130-L153); the
# launcher maps exactly these schemes (plus read-only oci://) to local paths.
KFP_PIPELINE_ROOT_SCHEMES = ("gs", "minio", "s3")
VERTEX_PIPELINE_ROOT_SCHEMES = ("gs",)
# apache_beam/options/pipeline_options_validator.py (2.61.0) GCS_URI / GCS_BUCKET.
_BEAM_GCS_URI = re.compile(r"(?P<SCHEME>[^:]+)://(?P<BUCKET>[^/]+)(/(?P<OBJECT>.*))?", re.DOTALL)
_BEAM_GCS_BUCKET = re.compile(r"[a-z0-9][-_a-z0-9.]+[a-z0-9]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


# ---- JSON values as structpb carries them ------------------------------------------------

def _kind(value: Any) -> str:
    """The google.protobuf.Value kind a JSON-decoded `value` becomes."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: True is an int in Python, a bool_value in pb
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "struct"
    return type(value).__name__


def _as_pb(value: Any) -> Any:
    """`value` as the driver holds it: every number a float, containers converted within."""
    kind = _kind(value)
    if kind == "number":
        return float(value)
    if kind == "list":
        return [_as_pb(v) for v in value]
    if kind == "struct":
        return {k: _as_pb(v) for k, v in value.items()}
    return value


def _pb_equal(a: Any, b: Any) -> bool:
    """proto.Equal on two structpb.Values: same kind and same value (3 == 3.0, True != 1)."""
    if _kind(a) != _kind(b):
        return False
    if _kind(a) == "list":
        return len(a) == len(b) and all(_pb_equal(x, y) for x, y in zip(a, b))
    if _kind(a) == "struct":
        return set(a) == set(b) and all(_pb_equal(a[k], b[k]) for k in a)
    return _as_pb(a) == _as_pb(b)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_error(value: Any, ptype: str) -> Optional[str]:
    """Why `value` is not of declared `ptype` in JSON terms, or None when it is.

    Stricter than KFP in one place on purpose: NUMBER_INTEGER needs a whole number (KFP
    takes any number; TFX then truncates it).
    """
    if ptype not in JSON_KINDS:
        return f"parameterType {ptype!r} cannot be checked (known: {', '.join(JSON_KINDS)})"
    kind = _kind(value)
    if kind not in PB_KINDS:
        return f"a Python {kind} is not JSON"
    if kind != JSON_KINDS[ptype][0]:
        return f"got a JSON {kind}"
    if kind == "number" and not math.isfinite(value):
        return "NaN and infinities are not JSON numbers"
    if ptype == "NUMBER_INTEGER" and float(value) != int(value):
        return "not a whole number"
    return None


# ---- step 1: the API server's validatePipelineJobInputs ----------------------------------

def _apiserver_message(name: str, ptype: str) -> str:
    """The API server's refusal for a run value of the wrong kind (v2_template.go#L477-L510)."""
    wanted = {"NUMBER_DOUBLE": "double or integer", "NUMBER_INTEGER": "double or integer",
              "STRING": "string", "BOOLEAN": "bool", "LIST": "list", "STRUCT": "struct"}
    if ptype in (None, "", "PARAMETER_TYPE_ENUM_UNSPECIFIED"):
        return f"input parameter {name} has unspecified type"
    if ptype == "TASK_FINAL_STATUS":
        return (f"input parameter {name} requires type TASK_FINAL_STATUS, which is invalid "
                "for root component")
    if ptype not in wanted:
        return f"input parameter {name} requires type unknown"
    return f"input parameter {name} requires type {wanted[ptype]}"


def _check_run_value(name: str, value: Any, decl: Mapping[str, Any], source: str) -> None:
    ptype = decl.get("parameterType")
    if ptype not in JSON_KINDS:
        raise ValueError(
            f"{source} {name}={_show(value)}: its parameterType {ptype!r} takes no run value "
            f"(run values: {', '.join(JSON_KINDS)}); the KFP API server refuses the run: "
            f"{_apiserver_message(name, ptype)}.")
    problem = _type_error(value, ptype)
    if problem and (_kind(value) not in PB_KINDS or _kind(value) == "number"
                    and not math.isfinite(value)):
        raise ValueError(f"{source} {name}={_show(value)}: expected {ptype} "
                         f"({JSON_KINDS[ptype][1]}), {problem}; the run cannot be sent as JSON.")
    if problem is None:
        # v2_template.go#L513 -> validate_literal.go#L37-L46
        _check_literal(f"{source} {name}", name, value, decl,
                       "the KFP API server refuses the run")
        return
    expected = JSON_KINDS[ptype][1]
    if _kind(value) == "number" and ptype == "NUMBER_INTEGER":
        # KFP accepts it (v2_template.go#L480-L484: any number_value); TFX truncates it.
        raise ValueError(
            f"{source} {name}={_show(value)}: expected NUMBER_INTEGER ({expected}), {problem}; "
            f"KFP accepts any number here and {_TRUNCATED_BY_TFX}, so the task would run "
            f"with {int(value)}.")
    raise ValueError(
        f"{source} {name}={_show(value)}: expected {ptype} ({expected}), {problem}; the KFP "
        f"API server refuses the run: {_apiserver_message(name, ptype)}.")


def _check_default(name: str, decl: Mapping[str, Any]) -> None:
    ptype = decl.get("parameterType")
    value = decl["defaultValue"]
    problem = _type_error(value, ptype)
    if problem:
        expected = JSON_KINDS.get(ptype, (None, "a checkable type"))[1]
        raise ValueError(
            f"default of root parameter {name}={_show(value)}: expected {ptype} ({expected}), "
            f"{problem}; KFP does not check defaults (argo.go copies them into the run "
            "unchecked), so the run starts and the first task that reads it fails or gets a "
            "wrong value.")


def _resolve_root(params: Mapping[str, Any], values: Mapping[str, Any],
                  source: str) -> Dict[str, Any]:
    for name, decl in params.items():
        if "defaultValue" in decl:
            _check_default(name, decl)
        if name in values:
            _check_run_value(name, values[name], decl, source)
        elif not decl.get("isOptional") and "defaultValue" not in decl:
            # v2_template.go#L469-L475
            raise ValueError(
                f"root parameter {name}: no run value and no default, and not isOptional; "
                f"expected {decl.get('parameterType')}; the KFP API server refuses the run: "
                f"parameter {name} is not optional, yet has neither default value nor user "
                "provided value.")
    extra = sorted(set(values) - set(params))
    if extra:
        # v2_template.go#L519-L529
        shown = ", ".join(f"{n}={_show(values[n])}" for n in extra)
        raise ValueError(
            f"{source} {shown}: not a parameter of this pipeline (it takes "
            f"{', '.join(sorted(params)) or 'none'}); the KFP API server refuses the run: "
            f"parameter(s) provided are not required by pipeline: {', '.join(extra)}.")
    # argo.go#L96-L106: the run's values, else the default, else null when optional.
    resolved = {}
    for name, decl in params.items():
        if name in values:
            resolved[name] = _as_pb(values[name])
        elif "defaultValue" in decl:
            resolved[name] = _as_pb(decl["defaultValue"])
        else:
            resolved[name] = None
    return resolved


# ---- step 3: each task's driver (resolveInputs) -----------------------------------------

def _driver_kind_message(name: str, value: Any, ptype: str) -> Optional[str]:
    """The task driver's error for `value` on an input declared `ptype`, or None.

    resolve.go#L202-L253: a STRING input takes any kind (non-strings become their JSON
    text); other types need the matching kind; null fails.
    """
    if ptype == "STRING":
        return None
    kind = _kind(value)
    if kind == "null":
        return f"got null for input parameter {json.dumps(name)}"
    allowed = {"number": ("NUMBER_DOUBLE", "NUMBER_INTEGER"), "string": ("STRING",),
               "bool": ("BOOLEAN",), "list": ("LIST",),
               "struct": ("STRUCT", "TASK_FINAL_STATUS", "TASK_CONFIG")}
    if ptype in allowed.get(kind, ()):
        return None
    return f"input parameter {json.dumps(name)} type mismatch: expect {ptype}, got {kind}"


def _check_constant(where: str, name: str, value: Any, decl: Mapping[str, Any]) -> None:
    ptype = decl.get("parameterType")
    problem = _type_error(value, ptype)
    if problem:
        expected = JSON_KINDS.get(ptype, (None, "a checkable type"))[1]
        driver = _driver_kind_message(name, value, ptype)
        if driver:
            upstream = f"the KFP driver fails the task: {driver}"
        elif ptype == "STRING":
            upstream = "the KFP driver would hand the task its JSON text instead"
        elif ptype == "NUMBER_INTEGER" and _kind(value) == "number" and math.isfinite(value):
            upstream = f"KFP passes it and {_TRUNCATED_BY_TFX}"
        else:
            upstream = "a PipelineSpec cannot carry it as JSON"
        raise ValueError(f"{where} input {name}: constant {_show(value)}: expected {ptype} "
                         f"({expected}), {problem}; {upstream}.")
    _check_task_literal(where, name, value, decl)


def _check_literal(label: str, name: str, value: Any, decl: Mapping[str, Any],
                   outcome: str) -> None:
    """A value outside the declared `literals` (2.16+): `label`=value, then `outcome`."""
    literals = decl.get("literals") or []
    if literals and not any(_pb_equal(value, lit) for lit in literals):
        raise ValueError(
            f"{label}={_show(value)}: must be one of {_show(literals)}; {outcome}: input "
            f"parameter {json.dumps(name)} value does not match any of the allowed literal "
            "values.")


def _check_task_literal(where: str, name: str, value: Any, decl: Mapping[str, Any]) -> None:
    # resolve.go#L349-L354
    _check_literal(f"{where} input {name}", name, value, decl, "the KFP driver fails the task")


def _check_dag(spec: Mapping[str, Any], dag: Mapping[str, Any], inputs: Mapping[str, Any],
               values: Optional[Mapping[str, Any]], path: str, seen: frozenset) -> None:
    """Checks each task of `dag` against its component; recurses into sub-DAG components.

    `inputs` are the parameters the DAG declares; `values` their resolved values (known for
    the root DAG only; None inside sub-DAGs, whose values exist only at run time).
    """
    components = spec.get("components", {})
    for task_name, task in sorted(dag.get("tasks", {}).items()):
        where = f"task {path}{task_name}"
        ref = task.get("componentRef", {}).get("name")
        if ref not in components:
            raise ValueError(f"{where}: componentRef {ref!r} is not in spec['components'] "
                             f"({', '.join(sorted(components)) or 'none'}); the spec is "
                             "inconsistent.")
        component = components[ref]
        declared = component.get("inputDefinitions", {}).get("parameters", {})
        given = task.get("inputs", {}).get("parameters", {})
        iterator_item = task.get("parameterIterator", {}).get("itemInput")
        for name, source in sorted(given.items()):
            decl = declared.get(name)
            if decl is None:
                # resolve.go#L170 leaves undeclared inputs unchecked; TFX would receive an
                # execution property its component spec does not know.
                raise ValueError(
                    f"{where} input {name}: not declared in components[{ref!r}]"
                    f".inputDefinitions.parameters ({', '.join(sorted(declared)) or 'none'}); "
                    "the KFP driver passes it on unchecked.")
            ptype = decl.get("parameterType")
            if ptype in ("TASK_CONFIG", "TASK_FINAL_STATUS"):
                continue  # resolve.go#L325-L330; final status exists only at run time
            if "componentInputParameter" in source:
                _check_input_reference(where, name, source["componentInputParameter"], decl,
                                       inputs, values)
            elif "runtimeValue" in source:
                runtime_value = source["runtimeValue"]
                if "constant" not in runtime_value:
                    raise ValueError(
                        f"{where} input {name}: runtimeValue without a constant "
                        f"({_show(runtime_value)}); the KFP driver fails the task: param "
                        "runtime value spec of this type not implemented.")
                _check_constant(where, name, runtime_value["constant"], decl)
            # taskOutputParameter, taskFinalStatus: produced at run time, nothing to check.
        for name, decl in sorted(declared.items()):
            if name in given or name == iterator_item or decl.get("isOptional") \
                    or "defaultValue" in decl:
                continue
            # resolve.go#L186-L193
            raise ValueError(
                f"{where} input {name}: not given, no default and not isOptional in "
                f"components[{ref!r}]; expected {decl.get('parameterType')}; the KFP driver "
                "fails the task: neither value nor default value provided for non-optional "
                f"parameter {json.dumps(name)}.")
        if "dag" in component and ref not in seen:
            _check_dag(spec, component["dag"], declared, None, f"{path}{task_name}/",
                       seen | {ref})


def _check_input_reference(where: str, name: str, parent_name: str,
                           decl: Mapping[str, Any], inputs: Mapping[str, Any],
                           values: Optional[Mapping[str, Any]]) -> None:
    ptype = decl.get("parameterType")
    if parent_name not in inputs:
        # resolve.go#L394-L397
        raise ValueError(
            f"{where} input {name}: componentInputParameter {parent_name!r} is not an input "
            f"of its DAG ({', '.join(sorted(inputs)) or 'none'}); the KFP driver fails the "
            f"task: parent DAG does not have input parameter {parent_name}.")
    parent_type = inputs[parent_name].get("parameterType")
    if parent_type != ptype:
        driver = ("the KFP driver would hand it over as JSON text" if ptype == "STRING"
                  else "the KFP driver fails the task when the kinds differ: input parameter "
                       f"{json.dumps(name)} type mismatch: expect {ptype}, got <kind>")
        raise ValueError(
            f"{where} input {name}: componentInputParameter {parent_name} is {parent_type} "
            f"but the component declares {ptype}; {driver}.")
    if values is None:
        return
    value = values[parent_name]
    if value is None:
        if decl.get("isOptional"):
            return  # resolve.go#L339-L344: skipped; the launcher applies component defaults
        # resolve.go#L399-L403 then #L346
        raise ValueError(
            f"{where} input {name}: root parameter {parent_name} resolves to null (optional, "
            f"no default, no run value) and the component's {name} is not optional; expected "
            f"{ptype}; the KFP driver fails the task: the resolved input parameter is null: "
            f"{parent_name}.")
    driver = _driver_kind_message(name, value, ptype)
    if driver:
        raise ValueError(f"{where} input {name}={_show(value)}: expected {ptype}; the KFP "
                         f"driver fails the task: {driver}.")
    _check_task_literal(where, name, value, decl)


# ---- public checks -----------------------------------------------------------------------

def check_spec(pipeline_spec: Mapping[str, Any],
               parameters: Optional[Mapping[str, Any]] = None,
               source: str = "run parameter") -> Dict[str, Any]:
    """What KFP checks between "create run" and the first task's container, done now.

    Args:
      pipeline_spec: a compiled PipelineSpec dict (the Kubeflow YAML, or a PipelineJob's
        `pipelineSpec`). Not modified.
      parameters: the run's values of root input parameters (JSON values), or None for none.
      source: how run values are named in errors (e.g. runtimeConfig.parameterValues).
    Returns:
      {root parameter: value} as the root-DAG driver holds them: run value, else default,
      else None (optional without default); every number a float.
    Raises:
      ValueError: one line naming the parameter (and task), the value, the expected type and
        what KFP would do: a root parameter with no value, no default and not optional; a
        run value or default of the wrong JSON kind (NUMBER_INTEGER: a whole number); an
        unknown run parameter; a value outside declared literals; a task input that names no
        parameter of its DAG, whose declared type differs from that parameter's, that
        resolves to null for a required input, or a constant of the wrong kind; a required
        component input the task does not give.
    """
    root = pipeline_spec.get("root", {})
    params = root.get("inputDefinitions", {}).get("parameters", {})
    values = dict(parameters or {})
    resolved = _resolve_root(params, values, source)
    _check_dag(pipeline_spec, root.get("dag", {}), params, resolved, "", frozenset())
    return resolved


def check_job(job: Mapping[str, Any], target: str,
              parameters: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """check_spec on a compiled package, plus its pipeline root, for `target`.

    Args:
      job: `compile_pipeline`'s PipelineJob dict, or for kubeflow a bare PipelineSpec.
      target: kubeflow or vertex.
      parameters: submit-time values. Vertex: merged over the job's
        `runtimeConfig.parameterValues` and None values dropped, as google-cloud-aiplatform's
        PipelineRuntimeConfigBuilder does (update_runtime_parameters / build).
    Returns:
      The resolved root parameter values (see check_spec).
    Raises:
      ValueError: as check_spec (for vertex, first for the file's own parameterValues), or a
        pipeline root the target cannot use (see check_pipeline_root).
    """
    targets.check_target(target)
    spec = job.get("pipelineSpec", job)
    if target == targets.KUBEFLOW:
        if spec.get("defaultPipelineRoot"):
            check_pipeline_root(spec["defaultPipelineRoot"], target)
        return check_spec(spec, parameters)
    runtime = job.get("runtimeConfig") or {}
    check_pipeline_root(runtime.get("gcsOutputDirectory") or "", target)
    stored = dict(runtime.get("parameterValues") or {})
    check_spec(spec, stored, source="runtimeConfig.parameterValues")
    merged = {k: v for k, v in {**stored, **dict(parameters or {})}.items() if v is not None}
    return check_spec(spec, merged)


def check_pipeline_root(uri: str, target: str) -> str:
    """Refuses a pipeline root the target's backend cannot store artifacts under.

    Kubeflow: `scheme://bucket[/path]` (objectstore/config.go#L118-L139) with a provider the
    root driver can open (config/env.go#L130-L153: gs, minio, s3); the launcher maps the same
    schemes to local paths and fails any task whose outputs have another
    (launcher_v2.go#L1239-L1253, prepareOutputFolders #L1293-L1298). Vertex: a Cloud Storage
    path (RuntimeConfig.gcs_output_directory).

    Returns:
      `uri`.
    Raises:
      ValueError: naming the URI and the allowed schemes.
    """
    targets.check_target(target)
    schemes = KFP_PIPELINE_ROOT_SCHEMES if target == targets.KUBEFLOW \
        else VERTEX_PIPELINE_ROOT_SCHEMES
    allowed = ", ".join(f"{s}://bucket/path" for s in schemes)
    match = _BUCKET_URI.match(uri or "")
    if match is None:
        raise ValueError(
            f"pipeline root {uri!r}: not a bucket URI; {target} needs {allowed}"
            + ("; the KFP root driver fails the run: parse bucket config failed: unrecognized "
               "pipeline root format." if target == targets.KUBEFLOW else "."))
    scheme = match.group(1).split(":", 1)[0]
    if scheme not in schemes:
        upstream = ("the KFP root driver fails the run (Encountered unsupported provider in "
                    "provider config), and the launcher cannot map it to a local path "
                    "(unsupported storage scheme)" if target == targets.KUBEFLOW
                    else "Vertex AI writes artifacts only to Cloud Storage")
        raise ValueError(f"pipeline root {uri!r}: {scheme}:// is not allowed on {target}; use "
                         f"{allowed}; {upstream}.")
    return uri


def check_task_path(field: str, path: str, what: str = "the file") -> str:
    """Refuses a path a task reads with tf.io.gfile that the task image cannot read.

    Allowed: gs://bucket/... (TF 2.16 has GCS built in) or an absolute local path (inside
    the image or a volume mounted into the task). Refused: s3://, minio:// (the image's TF
    has no such filesystem, and the KFP launcher downloads only input artifacts, not
    paths), http(s)://, other schemes, and relative paths (they resolve against the
    container's working directory).

    Returns:
      `path`.
    Raises:
      ValueError: naming the field, the path and where to copy `what` instead.
    """
    fix = f"copy {what} to gs://bucket/... or into a volume mounted in the task (an absolute path)"
    scheme = _SCHEME.match(path or "")
    if scheme is None:
        if not posixpath.isabs(path or ""):
            raise ValueError(f"{field}={path!r}: a relative path resolves against the task "
                             f"container's working directory; {fix}.")
        return path
    name = scheme.group(1).lower()
    if name == "gs":
        if _BUCKET_URI.match(path) is None:
            raise ValueError(f"{field}={path!r}: not a gs://bucket/path URI; {fix}.")
        return path
    if name in ("s3", "minio"):
        why = (f"the task image's tf.io.gfile (TF 2.16, no tensorflow-io) has no {name}:// "
               "filesystem, and the KFP launcher fetches only artifacts, not paths")
    elif name in ("http", "https"):
        why = "tf.io.gfile cannot read http(s) URLs"
    elif name == "file":
        why = "give the absolute path without file://"
    else:
        why = f"tf.io.gfile in the task image has no {name}:// filesystem"
    raise ValueError(f"{field}={path!r}: {why}; {fix}.")


def _check_beam_gcs_path(field: str, path: Optional[str]) -> None:
    """Beam's validate_gcs_path (pipeline_options_validator.py, 2.61.0: L176-L196)."""
    match = _BEAM_GCS_URI.match(path or "")
    if not path or match is None or match.group("SCHEME").lower() != "gs" \
            or not _BEAM_GCS_BUCKET.fullmatch(match.group("BUCKET")) \
            or match.group("OBJECT") is None:
        raise ValueError(f"{field}={path!r}: beam_runner=dataflow needs gs://bucket/path; "
                         "Beam's Dataflow runner refuses other temp locations.")


def check_storage(config: "PipelineConfig", target: str) -> None:
    """Refuses, at compile time, storage a task of `target` could not read or write.

    - pipeline root (`features.pipeline_root(config.workdir)`): see check_pipeline_root;
    - with beam_runner=dataflow: pipeline root and data root gs:// (Dataflow workers read
      and write them with Beam's filesystems and cannot see the pod's files) and
      dataflow_temp_location gs://bucket/path;
    - data_root, schema_path, weights (unless none/imagenet) and a file-prefix `cache`: read
      or written by a task with tf.io.gfile, see check_task_path.

    Raises:
      ValueError: one line naming the setting, its value and what is allowed.
    """
    targets.check_target(target)
    check_pipeline_root(features.pipeline_root(config.workdir), target)
    if config.cluster.beam_runner == "dataflow":
        for field, value in (("pipeline root", features.pipeline_root(config.workdir)),
                             ("data_root", config.data_root)):
            if not (value or "").startswith("gs://"):
                raise ValueError(f"{field}={value!r}: beam_runner=dataflow needs gs:// (Dataflow "
                                 "workers cannot see the task pod's files or minio/s3 "
                                 "buckets through tf.io.gfile); copy it to gs://.")
        _check_beam_gcs_path("dataflow_temp_location", config.cluster.dataflow_temp_location)
    check_task_path("data_root", config.data_root, "the images")
    if config.validation.schema_path:
        check_task_path("schema_path", config.validation.schema_path, "the schema file")
    if config.training.weights and config.training.weights not in ("none", "imagenet"):
        check_task_path("weights", config.training.weights, "the weights file")
    if config.training.cache not in ("auto", "none", "memory"):
        check_task_path("cache", config.training.cache, "the cache prefix")
