"""``submit`` against an HTTP server on 127.0.0.1 that answers the Kubeflow Pipelines v2beta1 API's requests
(healthz, experiments, runs) the way the API server does, and records them: what a cluster would receive.

No cluster runs here, so what the pods then do is not tested; what is sent is, with kfp's own client.
"""

import json
import os
import threading
import time
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


# --- answers that are not the API: each one line, exit 3, within seconds -------------------------


class NotTheApi(BaseHTTPRequestHandler):
    """What stands in front of the API when the session is missing or the address is wrong."""

    answer = "login"

    def _send(self, code: int, kind: str, text: str, **headers) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        if self.answer == "login":  # multi-user Kubeflow (oauth2-proxy / dex) without a session
            if self.path.startswith("/dex/auth"):
                self._send(200, "text/html; charset=utf-8", "<!DOCTYPE html><html><title>Log in</title></html>")
            else:
                self._send(302, "text/html", "", Location="/dex/auth?client_id=kubeflow-oidc-authservice")
        elif self.answer == "html":  # the UI's address instead of the API's
            self._send(200, "text/html; charset=utf-8", "<!DOCTYPE html><html><title>Kubeflow</title></html>")
        elif self.answer == "401":
            self._send(401, "text/plain", "Jwt is missing")
        elif self.answer == "403":
            self._send(403, "text/plain", "RBAC: access denied")
        else:
            self._send(404, "text/plain", "404 page not found")

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture()
def not_the_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotTheApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def silent_host():
    """A host that accepts connections and never answers; ``accepted`` is set at the first, ``held``
    lists every connection with when it was accepted."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted, held = threading.Event(), []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append((conn, time.monotonic()))
            accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted, held
    listener.close()
    for c, _ in held:
        c.close()


NOT_THE_API = {
    "login": (
        "GET /apis/v2beta1/healthz answered 302, a redirect to /dex/auth?client_id=kubeflow-oidc-authservice "
        "(a login page: the session is missing or expired); give a token with --token (or KF_PIPELINES_TOKEN), "
        "or check --host"
    ),
    "html": "GET /apis/v2beta1/healthz answered 200 with an HTML page (a login page or the UI), not the Kubeflow "
    "Pipelines API's JSON; check --host",
    "401": "GET /apis/v2beta1/healthz answered 401 Unauthorized: the API wants credentials; check --token",
    "403": "GET /apis/v2beta1/healthz answered 403 Forbidden: the credentials are not allowed there; check --token "
    "and --namespace",
    "404": "GET /apis/v2beta1/healthz answered 404 Not Found: no Kubeflow Pipelines API at this address; check --host",
}


@pytest.mark.parametrize("answer", list(NOT_THE_API))
def test_an_answer_that_is_not_the_api_is_one_line_and_exit_3_within_seconds(answer, not_the_api, tmp_path):
    NotTheApi.answer, NotTheApi.requests = answer, []
    p = run_cli(
        "submit",
        "--host",
        not_the_api,
        "--data",
        DATA,
        "--output",
        OUTPUT,
        "--timeout",
        "5",
        check=False,
        env=_home_with_kfp_context(tmp_path, ""),
    )
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --host {not_the_api}: "), p.stderr
    assert NOT_THE_API[answer] in lines[0], lines[0]
    assert "submitted" not in p.stdout
    # asked once, not retried (kfp's own health check asks five times, five seconds apart), redirect not followed
    assert NotTheApi.requests == ["/apis/v2beta1/healthz"]


def test_a_host_that_never_answers_is_given_up_after_the_timeout(silent_host, tmp_path):
    host, _, held = silent_host
    p = run_cli(
        "submit",
        "--host",
        host,
        "--data",
        DATA,
        "--output",
        OUTPUT,
        "--timeout",
        "2",
        check=False,
        env=_home_with_kfp_context(tmp_path, ""),
        timeout=120,
    )
    ended = time.monotonic()
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == [
        f"error: --host {host}: no answer to GET /apis/v2beta1/healthz within 2 s (--timeout); check --host, and "
        "that the API is reachable from here (a port-forward, a proxy)"
    ]
    assert len(held) == 1  # one request, not retried
    assert ended - held[0][1] < 2 + 8, ended - held[0][1]  # the timeout, then the message (a loaded machine)


@pytest.mark.parametrize("to", ["process", "another thread"])
def test_ctrl_c_while_waiting_for_the_host_says_what_may_have_happened(to, silent_host, tmp_path):
    """Linux hands a process's signal to any thread that does not block it: one taken by another
    thread (here the S3 check's event loop) only flags Python's main thread, blocked in the socket,
    which waited for the whole --timeout before the command noticed."""
    import signal
    import subprocess

    from .conftest import CLI

    host, accepted, _ = silent_host
    env = {**os.environ, **_home_with_kfp_context(tmp_path, "")}
    args = ["submit", "--host", host, "--data", DATA, "--output", OUTPUT, "--timeout", "120"]
    p = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert accepted.wait(60), "submit never reached the host"
    target = p.pid
    if to == "another thread":
        others = [int(t) for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
        assert others, "submit has one thread"
        target = others[0]  # (kill() given a thread's id prefers that thread)
    os.kill(target, signal.SIGINT)
    _, stderr = p.communicate(timeout=30)
    assert p.returncode == 5, stderr
    assert stderr.strip().splitlines() == [
        f"error: interrupted while talking to {host}: the run may have been created; look at the runs of "
        "experiment imagenet-tfrecords before submitting again"
    ]
    assert "shards" not in stderr


def test_gcs_urls_without_credentials_here_are_left_to_the_plan_step(api, tmp_path):
    """This machine has no GCS credentials (the cluster's pods have theirs): one line, and the run goes."""
    host, requests = api
    env = {
        **_home_with_kfp_context(tmp_path, ""),
        "STORAGE_EMULATOR_HOST": "",
        "FSSPEC_GS_TOKEN": "",
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "CLOUDSDK_CONFIG": str(tmp_path / "no-gcloud"),
    }
    data, out = "gs://itf-nowhere/tiny-imagenet-200", "gs://itf-nowhere/records"
    p = run_cli("submit", "--host", host, "--data", data, "--output", out, "--image", "reg.example/itf:1", env=env)
    assert p.stderr.strip().splitlines() == [
        f"note: {data} is not checked here (no credentials for gs://itf-nowhere: set GOOGLE_APPLICATION_CREDENTIALS "
        "to a service account's key file, run 'gcloud auth application-default login', or run on Google Cloud "
        "with a service account (FSSPEC_GS_TOKEN=anon for a public bucket)); the plan step checks it on the cluster"
    ], p.stderr
    assert "submitted run run-42" in p.stdout
    (run,) = [r for r in requests if r["path"] == "/apis/v2beta1/runs"]
    assert run["body"]["runtime_config"]["parameters"]["data_url"] == data
