"""Submit and schedule compiled pipelines: `kfp.Client` for Kubeflow, `PipelineJob` for Vertex.

Credentials come only from the environment: the KFP client's own discovery (kube config,
`KF_PIPELINES_*` variables, in-cluster service account) and Google's Application Default
Credentials. Nothing here writes a credential anywhere.

Caching: runs are created with `enable_caching=None` so that the compiled per-task settings
hold (the ingest task is never cached; see targets.py). Passing True would switch caching
back on for the ingest task and let a changed folder come from the cache.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from kubeflow import preflight, targets


def _load(package: str, target: str) -> Dict[str, Any]:
    """Reads a compiled package and checks it was compiled for `target`."""
    import yaml  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(package):
        raise ValueError(f"pipeline package {package!r}: no such file; run imgpipe compile.")
    with open(package, encoding="utf-8") as f:
        text = f.read()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"pipeline package {package!r} is neither YAML nor JSON.") from err
    is_job = isinstance(doc, dict) and "pipelineSpec" in doc
    is_spec = isinstance(doc, dict) and "deploymentSpec" in doc
    if target == targets.KUBEFLOW and not is_spec:
        raise ValueError(f"{package!r} is not a Kubeflow PipelineSpec; compile it with "
                         "--target kubeflow (a .yaml file).")
    if target == targets.VERTEX and not is_job:
        raise ValueError(f"{package!r} is not a Vertex PipelineJob; compile it with "
                         "--target vertex (a .json file).")
    return doc


def check_parameters(doc: Dict[str, Any], parameters: Dict[str, Any]) -> Dict[str, Any]:
    """Checks run parameters against the package's declared ones; converts their types.

    A run's `data_root` follows the compile-time storage rule (preflight.check_task_path):
    an s3:// or minio:// folder would fail the ingest task in the cluster instead of here.
    """
    spec = doc.get("pipelineSpec", doc)
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {', '.join(unknown)}; the package "
                         f"takes {', '.join(sorted(declared))}.")
    out = {}
    for name, value in parameters.items():
        kind = declared[name].get("parameterType")
        try:
            out[name] = int(value) if kind == "NUMBER_INTEGER" else (
                float(value) if kind == "NUMBER_DOUBLE" else str(value))
        except (TypeError, ValueError) as err:
            raise ValueError(f"parameter {name}={value!r}: must be "
                             f"{'an integer' if kind == 'NUMBER_INTEGER' else 'a number'}.") \
                from err
    if "data_root" in out:
        preflight.check_task_path("data_root", out["data_root"], "the images")
    return out


def _kfp_client(host: str, namespace: Optional[str]):
    import kfp  # pylint: disable=g-import-not-at-top
    if not host or "://" not in host:
        raise ValueError(f"--host {host!r}: give the KFP API URL, e.g. http://localhost:8080 "
                         "(kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80).")
    kwargs = {"namespace": namespace} if namespace else {}
    return kfp.Client(host=host, **kwargs)


def _kfp_call(host: str, call):
    """Runs a kfp.Client call; unreachable hosts and API errors become one-line errors."""
    import kfp_server_api  # pylint: disable=g-import-not-at-top
    import urllib3  # pylint: disable=g-import-not-at-top
    try:
        return call()
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as err:
        raise RuntimeError(f"cannot reach Kubeflow Pipelines at {host}: "
                           f"{type(err).__name__}") from err
    except kfp_server_api.ApiException as err:
        body = " ".join(str(err.body or "").split())[:300]
        raise RuntimeError(f"Kubeflow Pipelines at {host} refused the request: "
                           f"HTTP {err.status} {err.reason} {body}".rstrip()) from err


def kubeflow_pipeline_root(doc: Dict[str, Any], pipeline_root: Optional[str] = None) -> str:
    """The root a Kubeflow run must be sent with: `pipeline_root`, else the package's own.

    The KFP backend never reads the spec's `defaultPipelineRoot`: the root driver takes the
    run's `runtime_config.pipeline_root`, else the kfp-launcher ConfigMap's
    `defaultPipelineRoot`, else minio://mlpipeline/v2/artifacts. A run sent without it would
    write its artifacts outside the workdir the package was compiled for.

    Raises:
      ValueError: neither `pipeline_root` nor a `defaultPipelineRoot` in the package.
    """
    # Upstream (KFP 2.5.0; the same in 2.0.5 and 2.17.0's root_dag.go):
    # https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/apiserver/template/template.go#L164
    #   (the run's pipeline_root becomes the job's gcsOutputDirectory; nothing reads the spec),
    # https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/driver/driver.go#L152-L171
    #   (root DAG: gcsOutputDirectory, else the launcher ConfigMap's default),
    # https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/config/env.go#L37
    #   (that default: minio://mlpipeline/v2/artifacts).
    root = pipeline_root or doc.get("defaultPipelineRoot")
    if not root:
        raise ValueError("pipeline_root=None and the package has no defaultPipelineRoot: "
                         "recompile it with imgpipe compile --pipeline-root URI.")
    return root


def submit_kubeflow(package: str, host: str, *, parameters: Dict[str, Any],
                    run_name: Optional[str] = None, experiment: str = "imgpipe",
                    namespace: Optional[str] = None,
                    pipeline_root: Optional[str] = None) -> str:
    """Starts one run of a compiled Kubeflow package; returns the run id.

    The run is sent with `runtime_config.pipeline_root` = `pipeline_root`, else the
    package's `defaultPipelineRoot` (see kubeflow_pipeline_root).
    """
    doc = _load(package, targets.KUBEFLOW)
    params = check_parameters(doc, parameters)
    root = kubeflow_pipeline_root(doc, pipeline_root)
    result = _kfp_call(host, lambda: _kfp_client(host, namespace)
                       .create_run_from_pipeline_package(
                           package, arguments=params, run_name=run_name,
                           experiment_name=experiment, namespace=namespace,
                           pipeline_root=root, enable_caching=None))
    return result.run_id


def schedule_kubeflow(package: str, host: str, *, cron: str, name: str,
                      parameters: Dict[str, Any], timezone: Optional[str] = None,
                      experiment: str = "imgpipe", namespace: Optional[str] = None,
                      pipeline_root: Optional[str] = None) -> str:
    """Creates a recurring run (cron converted to KFP's 6 fields); returns its id.

    Each run gets `runtime_config.pipeline_root` as in submit_kubeflow.
    """
    kfp_cron = targets.cron(targets.KUBEFLOW, cron, timezone)
    doc = _load(package, targets.KUBEFLOW)
    params = check_parameters(doc, parameters)
    root = kubeflow_pipeline_root(doc, pipeline_root)

    def call():
        client = _kfp_client(host, namespace)
        experiment_id = client.create_experiment(name=experiment,
                                                 namespace=namespace).experiment_id
        return client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=kfp_cron,
            params=params, pipeline_package_path=package, pipeline_root=root,
            enable_caching=None, no_catchup=True, max_concurrency=1)
    return _kfp_call(host, call).recurring_run_id


def vertex_job(package: str, *, project: str, region: str, parameters: Dict[str, Any],
               display_name: Optional[str] = None, pipeline_root: Optional[str] = None,
               credentials=None):
    """The `aiplatform.PipelineJob` for a compiled Vertex package (nothing is sent).

    The job carries the package's `labels` (TFX's tfx_version, tfx_runner, ...), and its
    root is `pipeline_root`, else the package's `runtimeConfig.gcsOutputDirectory`.
    `credentials` None means Application Default Credentials.
    """
    from google.cloud import aiplatform  # pylint: disable=g-import-not-at-top
    if not project or not region:
        raise ValueError("Vertex needs --project and --region.")
    doc = _load(package, targets.VERTEX)
    params = check_parameters(doc, parameters)
    # PipelineJob.__init__ reads the template's spec and runtimeConfig but takes labels only
    # as its argument (google-cloud-aiplatform 1.165.1; clone() is what reads the template's):
    # https://github.com/googleapis/python-aiplatform/blob/v1.165.1/google/cloud/aiplatform/pipeline_jobs.py#L286-L292
    return aiplatform.PipelineJob(
        display_name=display_name or doc.get("displayName") or "imgpipe",
        template_path=package, parameter_values=params, pipeline_root=pipeline_root,
        labels=dict(doc.get("labels") or {}) or None,
        enable_caching=None, project=project, location=region, credentials=credentials)


def submit_vertex(package: str, **kwargs) -> str:
    """Submits a Vertex pipeline run; returns the job's resource name."""
    service_account = kwargs.pop("service_account", None)
    job = vertex_job(package, **kwargs)
    job.submit(service_account=service_account)
    return job.resource_name


def schedule_vertex(package: str, *, cron: str, name: str, timezone: Optional[str] = None,
                    **kwargs) -> str:
    """Creates a Vertex pipeline schedule (5-field cron, optional TZ=); returns its name."""
    vertex_cron = targets.cron(targets.VERTEX, cron, timezone)
    service_account = kwargs.pop("service_account", None)
    schedule = vertex_job(package, **kwargs).create_schedule(
        cron=vertex_cron, display_name=name, max_concurrent_run_count=1,
        service_account=service_account)
    return schedule.resource_name

