"""Container entrypoint of every compiled task: `python -m kubeflow.entrypoint ARGS`.

Takes the arguments of TFX's `kubeflow_v2_run_executor` (plus `--artifact_types`, added by
targets.finalize), repairs what the KFP v2 launcher hands over, then delegates to TFX:

1. Outputs the spec does not declare. Since KFP 2.5.0 the driver adds an output
   `executor-logs` (type system.Artifact) to every task while log publishing is on, the
   default (driver.go `provisionOutputs`,
   https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/driver/driver.go#L2024-L2036);
   the launcher writes the task's stdout into it and uploads it itself. Any artifact key that
   the compiled component does not declare is left to the launcher and never reaches TFX,
   which could not type it.
2. Artifact types. On open-source KFP the launcher passes input artifacts with an empty
   instance schema (metadata/client.go `GetOutputArtifactsByExecutionId` records `Schema: ""`,
   https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/metadata/client.go) or
   typed `system.Artifact`; TFX then cannot find the artifact class (tensorflow/tfx#7768).
   An artifact whose type does not name an importable TFX class gets the type the compiled
   spec declares for its key.
3. Storage URIs. On Kubeflow the launcher downloads every input artifact to its local copy
   before the command and uploads every declared output from its local copy afterwards
   (launcher_v2.go `LocalPathForURI`: gs:// -> /gcs/, minio:// -> /minio/, s3:// -> /s3/,
   https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/component/launcher_v2.go#L882-L896),
   and nothing else of the pod survives it. So on Kubeflow every artifact URI of those
   schemes is replaced by its local copy (gs:// too; except for a Beam component that runs
   on Dataflow, whose workers cannot see the pod's disk and write gs:// directly). On Vertex
   only minio:// and s3:// would need it (tf.io.gfile has no filesystem for them; gs:// is
   written directly). The executor output file names the original URIs again, in artifact
   URIs and in string metadata that pointed into a local copy.
4. Failed results. An executor may fail its execution by returning an ExecutorOutput with a
   non-zero code (the data gate does); the local launcher honours that, but TFX's KFP runner
   drops Do's return value, so the task would pass. The entrypoint raises it instead, and the
   task, and with it the run, fails with the executor's message.
5. GCS directory markers. `tf.io.gfile` writes zero-byte `dir/` objects on GCS, which break
   the launcher's download of the artifact in the next task (kubeflow/pipelines#13476);
   they are deleted from every gs:// output after the executor ran.

Vertex passes proper types and gs:// URIs, so there steps 1 to 3 change nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from kubeflow import targets

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TFX imports TensorFlow

# KFP's LocalPathForURI: where the launcher keeps a local copy of a remote artifact.
LOCAL_MOUNTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
# Schemes tf.io.gfile cannot open: their local copy is used on every target.
_NO_GFILE = ("minio://", "s3://")


def _class_path(artifact_type: dict) -> Optional[str]:
    """The TFX class an artifact type names, or None when it names none (system.*, empty)."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils  # pylint: disable=g-import-not-at-top
    from tfx.utils import import_utils  # pylint: disable=g-import-not-at-top
    import yaml  # pylint: disable=g-import-not-at-top
    title = artifact_type.get("schemaTitle")
    if title is None and artifact_type.get("instanceSchema"):
        schema = yaml.safe_load(artifact_type["instanceSchema"])
        title = schema.get("title") if isinstance(schema, dict) else None
    if not title:
        return None
    path = compiler_utils.TITLE_TO_CLASS_PATH.get(title, title)
    try:
        import_utils.import_class_by_path(path)
    except (ImportError, AttributeError, ValueError):
        return None
    return path


def local_schemes(target: str, beam_args: Sequence[str] = ()) -> Tuple[str, ...]:
    """The URI schemes whose launcher-local copy a task on `target` reads and writes."""
    if target != targets.KUBEFLOW:
        return _NO_GFILE
    args = list(beam_args)
    runner = [a.split("=", 1)[1] for a in args if a.startswith("--runner=")] + [
        b for a, b in zip(args, args[1:]) if a == "--runner"]
    if any(r.startswith("Dataflow") for r in runner):
        return _NO_GFILE
    return tuple(LOCAL_MOUNTS)


def local_path(uri: str, schemes: Sequence[str] = _NO_GFILE) -> str:
    """The launcher's local copy of `uri` when its scheme is one of `schemes`; else `uri`."""
    for scheme in schemes:
        if uri.startswith(scheme):
            return LOCAL_MOUNTS[scheme] + uri[len(scheme):]
    return uri


def repair_executor_input(executor_input: dict, expected_types: Dict[str, str],
                          schemes: Sequence[str] = _NO_GFILE
                          ) -> Tuple[dict, Dict[str, str], List[str]]:
    """Fixes keys, artifact types and URIs of a KFP ExecutorInput dict (see the module doc).

    Args:
      executor_input: the parsed `{{$}}` JSON; not modified.
      expected_types: every input/output artifact key the compiled component declares ->
        its TFX type title.
      schemes: URI schemes replaced by the launcher's local copy (`local_schemes`).
    Returns:
      (the repaired copy, {local path: original URI} for every rewritten URI, the artifact
      keys left to the launcher because the spec does not declare them).
    Raises:
      RuntimeError: an artifact's type names no TFX class and the spec gives none for its key.
    """
    fixed = json.loads(json.dumps(executor_input))
    originals: Dict[str, str] = {}
    undeclared: List[str] = []
    for side in ("inputs", "outputs"):
        artifacts = fixed.get(side, {}).get("artifacts", {})
        if expected_types:
            for key in [k for k in artifacts if k not in expected_types]:
                undeclared.append(key)
                del artifacts[key]
        for key, artifact_list in artifacts.items():
            for artifact in artifact_list.get("artifacts", []):
                if _class_path(artifact.get("type", {})) is None:
                    title = expected_types.get(key)
                    if not title or _class_path({"schemaTitle": title}) is None:
                        raise RuntimeError(
                            f"{side} artifact {key!r} has type {artifact.get('type')!r}, "
                            "which names no TFX artifact class, and the spec gives none.")
                    artifact["type"] = {"schemaTitle": title}
                uri = artifact.get("uri", "")
                local = local_path(uri, schemes)
                if local != uri:
                    originals[local] = uri
                    artifact["uri"] = local
    return fixed, originals, undeclared


