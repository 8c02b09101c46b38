"""gs:// and s3:// end to end, against real servers on 127.0.0.1.

A GCS emulator and moto's S3 server run as subprocesses for the session. The sample dataset is
uploaded with an independent client (google-cloud-storage, boto3), the CLI converts it bucket
to bucket (``convert``, and the whole kfp.local pipeline with ``run``), and the output is
downloaded, read back with TensorFlow's reader and compared byte for byte with a local
conversion of the same files.

The CLI gets its configuration only from the standard environment: STORAGE_EMULATOR_HOST for
GCS (plus FSSPEC_GS_TOKEN=anon, fsspec's own config variable, because the emulator has no
auth, and GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false, because it has no gRPC storage-control
API), AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3. moto checks every
S3 request's signature against a key it generated, and that key's secret must show up
nowhere: not in any object written, not in the CLI's output, not in kfp.local's artifacts.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from imagenet_tfrecords.sample import write_sample

from .conftest import REGION, read_records, read_split, run_cli
from .servers import ServerProcess

SHARD_SIZE = 16  # the sample's 30 val and 20 test images make two shards each
TRAIN_SHARDS = 6  # mixed train shards
SPLITS = ("train", "val", "test")


# --- buckets through clients independent of the project's (gcsfs, s3fs) ---------------------


class GcsBucket:
    scheme = "gs"

    def __init__(self, server, name):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.client = storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": server.url}
        )
        self.name = name
        self.bucket = self.client.create_bucket(name)

    def put(self, key: str, data: bytes) -> None:
        self.bucket.blob(key).upload_from_string(data)

    def keys(self, prefix: str) -> list[str]:
        return sorted(b.name for b in self.client.list_blobs(self.name, prefix=prefix))

    def get(self, key: str) -> bytes:
        return self.bucket.blob(key).download_as_bytes()


class S3Bucket:
    scheme = "s3"

    def __init__(self, server, name):
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=server.url,
            region_name=REGION,
            aws_access_key_id=server.key_id,
            aws_secret_access_key=server.secret,
        )
        self.name = name
        self.client.create_bucket(Bucket=name)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


def _url(bucket, key: str) -> str:
    return f"{bucket.scheme}://{bucket.name}/{key}"


def upload(local: Path, bucket, prefix: str) -> int:
    files = [p for p in sorted(local.rglob("*")) if p.is_file()]
    for p in files:
        bucket.put(f"{prefix}/{p.relative_to(local).as_posix()}", p.read_bytes())
    return len(files)


def download(bucket, prefix: str, local: Path) -> list[str]:
    """Every object under prefix/ into local/; returns their names relative to prefix."""
    names = []
    for key in bucket.keys(prefix + "/"):
        rel = key[len(prefix) + 1 :]
        names.append(rel)
        dest = local / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(bucket.get(key))
    return names


@pytest.fixture(params=["gs", "s3"])
def bucket(request, store_env, gcs_server, s3_server):
    name = f"it-{uuid.uuid4().hex[:12]}"
    return GcsBucket(gcs_server, name) if request.param == "gs" else S3Bucket(s3_server, name)


# --- what a correct output looks like ---------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stable(value):
    """dataset_info without timings and without the URLs that name where it was made."""
    if isinstance(value, dict):
        return {
            k: _stable(v)
            for k, v in value.items()
            if not k.endswith("seconds") and k not in ("name", "source", "root", "run")
        }
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.fixture(scope="module")
def reference(sample_dir, tmp_path_factory) -> Path:
    """A local conversion of the sample dataset: what every bucket conversion must equal."""
    out = tmp_path_factory.mktemp("reference")
    run_cli(
        "convert", "--data", sample_dir, "--output", out, "--shard-size", SHARD_SIZE, "--train-shards", TRAIN_SHARDS
    )
    return out


def check_output(got: Path, names: list[str], reference: Path, data_url: str) -> dict:
    """The downloaded output equals the local reference and reads back with TensorFlow."""
    ref = _files(reference)
    # same objects (no temporary files left behind, no shard missing) ...
    assert sorted(names) == sorted(ref), f"objects differ from a local conversion: {sorted(set(names) ^ set(ref))}"
    mine = _files(got)
    # ... the same bytes in every shard and report ...
    shards = [n for n in ref if n.endswith(".tfrecord")]
    assert len(shards) == 10
    for name in [*shards, *(n + ".idx" for n in shards), "sizes.txt", "labels.txt", "rejects.tsv"]:
        assert mine[name] == ref[name], f"{name} differs from the local conversion"
    info = json.loads(mine["dataset_info.json"])
    assert _stable(info) == _stable(json.loads(ref["dataset_info.json"]))
    assert info["source"] == data_url
    # ... and TensorFlow's reader agrees with sizes.txt and dataset_info.json.
    sizes = dict(line.split(",") for line in mine["sizes.txt"].decode().splitlines())
    assert set(sizes) == set(SPLITS)
    for split in SPLITS:
        records = read_split(got, split)
        assert len(records) == int(sizes[split]) == info["splits"][split]["num_records"] > 0
        for shard in info["splits"][split]["shards"]:
            assert len(read_records(got / shard["file"])) == shard["records"], shard["file"]
        if split == "test":
            assert {int(r["label"]) for r in records} == {-1}
        else:
            assert all(0 <= int(r["label"]) < info["num_classes"] for r in records)
        for r in records:
            assert len(r["image_raw"]) == r["height"] * r["width"] * r["channel"]
    return info


def assert_no_secret(secret: str, blobs: dict[str, bytes | str]) -> None:
    assert len(secret) >= 16
    leaks = [
        where for where, blob in blobs.items() if secret in (blob if isinstance(blob, str) else blob.decode("latin-1"))
    ]
    assert not leaks, f"the secret access key appears in {leaks}"


def _tree(root: Path) -> dict[str, bytes]:
    return {f"{root.name}/{k}": v for k, v in _files(root).items()}


# --- the tests --------------------------------------------------------------------------------


def test_convert_bucket_to_bucket(bucket, sample_dir, reference, tmp_path, store_env):
    assert upload(sample_dir, bucket, "tiny") == 131
    data, out = _url(bucket, "tiny"), _url(bucket, "records")
    p = run_cli(
        "convert",
        "--data",
        data,
        "--output",
        out,
        "--shard-size",
        SHARD_SIZE,
        "--train-shards",
        TRAIN_SHARDS,
        "--workers",
        2,
    )
    assert "train: 72 records in 6 shards" in p.stdout

    got = tmp_path / "got"
    names = download(bucket, "records", got)
    check_output(got, names, reference, data)

    # the reader takes the bucket URL too: verify reads every shard with tf.data through fsspec
    v = run_cli("verify", out)
    assert v.stdout.splitlines()[:3] == ["train,72", "val,30", "test,20"], v.stdout
    assert_no_secret(
        store_env["AWS_SECRET_ACCESS_KEY"],
        {"stdout": p.stdout + v.stdout, "stderr": p.stderr + v.stderr, **_tree(got), "object names": "\n".join(names)},
    )


@pytest.mark.slow
def test_kubeflow_pipeline_bucket_to_bucket(bucket, sample_dir, reference, tmp_path, store_env):
    upload(sample_dir, bucket, "tiny")
    data, out = _url(bucket, "tiny"), _url(bucket, "records")
    root = tmp_path / "pipeline-root"
    p = run_cli(
        "run",
        "--data",
        data,
        "--output",
        out,
        "--shard-size",
        SHARD_SIZE,
        "--train-shards",
        TRAIN_SHARDS,
        "--pipeline-root",
        root,
        "--workers",
        1,
    )
    got = tmp_path / "got"
    names = download(bucket, "records", got)
    # kfp.local's log, with the tasks' own logs, is written beside the data (the secret check below covers it)
    names.remove("_work/kfp-local.log")
    logs = (got / "_work" / "kfp-local.log").read_text()
    for task in ("parse-metadata", "convert-shards", "aggregate-stats"):
        assert task in logs, f"no log of the {task} task in kfp-local.log"
    assert data in logs  # kfp.local prints each task's inputs
    (got / "_work" / "kfp-local.log").unlink()
    info = check_output(got, names, reference, data)
    assert info["root"] == out
    assert_no_secret(
        store_env["AWS_SECRET_ACCESS_KEY"],
        {
            "stdout": p.stdout,
            "stderr": p.stderr,
            "log": logs,
            **_tree(got),
            **_tree(root),
            "object names": "\n".join(names),
        },
    )


def test_shards_above_the_single_request_upload_size(store_env, gcs_server, s3_server, tmp_path):
    """A train shard over 5 MiB: gcsfs switches to a resumable (multi-request) upload there."""
    data = tmp_path / "big"
    write_sample(str(data), classes=2, train_per_class=20, val=4, test=2, size=320)
    ref = tmp_path / "ref"
    run_cli("convert", "--data", data, "--output", ref, "--train-order", "per-class")
    big = [p for p in (ref / "train").glob("*.tfrecord") if p.stat().st_size > 5 * 2**20]
    assert len(big) == 2
    name = f"it-{uuid.uuid4().hex[:12]}"
    for bucket in (GcsBucket(gcs_server, name), S3Bucket(s3_server, name)):
        upload(data, bucket, "in")
        args = ("--workers", 2, "--train-order", "per-class")  # one class a shard: both over 5 MiB
        run_cli("convert", "--data", _url(bucket, "in"), "--output", _url(bucket, "out"), *args)
        got = tmp_path / bucket.scheme
        names = download(bucket, "out", got)
        assert sorted(names) == sorted(_files(ref))
        for p in big:
            rel = p.relative_to(ref).as_posix()
            assert (got / rel).read_bytes() == p.read_bytes(), f"{bucket.scheme}: {rel} differs"
            assert len(read_records(got / rel)) == 20


def test_wrong_secret_fails_clearly_and_writes_nothing(store_env, s3_server, sample_dir, monkeypatch, tmp_path):
    bucket = S3Bucket(s3_server, f"it-{uuid.uuid4().hex[:12]}")
    upload(sample_dir, bucket, "tiny")
    wrong = "W" + uuid.uuid4().hex + "rongSecret"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    p = run_cli("convert", "--data", _url(bucket, "tiny"), "--output", _url(bucket, "records"), check=False)
    assert p.returncode != 0
    assert "signature" in p.stderr.lower(), p.stderr
    assert bucket.keys("records/") == []
    assert_no_secret(wrong, {"stdout": p.stdout, "stderr": p.stderr})


def test_missing_dataset_in_a_bucket_names_the_url(bucket):
    missing = _url(bucket, "no-such-dataset")
    p = run_cli("convert", "--data", missing, "--output", _url(bucket, "records"), check=False)
    assert p.returncode == 3, p.stderr
    assert f"{missing}: dataset directory not found" in p.stderr
    assert bucket.keys("") == []


def test_a_server_that_cannot_start_fails_loudly(tmp_path):
    broken = ServerProcess("broken", [sys.executable, "-c", "import sys; sys.exit(7)"], "/", tmp_path)
    with pytest.raises(RuntimeError, match="exited with code 7"):
        broken.start(attempts=1)
