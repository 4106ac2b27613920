"""A replay of a compiled Kubeflow pipeline the way the KFP v2 backend runs it, task by task.

Not our idea of the launcher: each step below is modelled on the backend's source, at the
versions named (links to the lines followed). What is replayed:

Driver (backend/src/v2/driver), per task:
- outputs: `provisionOutputs`, one artifact per key of the component's outputDefinitions,
  plus `executor-logs` typed system.Artifact when log publishing is on (2.5.0+, the
  default); URI `<run root>/<task>/<uuid>/<key>`, where the run root is
  `<pipeline root>/<pipeline name>/<run id>` (metadata/client.go `GetPipeline`); artifact
  name "" before 2.15 and the key from 2.15; the output file /tmp/kfp_outputs/
  output_metadata.json before 2.15 and `<local task root>/output_metadata.json` from 2.15.
    https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/driver/driver.go#L2010-L2064
    https://github.com/kubeflow/pipelines/blob/2.15.0/backend/src/v2/driver/driver.go#L658-L725
    https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/metadata/client.go#L306-L317
- the pipeline root is the run's (runtime config, else the kfp-launcher ConfigMap); the
  spec's defaultPipelineRoot is not read (driver.go `RootDAG`,
  https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/driver/driver.go#L168-L173).
- inputs: parameters from the run's values or task constants; artifacts from the producer's
  MLMD record (`GetOutputArtifactsByExecutionId` + `toRuntimeArtifact`): name = the MLMD id,
  metadata = custom properties with every number a double, type `{instanceSchema: ""}`.
    https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/metadata/converter.go#L110-L215
    https://github.com/kubeflow/pipelines/blob/2.16.0/backend/src/v2/metadata/client.go

Launcher (backend/src/v2/component/launcher_v2.go):
- parameter defaults of the component are added (`addDefaultParams`); `{{$}}` is the
  protojson of the executor input (`getPlaceholders` / `compileCmdAndArgs`);
- every input artifact is downloaded from the object store to `LocalPathForURI` (gs:// ->
  /gcs/, minio:// -> /minio/, s3:// -> /s3/) by listing the key prefix (`DownloadBlob`:
  objects only, so empty folders never arrive); the parent folder of each output's local
  path is created (`prepareOutputFolders`);
- stdout and stderr go to the executor-logs file when there is one (`getLogWriter`);
- a failed command fails the task: nothing is uploaded (2.16+: the logs only);
- the output file is parsed with protojson (unknown fields rejected), each declared output
  (executor-logs included) is merged with it (`mergeRuntimeArtifacts`: a non-empty URI and
  the metadata win), uploaded from its local path (`UploadBlob`: files only; a missing path
  is only a warning) and recorded in MLMD (`RecordArtifact`: `display_name` defaults to the
  output key; numbers become doubles, bools ints, lists/structs wrapped structs).
    https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/component/launcher_v2.go#L340-L590
    https://github.com/kubeflow/pipelines/blob/2.16.0/backend/src/v2/component/launcher_v2.go#L660-L760
    https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/objectstore/object_store.go#L88-L150
    https://github.com/kubeflow/pipelines/blob/2.5.0/backend/src/v2/metadata/client.go#L1018-L1080

A fresh pod per task: the local copies of the run are removed before each task, so a task
sees only what the launcher downloaded. Tasks run in a topological order of the DAG, one at a
time; a failed task stops the run (Argo does not schedule the tasks after it).

Not replayed: caching (the test compiles with caching off for the ingest task only; the
cache key is the backend's), the Argo workflow itself, retries, Kubernetes resources, and the
object store's credentials.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

LOCAL_MOUNTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
LOGS_KEY = "executor-logs"
LEGACY_OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"


@dataclass(frozen=True)
class Backend:
    """The launcher behaviours that differ between KFP releases."""
    version: str  # "2.5", "2.16", ...
    publish_logs: bool  # the driver's --publish_logs (true by default since 2.5.0)

    def _at_least(self, version: str) -> bool:
        number = lambda v: tuple(int(p) for p in v.split("."))
        return number(self.version) >= number(version)

    @property
    def names_outputs(self) -> bool:  # RuntimeArtifact.name = key since 2.15.0
        return self._at_least("2.15")

    @property
    def output_file_in_task_root(self) -> bool:
        return self._at_least("2.15")

    @property
    def uploads_logs_of_failed_tasks(self) -> bool:
        return self._at_least("2.16")


def local_path(uri: str) -> str:
    """launcher_v2.go `LocalPathForURI`."""
    for scheme, mount in LOCAL_MOUNTS.items():
        if uri.startswith(scheme):
            return mount + uri[len(scheme):]
    raise ValueError(f"failed to generate local path for URI {uri}: unsupported storage scheme")


class ObjectStore:
    """Buckets as folders: `<root>/<scheme>/<bucket>/<key>`; objects only, no folders."""

    def __init__(self, root: str):
        self.root = root

    def _path(self, uri: str) -> str:
        scheme, _, rest = uri.partition("://")
        return os.path.join(self.root, scheme, rest)

    def keys(self, uri: str) -> List[str]:
        """Object keys under `uri` as a string prefix (a bucket listing), relative to it."""
        base = self._path(uri)
        if os.path.isfile(base):
            return [""]
        out = []
        for folder, _, files in os.walk(base):
            out += [os.path.relpath(os.path.join(folder, f), base) for f in files]
        return sorted(out)

    def upload(self, local: str, uri: str) -> None:
        """`UploadBlob`: a file, or every file under a folder (empty folders are lost)."""
        if not os.path.exists(local):
            raise FileNotFoundError(local)
        if os.path.isfile(local):
            os.makedirs(os.path.dirname(self._path(uri)), exist_ok=True)
            shutil.copyfile(local, self._path(uri))
            return
        for folder, _, files in os.walk(local):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), local)
                target = os.path.join(self._path(uri), rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(os.path.join(folder, name), target)

    def download(self, uri: str, local: str) -> None:
        """`DownloadBlob`: every object under the key, written below `local`."""
        for rel in self.keys(uri):
            target = local if rel == "" else os.path.join(local, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(self._path(uri), rel) if rel else self._path(uri),
                            target)

    def read(self, uri: str, mode: str = "r"):
        with open(self._path(uri), mode) as f:
            return f.read()


def _mlmd_value(value):
    """metadata/converter.go `StructValueToMLMDValue`: (kind, value)."""
    if isinstance(value, bool):
        return "int", int(value)
    if isinstance(value, (int, float)):
        return "double", float(value)
    if isinstance(value, str):
        return "string", value
    if isinstance(value, list):
        return "struct", {"list": value}
    if isinstance(value, dict):
        return "struct", {"struct": value}
    raise TypeError(f"unknown/unsupported value type {type(value).__name__}")


@dataclass
class Record:
    """One MLMD artifact as the launcher records it."""
    id: int
    key: str
    uri: str
    schema: str
    type_name: str
    custom_properties: Dict[str, tuple] = field(default_factory=dict)

    def runtime_artifact(self) -> dict:
        """`OutputArtifact.ToRuntimeArtifact` (converter.go `toRuntimeArtifact`), as the
        driver hands it to the next task."""
        return {"name": str(self.id), "uri": self.uri, "type": {"instanceSchema": ""},
                "metadata": {k: float(v) if kind in ("int", "double") else v
                             for k, (kind, v) in self.custom_properties.items()}}

    def value(self, name: str):
        return self.custom_properties[name][1]


@dataclass
class TaskResult:
    name: str
    ok: bool
    executor_input: dict
    output: Optional[pipeline_spec_pb2.ExecutorOutput]
    outputs: Dict[str, Record]
    logs: str
    seconds: float = 0.0


class Replay:
    """Runs a compiled PipelineSpec dict task by task (see the module doc)."""

    def __init__(self, spec: dict, backend: Backend, store: ObjectStore, pipeline_root: str,
                 parameters: Optional[dict] = None, run_id: Optional[str] = None,
                 workdir: str = "/tmp"):
        self.spec, self.backend, self.store = spec, backend, store
        self.run_id = run_id or str(uuid.uuid4())
        self.run_root = f"{pipeline_root.rstrip('/')}/{spec['pipelineInfo']['name']}/{self.run_id}"
        self.parameters = self._root_parameters(parameters or {})
        self.workdir = workdir
        self.records: List[Record] = []
        self.results: Dict[str, TaskResult] = {}

    def _root_parameters(self, given: dict) -> dict:
        declared = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        values = {k: v["defaultValue"] for k, v in declared.items() if "defaultValue" in v}
        values.update(given)
        missing = set(declared) - set(values)
        assert not missing, f"the driver refuses a run without {missing}"
        return values

    def order(self) -> List[str]:
        tasks = self.spec["root"]["dag"]["tasks"]
        done: List[str] = []
        while len(done) < len(tasks):
            ready = sorted(n for n, t in tasks.items() if n not in done
                           and set(t.get("dependentTasks", [])) <= set(done))
            assert ready, "the DAG has a cycle"
            done.append(ready[0])
        return done

    # ---- driver ------------------------------------------------------------------------

    def _executor_input(self, name: str) -> dict:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        parameters = {}
        for key, value in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in value:
                parameters[key] = self.parameters[value["componentInputParameter"]]
            else:
                parameters[key] = value["runtimeValue"]["constant"]
        artifacts = {}
        for key, value in task.get("inputs", {}).get("artifacts", {}).items():
            source = value["taskOutputArtifact"]
            producer = self.results[source["producerTask"]].outputs
            artifacts[key] = {"artifacts": [
                producer[source["outputArtifactKey"]].runtime_artifact()]}
        declared = dict(component.get("outputDefinitions", {}).get("artifacts", {}))
        if self.backend.publish_logs:
            declared[LOGS_KEY] = {"artifactType": {"schemaTitle": "system.Artifact"}}
        task_root = f"{self.run_root}/{name}/{uuid.uuid4()}"
        outputs = {}
        for key, spec in declared.items():
            artifact = {"uri": f"{task_root}/{key}", "type": spec["artifactType"]}
            if self.backend.names_outputs:
                artifact["name"] = key
            if spec.get("metadata"):
                artifact["metadata"] = spec["metadata"]
            outputs[key] = {"artifacts": [artifact]}
        output_file = (os.path.join(local_path(task_root), "output_metadata.json")
                       if self.backend.output_file_in_task_root else LEGACY_OUTPUT_FILE)
        executor_input = {"inputs": {"parameterValues": parameters},
                          "outputs": {"artifacts": outputs, "outputFile": output_file}}
        if artifacts:
            executor_input["inputs"]["artifacts"] = artifacts
        # The proto round trip: what protojson.Marshal of the message prints.
        message = json_format.ParseDict(executor_input, pipeline_spec_pb2.ExecutorInput())
        return json_format.MessageToDict(message)

    # ---- launcher ----------------------------------------------------------------------

    def _fresh_pod(self) -> None:
        """A new pod's disk: no local copies of this run, no legacy output folder."""
        shutil.rmtree(local_path(self.run_root), ignore_errors=True)
        shutil.rmtree(os.path.dirname(LEGACY_OUTPUT_FILE), ignore_errors=True)

    def run_task(self, name: str) -> TaskResult:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        container = self.spec["deploymentSpec"]["executors"][component["executorLabel"]][
            "container"]
        executor_input = self._executor_input(name)
        self._fresh_pod()
        with_defaults = json.loads(json.dumps(executor_input))
        for key, value in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if "defaultValue" in value:
                with_defaults["inputs"].setdefault("parameterValues", {}).setdefault(
                    key, value["defaultValue"])
        for key, artifact_list in executor_input["inputs"].get("artifacts", {}).items():
            artifact = artifact_list["artifacts"][0]
            self.store.download(artifact["uri"], local_path(artifact["uri"]))
        for artifact_list in executor_input["outputs"]["artifacts"].values():
            os.makedirs(os.path.dirname(local_path(artifact_list["artifacts"][0]["uri"])),
                        exist_ok=True)
        placeholder = json.dumps(with_defaults, separators=(",", ":"))
        args = [a.replace("{{$}}", placeholder) for a in container.get("args", [])]
        command = [c.replace("{{$}}", placeholder) for c in container["command"]]
        leftover = [a for a in [*command, *args] if "{{$" in a]
        assert not leftover, f"placeholders this replay does not model: {leftover}"
        env = dict(os.environ,
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        start = time.monotonic()
        done = subprocess.run([*command, *args], cwd=self.workdir, env=env, check=False,
                              capture_output=True, text=True, timeout=900)
        seconds = time.monotonic() - start
        logs = done.stdout + done.stderr
        logs_list = executor_input["outputs"]["artifacts"].get(LOGS_KEY)
        if logs_list:
            path = local_path(logs_list["artifacts"][0]["uri"])
            with open(path, "w", encoding="utf-8") as f:
                f.write(logs)
        if done.returncode != 0:
            outputs = {}
            if logs_list and self.backend.uploads_logs_of_failed_tasks:
                outputs = self._upload({LOGS_KEY: logs_list}, None)
            result = TaskResult(name, False, executor_input, None, outputs, logs, seconds)
        else:
            output = self._output_file(executor_input["outputs"]["outputFile"])
            outputs = self._upload(executor_input["outputs"]["artifacts"], output)
            result = TaskResult(name, True, executor_input, output, outputs, logs, seconds)
        self.results[name] = result
        return result

    @staticmethod
    def _output_file(path: str) -> pipeline_spec_pb2.ExecutorOutput:
        """`getExecutorOutputFile`: protojson, unknown fields rejected; no file is empty."""
        output = pipeline_spec_pb2.ExecutorOutput()
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                json_format.Parse(f.read(), output, ignore_unknown_fields=False)
        return output

    def _upload(self, declared: dict, output) -> Dict[str, Record]:
        recorded = {}
        for key, artifact_list in declared.items():
            artifact = json.loads(json.dumps(artifact_list["artifacts"][0]))
            # 2.16+ keeps the launcher's own executor-logs location whatever the output says.
            merge = output is not None and key in output.artifacts and not (
                key == LOGS_KEY and self.backend.uploads_logs_of_failed_tasks)
            if merge and output.artifacts[key].artifacts:
                given = json_format.MessageToDict(output.artifacts[key].artifacts[0])
                if given.get("uri"):
                    artifact["uri"] = given["uri"]
                artifact.setdefault("metadata", {}).update(given.get("metadata", {}))
            try:
                local = local_path(artifact["uri"])
            except ValueError:
                local = None  # the launcher only warns, and records the artifact anyway
            if local is not None and os.path.exists(local):
                self.store.upload(local, artifact["uri"])
            kind = artifact["type"]
            schema = kind.get("instanceSchema") or f"title: {kind.get('schemaTitle', '')}"
            title = next((line.split(":", 1)[1].strip() for line in schema.splitlines()
                          if line.startswith("title:")), "")
            record = Record(len(self.records) + 1, key, artifact["uri"], schema, title)
            for name, value in artifact.get("metadata", {}).items():
                record.custom_properties[name] = _mlmd_value(value)
            record.custom_properties.setdefault("display_name", ("string", key))
            record.custom_properties.setdefault("store_session_info", ("string", "{}"))
            self.records.append(record)
            recorded[key] = record
        return recorded

    def run(self, stop_after: Optional[str] = None) -> Dict[str, TaskResult]:
        """Runs the DAG until a task fails (or `stop_after` ran); returns the results."""
        for name in self.order():
            result = self.run_task(name)
            if not result.ok or name == stop_after:
                break
        return self.results

    def cleanup(self) -> None:
        self._fresh_pod()
