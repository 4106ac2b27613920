"""kubeflow/client.py and `imgpipe submit|schedule`.

CONTRACT TEST, not a cluster run: `FakeKfp` is a loopback HTTP server implementing the
KFP v2beta1 endpoints `kfp.Client` calls (healthz, experiments, runs, recurring runs). The
real kfp.Client talks to it; the test asserts the requests it sends. No Kubeflow cluster
was involved. The Vertex calls are built as real `aiplatform.PipelineJob` objects with
anonymous credentials and checked without being sent.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform

from kubeflow import client, compiler, targets
from pipeline import cli
from pipeline.config import load_config


class _JsonReplies(BaseHTTPRequestHandler):
    """A loopback handler that answers in JSON and keeps pytest's output clean."""

    def log_message(self, *args):
        pass

    def _reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeKfp:
    """Records requests; answers like KFP's API server for the endpoints kfp.Client uses."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(_JsonReplies):

            def do_GET(self):
                outer.requests.append(("GET", self.path, None))
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self._reply({"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply({"experiments": [], "total_size": 0})
                return self._reply({"error": "not found"}, 404)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append(("POST", self.path, body))
                if self.path == "/apis/v2beta1/experiments":
                    return self._reply({"experiment_id": "exp-1", **body})
                if self.path == "/apis/v2beta1/runs":
                    return self._reply({"run_id": "run-1", **body})
                if self.path == "/apis/v2beta1/recurringruns":
                    return self._reply({"recurring_run_id": "rr-1", **body})
                return self._reply({"error": "not found"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self, path):
        return [body for method, p, body in self.requests if method == "POST" and p == path]


@pytest.fixture
def kfp_server():
    server = FakeKfp()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packages")
    config = load_config(None, {"data_root": "gs://bucket/flowers",
                                "workdir": "gs://bucket/imgpipe", "image": "reg/imgpipe:1"})
    out = {}
    for target, name in ((targets.KUBEFLOW, "p.yaml"), (targets.VERTEX, "p.json")):
        out[target] = str(tmp / name)
        compiler.compile_pipeline(config, target, out[target])
    return out


def _compiled_root(packages):
    with open(packages[targets.KUBEFLOW], encoding="utf-8") as f:
        return yaml.safe_load(f)["defaultPipelineRoot"]


def test_submit_kubeflow_sends_the_spec_parameters_and_experiment(kfp_server, packages):
    run_id = client.submit_kubeflow(packages[targets.KUBEFLOW], kfp_server.url,
                                    parameters={"data_root": "gs://bucket/new", "epochs": "3"},
                                    run_name="nightly")
    assert run_id == "run-1"
    assert kfp_server.posts("/apis/v2beta1/experiments")[0]["display_name"] == "imgpipe"
    (run,) = kfp_server.posts("/apis/v2beta1/runs")
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {"data_root": "gs://bucket/new", "epochs": 3}
    spec = run["pipeline_spec"]
    assert spec["schemaVersion"] == "2.1.0"
    # enable_caching=None keeps the compiled per-task settings: ingest stays uncached.
    assert spec["root"]["dag"]["tasks"]["ImageExampleGen"]["cachingOptions"] == {}
    assert spec["root"]["dag"]["tasks"]["Trainer"]["cachingOptions"]["enableCache"] is True
    assert not any("token" in k.lower() or "secret" in k.lower() for k in run)
    # The backend ignores the spec's defaultPipelineRoot; the run must carry it.
    assert run["runtime_config"]["pipeline_root"] == _compiled_root(packages) == \
        "gs://bucket/imgpipe/pipeline_root"


def test_schedule_kubeflow_sends_a_six_field_cron(kfp_server, packages):
    ident = client.schedule_kubeflow(packages[targets.KUBEFLOW], kfp_server.url,
                                     cron="30 2 * * MON-FRI", name="weekday-retrain",
                                     parameters={})
    assert ident == "rr-1"
    (recurring,) = kfp_server.posts("/apis/v2beta1/recurringruns")
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * MON-FRI"
    assert recurring["display_name"] == "weekday-retrain"
    assert recurring["experiment_id"] == "exp-1" and recurring["mode"] == "ENABLE"
    assert recurring["max_concurrency"] == "1" or recurring["max_concurrency"] == 1
    assert recurring["pipeline_spec"]["pipelineInfo"]["name"] == "imgpipe"
    assert recurring["runtime_config"]["pipeline_root"] == _compiled_root(packages)


def test_an_explicit_pipeline_root_wins_and_a_package_without_one_is_refused(
        kfp_server, packages, tmp_path):
    client.submit_kubeflow(packages[targets.KUBEFLOW], kfp_server.url, parameters={},
                           pipeline_root="minio://mlpipeline/imgpipe")
    client.schedule_kubeflow(packages[targets.KUBEFLOW], kfp_server.url, cron="0 3 * * *",
                             name="nightly", parameters={},
                             pipeline_root="minio://mlpipeline/imgpipe")
    (run,) = kfp_server.posts("/apis/v2beta1/runs")
    (recurring,) = kfp_server.posts("/apis/v2beta1/recurringruns")
    assert run["runtime_config"]["pipeline_root"] == "minio://mlpipeline/imgpipe"
    assert recurring["runtime_config"]["pipeline_root"] == "minio://mlpipeline/imgpipe"
    with open(packages[targets.KUBEFLOW], encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    del spec["defaultPipelineRoot"]
    rootless = tmp_path / "rootless.yaml"
    rootless.write_text(yaml.safe_dump(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="^pipeline_root=None and the package has no "
                       "defaultPipelineRoot: recompile it"):
        client.submit_kubeflow(str(rootless), kfp_server.url, parameters={})
    assert len(kfp_server.posts("/apis/v2beta1/runs")) == 1


def test_cli_submit_and_schedule_one_line_results_and_errors(kfp_server, packages, capsys):
    package = packages[targets.KUBEFLOW]
    assert cli.main(["submit", "--target", "kubeflow", "--host", kfp_server.url,
                     "--package", package, "--epochs", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "imgpipe: kubeflow run created: run-1"
    assert out[0].endswith("/#/experiments/details/exp-1")  # kfp.Client's own links
    assert kfp_server.posts("/apis/v2beta1/runs")[0]["runtime_config"]["parameters"] == \
        {"epochs": 2}
    assert cli.main(["schedule", "--target", "kubeflow", "--host", kfp_server.url,
                     "--package", package, "--cron", "61 * * * *", "--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgpipe: error: cron '61 * * * *': minute field") and "\n" not in err
    assert cli.main(["schedule", "--target", "kubeflow", "--host", kfp_server.url,
                     "--package", package, "--cron", "0 3 * * *", "--timezone",
                     "Europe/Berlin", "--name", "x"]) == 2
    assert "Kubeflow schedules run in UTC" in capsys.readouterr().err
    assert not kfp_server.posts("/apis/v2beta1/recurringruns")


def test_unreachable_host_is_one_line(packages, capsys):
    code = cli.main(["submit", "--target", "kubeflow", "--host", "http://127.0.0.1:9",
                     "--package", packages[targets.KUBEFLOW]])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("imgpipe: error: cannot reach Kubeflow Pipelines at "
                              "http://127.0.0.1:9")


def test_wrong_package_or_parameter_is_a_clear_error(packages):
    with pytest.raises(ValueError, match="not a Kubeflow PipelineSpec"):
        client.submit_kubeflow(packages[targets.VERTEX], "http://127.0.0.1:9", parameters={})
    with pytest.raises(ValueError, match="unknown pipeline parameter.*learning_rate"):
        client.submit_kubeflow(packages[targets.KUBEFLOW], "http://127.0.0.1:9",
                               parameters={"learning_rate": 1})
    with pytest.raises(ValueError, match="epochs='x': must be an integer"):
        client.submit_kubeflow(packages[targets.KUBEFLOW], "http://127.0.0.1:9",
                               parameters={"epochs": "x"})
    # A run's own data root the task image cannot read is refused before anything is sent.
    for package, submit in ((packages[targets.KUBEFLOW], lambda p, **kw: client.submit_kubeflow(
            p, "http://127.0.0.1:9", **kw)), (packages[targets.VERTEX], lambda p, **kw:
            client.vertex_job(p, project="p", region="r", credentials=AnonymousCredentials(),
                              **kw))):
        with pytest.raises(ValueError, match="data_root='s3://b/images': .*no s3:// filesystem"):
            submit(package, parameters={"data_root": "s3://b/images"})


def test_vertex_pipeline_job_is_built_without_sending(packages):
    job = client.vertex_job(packages[targets.VERTEX], project="my-proj", region="us-central1",
                            parameters={"epochs": "4"}, display_name="flowers",
                            credentials=AnonymousCredentials())
    proto = job._gca_resource  # the request body PipelineJob.submit() would send
    assert proto.display_name == "flowers"
    assert proto.runtime_config.gcs_output_directory == "gs://bucket/imgpipe/pipeline_root"
    values = dict(proto.runtime_config.parameter_values)
    assert values["epochs"] == 4 and values["data_root"] == "gs://bucket/flowers"
    spec = proto.pipeline_spec
    assert spec["schemaVersion"] == "2.1.0"
    assert "latest_blessed_model_resolver-model-resolver" in spec["root"]["dag"]["tasks"]
    assert job.project == "my-proj" and job.location == "us-central1"
    # PipelineJob takes labels only as an argument; the package's must be passed on, and a
    # schedule's runs inherit them from the job.
    with open(packages[targets.VERTEX], encoding="utf-8") as f:
        labels = json.load(f)["labels"]
    assert labels["tfx_runner"] == "kubeflow_v2" and "tfx_version" in labels
    assert dict(proto.labels) == labels
    schedule = aiplatform.PipelineJobSchedule(pipeline_job=job, display_name="nightly",
                                              credentials=AnonymousCredentials())
    assert dict(schedule._gca_resource.create_pipeline_job_request.pipeline_job.labels) == \
        labels


def test_vertex_schedule_cron_keeps_five_fields_and_time_zone():
    assert targets.cron(targets.VERTEX, "0 3 * * *", "Europe/Berlin") == \
        "TZ=Europe/Berlin 0 3 * * *"
    assert targets.cron(targets.VERTEX, "TZ=America/New_York 15 */6 1-7 * 1") == \
        "TZ=America/New_York 15 */6 1-7 * 1"


class FakeVertex:
    """Records requests; answers like Vertex AI's v1 REST API (pipeline jobs, schedules) and
    GCS's JSON API for what `PipelineJob.submit` does first: it looks the root's bucket up
    and, absent, creates it and grants the run's service account access. (An existing
    bucket would make it ask the Resource Manager API, over gRPC, for the project number.)"""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(_JsonReplies):

            def do_GET(self):
                path = self.path.split("?")[0]
                outer.requests.append(("GET", path, None))
                if path.startswith("/storage/v1/b/") and path.endswith("/iam"):
                    return self._reply({"bindings": [], "etag": "CAE="})
                return self._reply({"error": {"code": 404, "message": "not found"}}, 404)

            def do_PUT(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append(("PUT", self.path.split("?")[0], body))
                return self._reply(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?")[0]
                outer.requests.append(("POST", path, body))
                if path == "/storage/v1/b":
                    return self._reply({"name": body["name"]})
                if path.endswith("/pipelineJobs"):
                    return self._reply({**body, "name": f"{path[4:]}/job-1"})
                if path.endswith("/schedules"):
                    return self._reply({**body, "name": f"{path[4:]}/schedule-1"})
                return self._reply({"error": {"code": 404, "message": "not found"}}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self, suffix):
        return [body for method, p, body in self.requests
                if method == "POST" and p.endswith(suffix)]


@pytest.fixture
def vertex_server(monkeypatch):
    """Points the aiplatform SDK (REST transport, anonymous) and GCS at a FakeVertex."""
    from google.cloud.aiplatform import initializer
    server = FakeVertex()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    monkeypatch.setattr(initializer, "global_config", initializer._Config())
    initializer.global_config.init(api_endpoint=server.url, api_transport="rest",
                                   credentials=AnonymousCredentials())
    yield server
    server.server.shutdown()


def test_cli_vertex_runs_and_schedules_default_to_the_configs_service_account(
        vertex_server, packages, tmp_path, capsys):
    account = "pipelines@my-proj.iam.gserviceaccount.com"
    config = tmp_path / "imgpipe.yaml"
    config.write_text(yaml.safe_dump({"data_root": "gs://bucket/flowers",
                                      "service_account": account}), encoding="utf-8")
    vertex = ["--target", "vertex", "--project", "my-proj", "--region", "us-central1",
              "--package", packages[targets.VERTEX]]
    assert cli.main(["submit", *vertex, "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "imgpipe: vertex run created: projects/my-proj/locations/us-central1/pipelineJobs/job-1"
    assert cli.main(["schedule", *vertex, "--config", str(config), "--cron", "0 3 * * 7",
                     "--name", "weekly"]) == 0
    assert cli.main(["submit", *vertex, "--config", str(config),
                     "--service-account", "other@my-proj.iam.gserviceaccount.com"]) == 0
    # No config: no account is sent, and Vertex uses the project's default.
    assert cli.main(["schedule", *vertex, "--cron", "0 3 * * *", "--name", "daily"]) == 0
    jobs = vertex_server.posts("/pipelineJobs")
    weekly, daily = vertex_server.posts("/schedules")
    assert [job.get("serviceAccount") for job in jobs] == \
        [account, "other@my-proj.iam.gserviceaccount.com"]
    assert weekly["createPipelineJobRequest"]["pipelineJob"]["serviceAccount"] == account
    assert weekly["cron"] == "0 3 * * 7"  # day of week 7 is sent to Vertex as written
    assert "serviceAccount" not in daily["createPipelineJobRequest"]["pipelineJob"]
    with open(packages[targets.VERTEX], encoding="utf-8") as f:
        labels = json.load(f)["labels"]
    assert all(job["labels"] == labels for job in jobs)
    assert all(job["runtimeConfig"]["gcsOutputDirectory"] ==
               "gs://bucket/imgpipe/pipeline_root" for job in jobs)
