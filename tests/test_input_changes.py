"""A re-run after the data changed equals a fresh conversion of the changed data.

A shard is resumed only when its input files (names, sizes, change stamps: modification and
change times on local disks, the object generation on GCS) are the ones it was made from. One
image added to a train class (the shard of its path hash, the train shards being mixed), one val
image removed and one test image replaced: after the re-run, every file of the output equals a
fresh conversion's, and the shards nobody touched were kept, not written again.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .conftest import run_cli
from .test_object_stores import GcsBucket, _stable, download, upload

SHARD_SIZE = 16
TRAIN_SHARDS = 8  # mixed: a file goes to the shard of its path hash, so adding one changes one shard
CHANGED = {"add": "train", "remove": "val", "replace": "test"}


def _change(kind: str, data: Path, put, delete) -> None:
    """Apply one change through ``put(rel, bytes)`` / ``delete(rel)``; data is the local original."""
    if kind == "add":
        first = sorted((data / "train").iterdir())[0]
        other = sorted((data / "train").iterdir())[1]
        donor = sorted((other / "images").iterdir())[0]
        put(f"train/{first.name}/images/{first.name}_new.JPEG", donor.read_bytes())
    elif kind == "remove":
        delete("val/images/val_3.JPEG")
    else:
        put("test/images/test_2.JPEG", (data / "test" / "images" / "test_5.JPEG").read_bytes())


def _output(root: Path) -> dict:
    """Every file of an output, dataset_info.json without timings and locations, no report."""
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() or rel == "report.html":
            continue
        files[rel] = _stable(json.loads(p.read_bytes())) if p.suffix == ".json" else p.read_bytes()
    return files


def _convert(data: str, out: str) -> str:
    args = ("--shard-size", SHARD_SIZE, "--train-shards", TRAIN_SHARDS, "--workers", "2")
    return run_cli("convert", "--data", data, "--output", out, *args).stdout


def _mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.tfrecord")}


@pytest.mark.parametrize("kind", CHANGED)
def test_local_rerun_after_a_change_equals_a_fresh_conversion(kind, sample_copy, tmp_path):
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    _convert(str(sample_copy), str(out))
    before = _mtimes(out)

    def put(rel, data):
        (sample_copy / rel).write_bytes(data)

    _change(kind, sample_copy, put, lambda rel: (sample_copy / rel).unlink())
    _convert(str(sample_copy), str(out))
    _convert(str(sample_copy), str(fresh))
    assert _output(out) == _output(fresh)
    after = _mtimes(out)
    rewritten = {f for f in before if after.get(f) != before[f]}
    assert rewritten and {f.split("/")[0] for f in rewritten} == {CHANGED[kind]}, rewritten
    assert len(rewritten) < len(before) / 4  # the other shards were resumed


def test_local_replacement_that_keeps_size_and_modification_time_is_seen(sample_copy, tmp_path):
    """cp -p style: same size, same mtime, other pixels. The change time still differs."""
    import os

    out, fresh = tmp_path / "out", tmp_path / "fresh"
    _convert(str(sample_copy), str(out))
    target = sample_copy / "test" / "images" / "test_2.JPEG"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF  # inside the entropy-coded data, before the EOI marker
    st = target.stat()
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    _convert(str(sample_copy), str(out))
    _convert(str(sample_copy), str(fresh))
    assert _output(out) == _output(fresh)


@pytest.mark.slow
@pytest.mark.parametrize("kind", CHANGED)
def test_gcs_rerun_after_a_change_equals_a_fresh_conversion(kind, sample_dir, store_env, gcs_server, tmp_path):
    bucket = GcsBucket(gcs_server, f"ch-{uuid.uuid4().hex[:12]}")
    upload(sample_dir, bucket, "data")
    data, out, fresh = (f"gs://{bucket.name}/{p}" for p in ("data", "out", "fresh"))
    _convert(data, out)

    def delete(rel):
        bucket.bucket.blob(f"data/{rel}").delete()

    _change(kind, sample_dir, lambda rel, b: bucket.put(f"data/{rel}", b), delete)
    _convert(data, out)
    _convert(data, fresh)
    download(bucket, "out", tmp_path / "out")
    download(bucket, "fresh", tmp_path / "fresh")
    assert _output(tmp_path / "out") == _output(tmp_path / "fresh")
