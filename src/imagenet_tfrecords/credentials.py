"""Whether credentials are configured for an object store URL, found in a second or two.

``check_access`` runs before any gs:// or s3:// URL is touched, so that missing credentials are
named with what to set, rather than left to the clients' probing of cloud metadata servers, their
tracebacks, and "not found" for a bucket they could not read.
"""

from __future__ import annotations

import os

from .fs import NoCredentialsError

_GS_HELP = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service account's key file, run 'gcloud auth application-default "
    "login', or run on Google Cloud with a service account (FSSPEC_GS_TOKEN=anon for a public bucket)"
)
_S3_HELP = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile of ~/.aws/credentials, "
    "or run with an IAM role (FSSPEC_S3_ANON=true for a public bucket)"
)


def check_access(url: str) -> None:
    """NoCredentialsError, in a second or two, when ``url`` is on GCS or S3 and no credentials are
    configured for it (rather than the clients' own probing of cloud metadata servers, their
    tracebacks, and "not found" for a bucket they could not read). Other URLs pass."""
    protocol, _, rest = str(url).partition("://")
    if not rest:
        return
    if protocol.lower() in _CREDENTIALS_FOUND:
        return
    problem = _credentials_problem(protocol.lower())
    if not problem:
        _CREDENTIALS_FOUND.add(protocol.lower())
    else:
        bucket = rest.split("/", 1)[0]
        raise NoCredentialsError(f"no credentials for {protocol}://{bucket}: {problem}")


_CREDENTIALS_FOUND: set[str] = set()  # protocols checked once in this process (a missing one: every time)


def _credentials_problem(protocol: str) -> str | None:
    """What is missing for ``protocol`` (gs, gcs, s3, s3a), or None: credentials were found (or the
    filesystem is configured anonymous, or an emulator is named)."""
    import fsspec.config

    conf = {**fsspec.config.conf.get("gcs", {}), **fsspec.config.conf.get("gs", {})}
    if protocol in ("gs", "gcs"):
        if os.environ.get("STORAGE_EMULATOR_HOST") or conf.get("token"):
            return None
        key = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if key:
            return None if os.path.isfile(key) else f"GOOGLE_APPLICATION_CREDENTIALS names {key}, no such file"
        config = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "gcloud")
        if os.path.isfile(os.path.join(config, "application_default_credentials.json")) or _on_gce():
            return None
        return _GS_HELP
    if protocol in ("s3", "s3a"):
        conf = {**fsspec.config.conf.get("s3", {}), **fsspec.config.conf.get(protocol, {})}
        if conf.get("anon") in (True, "true", "True", "1") or conf.get("key") or os.environ.get("AWS_ACCESS_KEY_ID"):
            return None
        try:
            import botocore.session

            found = botocore.session.get_session().get_credentials()
        except ImportError:
            return None  # (s3fs is not installed: fsspec says so)
        except Exception as e:  # a broken config file: botocore's own words
            return f"{type(e).__name__}: {e}"
        return None if found is not None else _S3_HELP
    return None


def _on_gce() -> bool:
    """Whether a Google Cloud metadata server answers (one request, 1 s at most), as google-auth
    would find it; never asked when NO_GCE_CHECK is set."""
    if os.environ.get("NO_GCE_CHECK", "").lower() in ("1", "true", "yes"):
        return False
    import urllib.request

    host = os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_IP") or "169.254.169.254"
    request = urllib.request.Request(f"http://{host}/computeMetadata/v1/", headers={"Metadata-Flavor": "Google"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=1) as r:
            return r.headers.get("Metadata-Flavor") == "Google"
    except OSError:
        return False
