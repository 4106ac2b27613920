"""Container entrypoint of every compiled task: `python -m kubeflow.entrypoint ARGS`.

Takes the arguments of TFX's `kubeflow_v2_run_executor` (plus `--artifact_types`, added by
targets.finalize), repairs what the KFP v2 launcher hands over, then delegates to TFX:

1. Artifact types. On open-source KFP the launcher passes artifacts typed `system.Artifact`
   (or with an empty instance schema); TFX then cannot find the artifact class
   (tensorflow/tfx#7768, TFX 1.16 + kfp 2.5). An artifact whose type does not name an
   importable TFX class gets the type the compiled spec declares for its key.
2. Storage URIs. `minio://` and `s3://` artifact URIs, which `tf.io.gfile` cannot open, are
   replaced by the launcher's local copies (`/minio/...`, `/s3/...`): the launcher
   downloads inputs there before the command and uploads outputs from there after it. The
   executor output file names the original URIs again.
3. Failed results. An executor may fail its execution by returning an ExecutorOutput with a
   non-zero code (the data gate does); the local launcher honours that, but TFX's KFP runner
   drops Do's return value, so the task would pass. The entrypoint raises it instead, and the
   task, and with it the run, fails with the executor's message.
4. GCS directory markers. `tf.io.gfile` writes zero-byte `dir/` objects on GCS, which break
   the launcher's download of the artifact in the next task (kubeflow/pipelines#13476);
   they are deleted from every gs:// output after the executor ran.

Vertex passes proper types and gs:// URIs, so there steps 1 and 2 change nothing.
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
_LOCAL_MOUNTS = {"minio://": "/minio/", "s3://": "/s3/"}


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


def local_path(uri: str) -> str:
    """The launcher's local copy of `uri` for schemes tf.io.gfile cannot open; else `uri`."""
    for scheme, mount in _LOCAL_MOUNTS.items():
        if uri.startswith(scheme):
            return mount + uri[len(scheme):]
    return uri


def repair_executor_input(executor_input: dict,
                          expected_types: Dict[str, str]) -> Tuple[dict, Dict[str, str]]:
    """Fixes artifact types and URIs of a KFP ExecutorInput dict (see the module doc).

    Args:
      executor_input: the parsed `{{$}}` JSON; not modified.
      expected_types: input/output key -> TFX type title, from the compiled spec.
    Returns:
      (the repaired copy, {local path: original URI} for every rewritten URI).
    Raises:
      RuntimeError: an artifact's type names no TFX class and the spec gives none for its key.
    """
    fixed = json.loads(json.dumps(executor_input))
    originals: Dict[str, str] = {}
    for side in ("inputs", "outputs"):
        for key, artifact_list in fixed.get(side, {}).get("artifacts", {}).items():
            for artifact in artifact_list.get("artifacts", []):
                if _class_path(artifact.get("type", {})) is None:
                    title = expected_types.get(key)
                    if not title or _class_path({"schemaTitle": title}) is None:
                        raise RuntimeError(
                            f"{side} artifact {key!r} has type {artifact.get('type')!r}, "
                            "which names no TFX artifact class, and the spec gives none.")
                    artifact["type"] = {"schemaTitle": title}
                uri = artifact.get("uri", "")
                if local_path(uri) != uri:
                    originals[local_path(uri)] = uri
                    artifact["uri"] = local_path(uri)
    return fixed, originals


def _restore_uris(output_file: str, originals: Dict[str, str]) -> None:
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    if not originals or not fileio.exists(output_file):
        return
    with fileio.open(output_file, "r") as f:
        output = json.load(f)
    for artifact_list in output.get("artifacts", {}).values():
        for artifact in artifact_list.get("artifacts", []):
            artifact["uri"] = originals.get(artifact.get("uri"), artifact.get("uri"))
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
    return parser.parse_known_args(list(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Repairs the executor input, runs the TFX executor, then tidies its outputs."""
    args, beam_args = _parse(sys.argv[1:] if argv is None else argv)
    executor_input = json.loads(args.json_serialized_invocation_args)
    fixed, originals = repair_executor_input(executor_input, json.loads(args.artifact_types))
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