def remote(value: str, originals: Dict[str, str]) -> str:
    """`value` with a leading local copy path (a key of `originals`) replaced by its URI."""
    for local, uri in originals.items():
        if value == local or value.startswith(local.rstrip("/") + "/"):
            return uri + value[len(local):]
    return value


def _restore_uris(output_file: str, originals: Dict[str, str]) -> None:
    """Rewrites the executor output file: local copy paths become their URIs again."""
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    if not originals or not fileio.exists(output_file):
        return
    with fileio.open(output_file, "r") as f:
        output = json.load(f)
    for artifact_list in output.get("artifacts", {}).values():
        for artifact in artifact_list.get("artifacts", []):
            artifact["uri"] = remote(artifact.get("uri", ""), originals)
            metadata = artifact.get("metadata") or {}
            for key, value in metadata.items():
                if isinstance(value, str):
                    metadata[key] = remote(value, originals)
    with fileio.open(output_file, "w") as f:
        f.write(json.dumps(output))


def directory_markers(blobs) -> List:
    """The zero-byte `.../` objects among `blobs` (google.cloud.storage Blob-like)."""
    return [b for b in blobs if b.name.endswith("/") and not b.size]


def gcs_folder(uri: str) -> Tuple[str, str]:
    """(bucket, object prefix) of everything in the gs:// folder `uri`, its own marker included.

    The prefix ends in '/', so gs://b/x/examples does not also list gs://b/x/examples_old/.
    """
    bucket, _, path = uri[len("gs://"):].partition("/")
    return bucket, path.rstrip("/") + "/" if path.strip("/") else ""


def remove_gcs_directory_markers(uris: Sequence[str]) -> int:
    """Deletes zero-byte `dir/` objects under each gs:// URI; returns how many."""
    gcs = [u for u in uris if u.startswith("gs://")]
    if not gcs:
        return 0
    from google.cloud import storage  # pylint: disable=g-import-not-at-top
    client, removed = storage.Client(), 0
    for uri in gcs:
        bucket, prefix = gcs_folder(uri)
        for blob in directory_markers(client.list_blobs(bucket, prefix=prefix)):
            blob.delete()
            removed += 1
    return removed


def honouring_failed_results(executor_cls):
    """`executor_cls` whose Do raises RuntimeError(message) when it returns a failed result."""

    class Executor(executor_cls):  # pylint: disable=missing-class-docstring

        def Do(self, input_dict, output_dict, exec_properties):  # pylint: disable=invalid-name
            result = super().Do(input_dict, output_dict, exec_properties)
            if result is not None and result.execution_result.code:
                raise RuntimeError(result.execution_result.result_message)
            return result

    Executor.__name__ = Executor.__qualname__ = executor_cls.__name__
    Executor.__module__ = executor_cls.__module__
    return Executor


def _parse(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    parser = argparse.ArgumentParser(prog="kubeflow.entrypoint", add_help=False)
    parser.add_argument("--executor_class_path", required=True)
    parser.add_argument("--json_serialized_invocation_args", required=True)
    parser.add_argument("--json_serialized_inputs_spec_args")
    parser.add_argument(targets.ARTIFACT_TYPES_FLAG, dest="artifact_types", default="{}")
    parser.add_argument(targets.TARGET_FLAG, dest="target", default=targets.KUBEFLOW,
                        choices=targets.TARGETS)
    return parser.parse_known_args(list(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Repairs the executor input, runs the TFX executor, then tidies its outputs."""
    args, beam_args = _parse(sys.argv[1:] if argv is None else argv)
    executor_input = json.loads(args.json_serialized_invocation_args)
    fixed, originals, undeclared = repair_executor_input(
        executor_input, json.loads(args.artifact_types), local_schemes(args.target, beam_args))
    if undeclared:
        print(f"kubeflow.entrypoint: left to the launcher: {', '.join(sorted(undeclared))}",
              file=sys.stderr)
    args.json_serialized_invocation_args = json.dumps(fixed)

    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor  # pylint: disable=g-import-not-at-top
    from tfx.utils import import_utils  # pylint: disable=g-import-not-at-top
    # TFX's runner imports the executor by path; hand it the failure-honouring subclass.
    import_class = import_utils.import_class_by_path
    import_utils.import_class_by_path = lambda path: honouring_failed_results(
        import_class(path)) if path == args.executor_class_path else import_class(path)
    kubeflow_v2_run_executor._run_executor(args, beam_args)  # pylint: disable=protected-access

    _restore_uris(fixed["outputs"]["outputFile"], originals)
    remove_gcs_directory_markers(
        [a["uri"] for lst in fixed["outputs"].get("artifacts", {}).values()
         for a in lst.get("artifacts", [])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
