"""``submit`` against an HTTP server on 127.0.0.1 that answers the Kubeflow Pipelines v2beta1 API's requests
(healthz, experiments, runs) the way the API server does, and records them: what a cluster would receive.

No cluster runs here, so what the pods then do is not tested; what is sent is, with kfp's own client.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from .conftest import run_cli

# in a bucket of the moto server: submit checks an object-store output it can list (here: an empty one)
DATA, OUTPUT = "s3://itf-submit/tiny-imagenet-200", "s3://itf-submit/records"


class FakeApi(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def _answer(self, body: dict, code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        url = urlparse(self.path)
        seen = {
            "method": self.command,
            "path": url.path,
            "query": parse_qs(url.query),
            "authorization": self.headers.get("Authorization"),
            "body": json.loads(self.rfile.read(length)) if length else None,
        }
        self.requests.append(seen)
        return seen

    def do_GET(self):  # noqa: N802 (http.server's naming)
        seen = self._record()
        if seen["path"] == "/apis/v2beta1/healthz":
            self._answer({"multi_user": False})
        elif seen["path"] == "/apis/v2beta1/experiments":
            self._answer({"experiments": [], "total_size": 0})
        else:
            self._answer({"error": "not found", "code": 5}, 404)

    def do_POST(self):  # noqa: N802
        seen = self._record()
        body = seen["body"] or {}
        if seen["path"] == "/apis/v2beta1/experiments":
            self._answer({"experiment_id": "exp-1", "display_name": body.get("display_name"), **body})
        elif seen["path"] == "/apis/v2beta1/runs":
            self._answer({**body, "run_id": "run-42", "state": "PENDING"})
        else:
            self._answer({"error": "not found", "code": 5}, 404)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def bucket(store_env, s3_server):
    import botocore.exceptions

    from .test_object_stores import S3Bucket

    try:
        S3Bucket(s3_server, "itf-submit")
    except botocore.exceptions.ClientError as e:  # made by an earlier test
        assert "BucketAlreadyOwnedByYou" in str(e), e


@pytest.fixture()
def api():
    FakeApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeApi.requests
    server.shutdown()
    server.server_close()


def _home_with_kfp_context(tmp_path, namespace: str) -> dict:
    (tmp_path / ".config" / "kfp").mkdir(parents=True)
    (tmp_path / ".config" / "kfp" / "context.json").write_text(json.dumps({"namespace": namespace}))
    return {"HOME": str(tmp_path)}


def _images(run: dict) -> set[str]:
    executors = run["pipeline_spec"]["deploymentSpec"]["executors"]
    return {e["container"]["image"] for e in executors.values()}


def test_submit_sends_the_run_with_image_token_service_account_and_the_clients_namespace(api, tmp_path):
    host, requests = api
    env = _home_with_kfp_context(tmp_path, "team-a")
    image = "registry.example.com/ml/imagenet-tfrecords@sha256:" + "ab" * 32
    args = ["--host", host, "--data", DATA, "--output", OUTPUT, "--image", image, "--token", "t0ken"]
    p = run_cli("submit", *args, "--service-account", "itf-runner", "--max-tasks", "8", env=env)
    assert p.stdout.strip().splitlines()[-1] == (
        f"submitted run run-42 (image {image}): {host}/#/runs/details/run-42"
    ), p.stdout
    (experiment,) = [r for r in requests if r["method"] == "POST" and r["path"].endswith("/experiments")]
    assert experiment["body"]["namespace"] == "team-a"  # the kfp client's own configuration
    (run,) = [r for r in requests if r["path"] == "/apis/v2beta1/runs"]
    assert all(r["authorization"] == "Bearer t0ken" for r in requests), {r["authorization"] for r in requests}
    body = run["body"]
    assert body["service_account"] == "itf-runner"
    assert body["experiment_id"] == "exp-1"
    assert _images(body) == {image}
    params = body["runtime_config"]["parameters"]
    assert (params["data_url"], params["output_url"], params["max_tasks"]) == (DATA, OUTPUT, 8)


def test_an_explicit_namespace_wins_and_the_image_defaults_to_the_variable(api, tmp_path):
    host, requests = api
    env = {**_home_with_kfp_context(tmp_path, "team-a"), "IMAGENET_TFRECORDS_IMAGE": "registry.example/itf:dev"}
    p = run_cli("submit", "--host", host, "--data", DATA, "--output", OUTPUT, "--namespace", "team-b", env=env)
    assert "(image registry.example/itf:dev)" in p.stdout
    (experiment,) = [r for r in requests if r["method"] == "POST" and r["path"].endswith("/experiments")]
    assert experiment["body"]["namespace"] == "team-b"
    (run,) = [r for r in requests if r["path"] == "/apis/v2beta1/runs"]
    assert _images(run["body"]) == {"registry.example/itf:dev"}
    assert "service_account" not in run["body"] or not run["body"]["service_account"]


@pytest.mark.parametrize("which", ["--data", "--output"])
def test_local_paths_are_refused_unless_mounted(api, which, sample_dir, tmp_path):
    host, requests = api
    local = str(tmp_path / "here")
    urls = {"--data": DATA, "--output": OUTPUT, which: local if which == "--output" else str(sample_dir)}
    args = ["submit", "--host", host, "--data", urls["--data"], "--output", urls["--output"]]
    p = run_cli(*args, check=False, env=_home_with_kfp_context(tmp_path, ""))
    assert p.returncode == 2
    assert f"error: {which} {urls[which]}: a local path, which the cluster's pods cannot see" in p.stderr
    assert requests == []  # refused before anything is sent
    p = run_cli(*args, "--mounted", check=False, env=_home_with_kfp_context(tmp_path / "again", ""))
    assert p.returncode == 0, p.stderr
    (run,) = [r for r in requests if r["path"] == "/apis/v2beta1/runs"]
    assert run["body"]["runtime_config"]["parameters"][which.lstrip("-") + "_url"] == urls[which]


def test_the_token_from_the_environment_is_sent_and_never_printed(api, tmp_path):
    host, requests = api
    env = {**_home_with_kfp_context(tmp_path, ""), "KF_PIPELINES_ENDPOINT": host, "KF_PIPELINES_TOKEN": "s3cr3t-t0ken"}
    help_text = run_cli("submit", "--help", env=env).stdout
    p = run_cli("submit", "--data", DATA, "--output", OUTPUT, "-v", env=env)
    assert {r["authorization"] for r in requests} == {"Bearer s3cr3t-t0ken"}
    assert "s3cr3t-t0ken" not in help_text + p.stdout + p.stderr


def test_without_a_host_submit_says_which_variable_sets_it(tmp_path):
    env = {**_home_with_kfp_context(tmp_path, ""), "KF_PIPELINES_ENDPOINT": ""}
    p = run_cli("submit", "--data", DATA, "--output", OUTPUT, check=False, env=env)
    assert p.returncode == 2 and "--host is required (or set KF_PIPELINES_ENDPOINT)" in p.stderr


def test_compile_writes_the_image_given_into_every_step(tmp_path):
    import yaml

    image = "registry.example.com/ml/imagenet-tfrecords@sha256:" + "cd" * 32
    p = run_cli("compile", "--output", tmp_path / "p.yaml", "--image", image, "--parallelism", "4")
    assert f"(image {image})" in p.stdout
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert _images({"pipeline_spec": spec}) == {image}
    assert len(spec["deploymentSpec"]["executors"]) == 3
