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
sees only what the launcher downloaded, and its command runs as a new process (`Pods`), with
the launcher's argv, environment and working folder. `ForkServer` starts that process by
forking a server that has already imported what every task's entrypoint imports first (TFX,
TensorFlow, Beam: ~17 s of CPU per process); its docstring lists what that changes. Tasks
run in a topological order of the DAG, one at a time; a failed task stops the run (Argo does
not schedule the tasks after it). Replays of different runs may run at the same time (in
threads): their local copies and stores are apart, and those that use the legacy output
file take turns.

Not replayed: caching (the test compiles with caching off for the ingest task only; the
cache key is the backend's), the Argo workflow itself, retries, Kubernetes resources, and the
object store's credentials.
"""
from __future__ import annotations

import contextlib
import json
import locale
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

LOCAL_MOUNTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
LOGS_KEY = "executor-logs"
LEGACY_OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"
# That file's folder is one for every replay of this process: the replays of backends that
# use it run one at a time (others may run beside them).
_LEGACY_OUTPUTS = threading.Lock()


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


def launcher_env() -> Dict[str, str]:
    """The task's environment: ours, with this interpreter's folder first on PATH so that
    the spec's `python` is the test's interpreter (the image's, on a cluster), and without
    the variable pytest sets to the current test's name (a pod has none)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    return env


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


class Pods:
    """A task's container command as a new process: `subprocess.run`, stdout and stderr
    captured apart (the launcher's log writer gets stdout, then stderr)."""

    def run(self, argv: List[str], cwd: str, env: Dict[str, str],
            timeout: float) -> Tuple[int, str, str, Optional[float]]:
        """(exit status, stdout, stderr, CPU seconds of the process where known)."""
        done = subprocess.run(argv, cwd=cwd, env=env, check=False, capture_output=True,
                              text=True, timeout=timeout)
        return done.returncode, done.stdout, done.stderr, None

    def close(self) -> None:
        pass


# The server's program (`python -c`). It accepts one connection per task; a task's child
# leaves the loop and becomes `python -m MODULE ARGS`: runpy's `_run_module_as_main`, what
# -m calls, in a __main__ namespace reset to a fresh interpreter's; the interpreter then
# ends it the way it ends `python -m` (SystemExit, or a traceback and status 1, atexit
# handlers, non-daemon threads joined). The server reaps its children and sends each exit
# status; it ends on {"exit": true} or when its parent is gone.
_SERVER = r"""
def _serve():
    import builtins, importlib, importlib.machinery, json, os, runpy, select, socket, sys
    listener = socket.socket(fileno=int(sys.argv[1]))
    preload, fresh, parent = json.loads(sys.argv[2]), json.loads(sys.argv[3]), os.getppid()
    for name in preload:
        importlib.import_module(name)
    early = sorted(m for m in sys.modules if m.split(".")[0] in fresh)

    def send(conn, message):
        try:
            conn.sendall((json.dumps(message) + "\n").encode())
        except OSError:
            pass  # the client gave up on this task (its timeout)

    conns, waiting, job = {}, {}, None
    while job is None and os.getppid() == parent:
        for ready in select.select([listener, *conns], [], [], 0.05)[0]:
            if ready is listener:
                conns[listener.accept()[0]] = b""
                continue
            data = ready.recv(1 << 20)
            conns[ready] += data
            if not data or not conns[ready].endswith(b"\n"):
                if not data:
                    conns.pop(ready).close()
                continue
            request = json.loads(conns.pop(ready))
            if request.get("exit"):
                return
            if "module" not in request:
                send(ready, {"ready": os.getpid(), "early": early})
                ready.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                job, conns[ready] = request, b""
                break
            send(ready, {"pid": pid})
            waiting[pid] = ready
        while waiting and job is None:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            if pid in waiting:
                conn = waiting.pop(pid)
                cpu = usage.ru_utime + usage.ru_stime
                send(conn, {"rc": os.waitstatus_to_exitcode(status), "cpu": cpu})
                conn.close()
    if job is None:
        return
    listener.close()
    for conn in [*conns, *waiting.values()]:
        conn.close()
    os.chdir(job["cwd"])
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv[:] = ["-m", *job["args"]]
    sys.path[0] = os.getcwd()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    run, module = runpy._run_module_as_main, job["module"]
    main = sys.modules["__main__"].__dict__
    main.clear()
    main.update(__name__="__main__", __doc__=None, __package__=None,
                __loader__=importlib.machinery.BuiltinImporter, __spec__=None,
                __annotations__={}, __builtins__=builtins)
    run(module)

_serve()
"""


class ForkServer(Pods):
    """Runs `python -m MODULE ARGS` in a process forked from a server that imported `preload`.

    The child is a new process per task, as a pod's is, with the argv, environment and
    working folder the launcher gives it, and its own stdout and stderr. Tasks may run at
    the same time (one connection each). What differs from `python -m` started afresh
    (`Pods`):
    - the modules in `preload` (and what they import) are already imported, once, with this
      same environment and before the task's own code; `preload` must be modules the task
      imports anyway before its work (kubeflow/entrypoint.py's unconditional imports), and
      none of the packages in `fresh` may be among them (checked), so the project's code,
      the entrypoint included, is executed anew by every task;
    - what those imports print (TensorFlow's plugin notes, FutureWarnings) goes to the
      server's log once instead of each task's stderr;
    - the string hash seed is the server's, shared by all tasks; numpy's global generator
      is reseeded from the OS in the child, as a fresh import would seed it (Python's
      `random` reseeds itself after a fork);
    - native threads the imports started (BLAS, jemalloc) exist only in the server: a
      child starts with one thread, and those libraries restart theirs in it;
    - open descriptors: 0 is inherited as `subprocess.run` inherits it, 1 and 2 are files,
      and descriptors the preloaded libraries opened in the server stay open;
    - the parent is the server, not the launcher; `sys.orig_argv` is the server's
      (`python -c ...`), and a traceback of an uncaught exception starts with two frames
      of the server's program before runpy's.
    Only commands of the form `python -m MODULE ...` whose `python` resolves to the server's
    interpreter, with exactly the server's environment, are accepted.
    """

    def __init__(self, env: Dict[str, str], preload: Sequence[str], fresh: Sequence[str],
                 log_path: str):
        self.env = dict(env)
        self.python = shutil.which("python", path=self.env["PATH"])
        self.log_path = log_path
        self.folder = tempfile.mkdtemp(prefix="kfp_replay_fork_")
        self.address = os.path.join(self.folder, "server.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address)
        listener.listen(16)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-c", _SERVER, str(listener.fileno()),
                 json.dumps(list(preload)), json.dumps(list(fresh))],
                env=self.env, cwd="/", stdout=log, stderr=log, pass_fds=(listener.fileno(),))
        listener.close()
        self._early: Optional[List[str]] = None

    def _request(self, message: dict) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.address)
        conn.sendall((json.dumps(message) + "\n").encode())
        return conn

    def _reply(self, reader) -> dict:
        line = reader.readline()
        if not line:
            raise RuntimeError(f"the fork server ended; see {self.log_path}")
        return json.loads(line)

    def wait_ready(self, timeout: float = 600) -> None:
        """Waits for the preload; fails when it imported a module of `fresh`."""
        if self._early is None:
            with self._request({}) as conn, conn.makefile("r") as reader:
                conn.settimeout(timeout)
                self._early = self._reply(reader)["early"]
        assert not self._early, f"preloading imported project modules: {self._early}"

    def run(self, argv, cwd, env, timeout):
        python, flag, module, *args = argv
        assert flag == "-m" and shutil.which(python, path=env["PATH"]) == self.python, argv
        differ = sorted(k for k in {*env, *self.env} if env.get(k) != self.env.get(k))
        assert not differ, f"the fork server runs tasks in its own environment only: {differ}"
        self.wait_ready()
        out, err = (os.path.join(self.folder, f"{uuid.uuid4().hex}.{n}") for n in "12")
        job = {"module": module, "args": args, "cwd": cwd, "stdout": out, "stderr": err}
        with self._request(job) as conn, conn.makefile("r") as reader:
            pid = self._reply(reader)["pid"]
            conn.settimeout(timeout)
            try:
                reply = self._reply(reader)
            except socket.timeout:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(argv, timeout) from None
        texts = []
        for path in (out, err):  # decoded as subprocess.run(text=True) decodes
            with open(path, encoding=locale.getpreferredencoding(False)) as f:
                texts.append(f.read())
            os.remove(path)
        return reply["rc"], texts[0], texts[1], reply["cpu"]

    def close(self) -> None:
        try:
            self._request({"exit": True}).close()
        except OSError:
            pass
        self.proc.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


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
    cpu_seconds: Optional[float] = None  # the task's process, where the pods report it


