"""A kfp client that tells the truth about what answered: the Kubeflow Pipelines API, or something else.

A multi-user Kubeflow answers a missing or expired session with a redirect to its login page (``302``
to ``/dex/auth``, then ``200 text/html``), which kfp's generated client reads as an empty answer; a
401, 403 or a wrong path makes it retry its health check for half a minute with a traceback each time;
a host that accepts the connection and never answers makes it wait for ever. ``Client`` is kfp's
client with one attempt at its health check, every request bounded by ``timeout`` seconds, redirects
not followed, and every answer checked: anything but the API's JSON raises ``ApiAnswerError``, one
line naming what came back and what to check (``--host``, ``--token``, the namespace).
"""

from __future__ import annotations

import json

import kfp_server_api
import urllib3
from kfp.client import Client as KfpClient

HEALTHZ = "/apis/v2beta1/healthz"
DEFAULT_TIMEOUT = 30.0  # seconds for each answer of the API


class ApiAnswerError(Exception):
    """What answered is not the Kubeflow Pipelines API, or nothing answered in time (one line)."""


def _path(url: str, host: str) -> str:
    return url[len(host) :] if url.startswith(host) else url


def _header(headers, name: str) -> str:
    if not headers:
        return ""
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return value
    return ""


def describe(host: str, method: str, url: str, status: int, reason: str, headers, timeout: float) -> str:
    """The one line for an answer that is not the API's (``status`` 0: no answer)."""
    where = f"--host {host}: {method} {_path(url, host)}"
    if status in (301, 302, 303, 307, 308):
        location = _header(headers, "Location")
        login = any(word in location.lower() for word in ("dex", "auth", "login", "oauth", "signin"))
        what = "a login page: the session is missing or expired" if login else "not the API"
        return (
            f"{where} answered {status}, a redirect to {location or '(nowhere)'} ({what}); give a token with "
            "--token (or KF_PIPELINES_TOKEN), or check --host: the API's address, e.g. http://localhost:8080"
        )
    if status == 401:
        return (
            f"{where} answered 401 {reason or 'Unauthorized'}: the API wants credentials; check --token "
            "(or KF_PIPELINES_TOKEN): missing, expired or for another cluster"
        )
    if status == 403:
        return (
            f"{where} answered 403 {reason or 'Forbidden'}: the credentials are not allowed there; check --token "
            "and --namespace (your profile's namespace, which the token's user must be a contributor of)"
        )
    if status == 404:
        return (
            f"{where} answered 404 {reason or 'Not Found'}: no Kubeflow Pipelines API at this address; check "
            "--host (the API's base URL, path included: e.g. https://kubeflow.example.com/pipeline)"
        )
    return f"{where} answered {status} {reason}: not the Kubeflow Pipelines API's answer; check --host and --token"


class _Checked:
    """kfp_server_api's REST client's ``request`` (which its GET, POST... call), each request bounded by
    ``timeout`` and its answer checked."""

    def __init__(self, request, host: str, timeout: float):
        self.real, self.host, self.timeout = request, host, timeout

    def __call__(self, method, url, *args, **kw):
        kw["_request_timeout"] = kw.get("_request_timeout") or (self.timeout, self.timeout)
        try:
            r = self.real(method, url, *args, **kw)
        except kfp_server_api.ApiException as e:
            if not e.status:  # (TLS: the client's own words)
                raise ApiAnswerError(f"--host {self.host}: {e.reason}".replace("\n", " ").strip()) from None
            raise ApiAnswerError(
                describe(self.host, method, url, e.status, e.reason, e.headers, self.timeout)
            ) from None
        except urllib3.exceptions.HTTPError as e:
            raise ApiAnswerError(self._unreachable(method, url, e)) from None
        kind = (r.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            what = "an HTML page (a login page or the UI)" if "html" in kind else f"{kind or 'no content type'}"
            raise ApiAnswerError(
                f"--host {self.host}: {method} {_path(url, self.host)} answered {r.status} with {what}, not the "
                "Kubeflow Pipelines API's JSON; check --host (the API's address) and --token"
            )
        try:
            json.loads(r.data or b"{}")
        except ValueError:
            raise ApiAnswerError(
                f"--host {self.host}: {method} {_path(url, self.host)} answered {r.status} with text that is not "
                "JSON; check --host"
            ) from None
        return r

    def _unreachable(self, method: str, url: str, e: Exception) -> str:
        reason = getattr(e, "reason", None) or e
        refused = isinstance(reason, urllib3.exceptions.NewConnectionError)  # (a ConnectTimeoutError subclass)
        if not refused and (
            isinstance(reason, urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ConnectTimeoutError)
            or "timed out" in str(reason)
        ):
            return (
                f"--host {self.host}: no answer to {method} {_path(url, self.host)} within {self.timeout:g} s "
                "(--timeout); check --host, and that the API is reachable from here (a port-forward, a proxy)"
            )
        text = str(reason).rsplit(": ", 1)[-1].strip(" ')\"")
        return f"--host {self.host}: cannot reach the Kubeflow Pipelines API ({text}); check --host"


class Client(KfpClient):
    """kfp.Client whose requests are each bounded by ``timeout`` seconds, not retried, redirects not
    followed, and whose answers are checked (see the module's doc): ApiAnswerError otherwise."""

    def __init__(self, host: str, timeout: float = DEFAULT_TIMEOUT, **kw):
        self._host, self._timeout = host.rstrip("/"), float(timeout)
        super().__init__(host=host, **kw)
        self._checked()

    def _load_config(self, *args, **kw):
        config = super()._load_config(*args, **kw)
        # one attempt at connecting and reading; a redirect is returned, not followed (it is checked)
        config.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0, raise_on_redirect=False)
        return config

    def _checked(self) -> None:
        rest = self._healthz_api.api_client.rest_client  # (one, shared by every API of the client)
        if not isinstance(rest.request, _Checked):
            rest.request = _Checked(rest.request, self._host, self._timeout)

    def get_kfp_healthz(self, sleep_duration: int = 5):
        """One attempt (kfp's retries five times, five seconds apart, a traceback each time)."""
        self._checked()
        return self._healthz_api.healthz_service_get_healthz()
