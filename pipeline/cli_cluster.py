"""`imgpipe compile | submit | schedule`: the pipeline on Kubeflow Pipelines or Vertex AI.

Each prints one line; the config (when one is needed) is built once, with --pipeline-root
as its work root.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional

from pipeline import cli_common
from pipeline.cli_common import OK, Job, Verb


def remote_config(args):
    """The config a compiled pipeline is built from: --pipeline-root is its work root."""
    from pipeline.config import load_config  # pylint: disable=g-import-not-at-top
    overrides = cli_common.parse_sets(args.set)
    for key in ("image", "data_root", "epochs"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if args.pipeline_root:
        overrides["workdir"] = args.pipeline_root.rstrip("/")
    return load_config(args.config, overrides)


def _quiet_google_libraries() -> None:
    """The cluster commands print one line. The Google Cloud client libraries warn at import
    about Python 3.10 and grpcio versions, and TensorFlow's C++ start-up logs CUDA and CPU
    lines: a dozen lines about the stack, not the user's command (TF_CPP_MIN_LOG_LEVEL set
    by the user wins)."""
    import warnings  # pylint: disable=g-import-not-at-top
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google(\.|$)")


def _compile(args, config, output: str, say) -> str:
    from kubeflow import compiler  # pylint: disable=g-import-not-at-top
    if not args.pipeline_root and "://" not in config.workdir:
        raise ValueError("--pipeline-root is required: a gs:// (Vertex) or gs://, minio:// "
                         "or s3:// (Kubeflow) folder every task can write.")
    compiler.compile_pipeline(config, args.target, output)
    say(f"imgpipe: compiled for {args.target}: {output} (image {config.cluster.image}; "
        f"run-time parameters data_root={config.data_root}, epochs={config.training.epochs})")
    return output


def compile_(job: Job) -> int:
    _quiet_google_libraries()
    _compile(job.args, remote_config(job.args), job.args.output, job.say)
    return OK


def _submit(job: Job, schedule: bool) -> int:
    _quiet_google_libraries()
    from kubeflow import client  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    args = job.args
    vertex_account: Optional[str] = args.service_account
    # The config: to compile a package now, and on Vertex for the service account the
    # compiled training job runs as (when --config or --set may have set one).
    needs_config = not args.package or (
        args.target == "vertex" and vertex_account is None and bool(args.config or args.set))
    config = remote_config(args) if needs_config else None
    package = args.package or _compile(args, config, os.path.join(
        tempfile.mkdtemp(prefix="imgpipe-"),
        "pipeline." + ("yaml" if args.target == "kubeflow" else "json")), job.say)
    params = {k: v for k, v in (("data_root", args.data_root), ("epochs", args.epochs))
              if v is not None}
    if args.target == "kubeflow":
        if not args.host:
            raise ValueError("--target kubeflow needs --host URL (the KFP API endpoint).")
        common = dict(parameters=params, experiment=args.experiment, namespace=args.namespace)
        if schedule:
            ident = client.schedule_kubeflow(package, args.host, cron=args.cron, name=args.name,
                                             timezone=args.timezone, **common)
        else:
            ident = client.submit_kubeflow(package, args.host, run_name=args.name, **common)
    else:
        if vertex_account is None and config is not None:
            vertex_account = config.cluster.service_account
        common = dict(project=args.project, region=args.region, parameters=params,
                      service_account=vertex_account)
        if schedule:
            ident = client.schedule_vertex(package, cron=args.cron, name=args.name,
                                           timezone=args.timezone, **common)
        else:
            ident = client.submit_vertex(package, display_name=args.name, **common)
    job.say(f"imgpipe: {args.target} {'schedule' if schedule else 'run'} created: {ident}")
    return OK


def submit(job: Job) -> int:
    return _submit(job, schedule=False)


def schedule(job: Job) -> int:
    return _submit(job, schedule=True)


def _add_remote_flags(parser: argparse.ArgumentParser, submit_: bool) -> None:
    parser.add_argument("--target", required=True, choices=("kubeflow", "vertex"))
    parser.add_argument("--config", help="YAML file of PipelineConfig fields")
    parser.add_argument("--image", help="container image built from kubeflow/Dockerfile")
    parser.add_argument("--data-root", help="image folder or CSV manifest URI "
                        "(a run-time parameter: the default, or this run's value)")
    parser.add_argument("--pipeline-root", help="gs:// (or minio://, s3://) work root: "
                        "artifacts under URI/pipeline_root, pushed models under URI/serving")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    if not submit_:
        return
    parser.add_argument("--package", help="a file from imgpipe compile (else compiled now)")
    parser.add_argument("--epochs", type=int, help="run-time parameter for this run")
    parser.add_argument("--host", help="Kubeflow: KFP API URL")
    parser.add_argument("--namespace", help="Kubeflow: namespace of a multi-user deployment")
    parser.add_argument("--experiment", default="imgpipe", help="Kubeflow: experiment name")
    parser.add_argument("--project", help="Vertex: Google Cloud project")
    parser.add_argument("--region", help="Vertex: region, e.g. us-central1")
    parser.add_argument("--service-account", help="Vertex: service account the run uses "
                        "(default: the config's service_account)")


def register(sub) -> None:
    """Adds compile, submit and schedule to the `imgpipe` subparsers."""
    p = sub.add_parser("compile", help="compile for Kubeflow Pipelines or Vertex AI")
    _add_remote_flags(p, submit_=False)
    p.add_argument("--output", required=True,
                   help="pipeline.yaml (kubeflow) or pipeline.json (vertex)")
    p.set_defaults(verb=Verb(compile_))

    p = sub.add_parser("submit", help="start a run on Kubeflow Pipelines or Vertex AI")
    _add_remote_flags(p, submit_=True)
    p.add_argument("--name", help="run name")
    p.set_defaults(verb=Verb(submit))

    p = sub.add_parser("schedule", help="create a recurring run (cron)")
    _add_remote_flags(p, submit_=True)
    p.add_argument("--cron", required=True,
                   help='5-field cron, e.g. "0 3 * * *" (converted per target)')
    p.add_argument("--timezone", help="IANA zone, e.g. Europe/Berlin (Vertex only)")
    p.add_argument("--name", required=True, help="schedule name")
    p.set_defaults(verb=Verb(schedule))
