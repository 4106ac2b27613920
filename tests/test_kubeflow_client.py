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
from google.auth.credentials import AnonymousCredentials

from kubeflow import client, compiler, targets
from pipeline import cli
from pipeline.config import load_config


class FakeKfp:
    """Records requests; answers like KFP's API server for the endpoints kfp.Client uses."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _reply(self, body, status=200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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


def test_vertex_schedule_cron_keeps_five_fields_and_time_zone():
    assert targets.cron(targets.VERTEX, "0 3 * * *", "Europe/Berlin") == \
        "TZ=Europe/Berlin 0 3 * * *"
    assert targets.cron(targets.VERTEX, "TZ=America/New_York 15 */6 1-7 * 1") == \
        "TZ=America/New_York 15 */6 1-7 * 1"
