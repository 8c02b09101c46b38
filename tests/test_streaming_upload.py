"""Shards stream to gs:// and s3:// (multipart / resumable uploads): nothing is staged on local disk.

A conversion task runs with its temporary folder (TMPDIR) on a tmpfs of a quarter of one shard: it
succeeds on both emulators and its shards are byte-identical to a local run's. An upload that is
interrupted never shows: the object appears only when the upload is committed (see
test_fencing.py for a lost fence, and below for an error in the middle of a shard).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from imagenet_tfrecords.fs import Location, publish
from imagenet_tfrecords.sample import write_sample

from .conftest import run_cli
from .test_object_stores import GcsBucket, S3Bucket, download, upload

SIZE = 320  # pixels a side: a seed record of ~300 KB
PER_CLASS = 40  # one class a train shard: ~12 MB, over the 8 MiB upload part
SHARD_FILES = (".tfrecord", ".tfrecord.idx")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("streaming-data")
    write_sample(str(d), classes=2, train_per_class=PER_CLASS, val=4, test=2, size=SIZE)
    return d


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("streaming-local")
    run_cli("convert", "--data", data, "--output", out, "--train-order", "per-class", "--workers", "2")
    return out


@pytest.fixture()
def small_tmp(tmp_path, local_run):
    """A tmpfs of a quarter of the largest shard, unmounted afterwards (skipped where mount is not allowed)."""
    largest = max(p.stat().st_size for p in (local_run / "train").glob("*.tfrecord"))
    where = tmp_path / "tmpfs"
    where.mkdir()
    size = largest // 4
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {p.stderr.decode().strip()}")
    try:
        yield where, size, largest
    finally:
        subprocess.run(["umount", str(where)], check=False)


_TASK = """
import sys, tempfile
from imagenet_tfrecords.tasks import convert_step
plan, out, manifest = sys.argv[1:]
print("tmp", tempfile.gettempdir())
print(convert_step(plan, 0, manifest))
"""


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_a_conversion_task_with_a_quarter_shard_of_local_disk_writes_the_local_runs_bytes(
    scheme, data, local_run, small_tmp, store_env, gcs_server, s3_server, tmp_path
):
    from imagenet_tfrecords.tasks import aggregate_step, plan_step

    tmpfs, size, largest = small_tmp
    name = f"it-{uuid.uuid4().hex[:12]}"
    bucket = GcsBucket(gcs_server, name) if scheme == "gs" else S3Bucket(s3_server, name)
    upload(data, bucket, "in")
    data_url, out = f"{scheme}://{name}/in", f"{scheme}://{name}/out"
    work = tmp_path / "work"
    plan = work / "plan.json"
    plan_step(data_url, out, 500, 1, str(plan), str(work / "labels.txt"), train_order="per-class", workers=2)
    p = subprocess.run(
        [sys.executable, "-c", _TASK, str(plan), out, str(work / "manifest.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmpfs)},
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    assert f"tmp {tmpfs}" in p.stdout
    print(f"{scheme}: a task wrote shards of up to {largest:,} bytes with a TMPDIR of {size:,} bytes")
    tasks = [eval(p.stdout.strip().splitlines()[-1])]  # noqa: S307 - the step's own printed dict
    aggregate_step(str(plan), tasks, str(work / "ds"), str(work / "s"), str(work / "r"))
    got = tmp_path / "got"
    names = download(bucket, "out", got)
    shards = sorted(n for n in names if n.endswith(SHARD_FILES))
    local = sorted(p.relative_to(local_run).as_posix() for p in local_run.rglob("*") if p.name.endswith(SHARD_FILES))
    assert shards == local
    assert sum(n.startswith("train/") for n in shards) == 4
    for n in [*shards, "sizes.txt", "labels.txt"]:
        assert (got / n).read_bytes() == (local_run / n).read_bytes(), f"{scheme}: {n} differs from the local run's"
    assert json.loads(Path(work / "manifest.json").read_text())["shards"]


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_an_upload_interrupted_mid_shard_leaves_nothing(scheme, store_env, gcs_server, s3_server, caplog):
    name = f"it-{uuid.uuid4().hex[:12]}"
    bucket = GcsBucket(gcs_server, name) if scheme == "gs" else S3Bucket(s3_server, name)
    dest = Location.of(f"{scheme}://{name}/out/train/train-00000-of-00001.tfrecord")
    with pytest.raises(RuntimeError, match="a worker fails"), publish(dest) as f:
        f.write(os.urandom(20 << 20))  # parts already uploaded
        raise RuntimeError("a worker fails mid-shard")
    assert bucket.keys("out/") == []
    # the abort is best-effort and quiet: gcsfs logs GCS's answer to a cancel (499) with its traceback
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    if scheme == "s3":
        assert "Uploads" not in bucket.client.list_multipart_uploads(Bucket=name), "the upload was not aborted"