class Replay:
    """Runs a compiled PipelineSpec dict task by task (see the module doc)."""

    def __init__(self, spec: dict, backend: Backend, store: ObjectStore, pipeline_root: str,
                 parameters: Optional[dict] = None, run_id: Optional[str] = None,
                 workdir: str = "/tmp", pods: Optional[Pods] = None):
        self.spec, self.backend, self.store = spec, backend, store
        self.pods = pods or Pods()
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
        """A new pod's disk: no local copies of this run, no legacy output folder (left
        alone by a 2.15+ backend, whose launcher never reads it, so that a replay of an
        older one may run beside it)."""
        shutil.rmtree(local_path(self.run_root), ignore_errors=True)
        if not self.backend.output_file_in_task_root:
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
        start = time.monotonic()
        returncode, stdout, stderr, cpu = self.pods.run([*command, *args], self.workdir,
                                                        launcher_env(), timeout=900)
        seconds = time.monotonic() - start
        logs = stdout + stderr
        logs_list = executor_input["outputs"]["artifacts"].get(LOGS_KEY)
        if logs_list:
            path = local_path(logs_list["artifacts"][0]["uri"])
            with open(path, "w", encoding="utf-8") as f:
                f.write(logs)
        if returncode != 0:
            outputs = {}
            if logs_list and self.backend.uploads_logs_of_failed_tasks:
                outputs = self._upload({LOGS_KEY: logs_list}, None)
            result = TaskResult(name, False, executor_input, None, outputs, logs, seconds, cpu)
        else:
            output = self._output_file(executor_input["outputs"]["outputFile"])
            outputs = self._upload(executor_input["outputs"]["artifacts"], output)
            result = TaskResult(name, True, executor_input, output, outputs, logs, seconds, cpu)
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
        legacy = not self.backend.output_file_in_task_root
        with _LEGACY_OUTPUTS if legacy else contextlib.nullcontext():
            for name in self.order():
                result = self.run_task(name)
                if not result.ok or name == stop_after:
                    break
        return self.results

    def cleanup(self) -> None:
        self._fresh_pod()
