"""Killed conversions: no truncated shard is ever published, and the same command resumes to the same bytes.

The kill tests convert a dataset big enough (40 classes x 150 images) that a kill lands mid-way:
they wait until a few train shards are published, then SIGKILL one worker process or the whole
process group (or press Ctrl-C), check what is on disk at that moment, run the same command
again and compare with an uninterrupted run.
"""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imagenet_tfrecords import recordio, records
from imagenet_tfrecords.convert import Options, convert
from imagenet_tfrecords.layouts import build_plan
from imagenet_tfrecords.sample import write_sample

from .conftest import CLI, run_cli

TRAIN_SHARDS = 40
KILL_AFTER = 5  # published train shards


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    write_sample(str(d), classes=TRAIN_SHARDS, train_per_class=150, val=200, test=100)
    return d


@pytest.fixture(scope="module")
def reference(big, tmp_path_factory) -> Path:
    """The output of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    run_cli("convert", "--data", big, "--output", out, "--workers", "2", "--train-shards", TRAIN_SHARDS)
    return out


def _convert_cmd(data, out) -> list[str]:
    return [
        *CLI,
        "convert",
        "--data",
        str(data),
        "--output",
        str(out),
        "--workers",
        "2",
        "--train-shards",
        str(TRAIN_SHARDS),
    ]


def _start(data, out) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        _convert_cmd(data, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, so the test can kill all of it
        # a terminal's default: a shell that started these tests in the background may have left
        # SIGINT ignored, and an ignored signal stays ignored across exec
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_train_shards(out: Path, proc: subprocess.Popen, n: int = KILL_AFTER) -> None:
    deadline = time.monotonic() + 120
    while len(list((out / "train").glob("*.tfrecord"))) < n:
        if proc.poll() is not None:
            pytest.fail(f"the conversion ended (exit {proc.returncode}) before {n} train shards appeared")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {n} train shards after 120 s")
        time.sleep(0.001)


def _workers(pid: int) -> list[int]:
    """Child processes of ``pid`` that run the same command line (the forked pool workers)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                same = f.read() == cmdline
        except (OSError, ValueError):
            continue
        if ppid == pid and same:
            found.append(int(entry))
    return sorted(found)


def _tf_count(path: Path) -> int:
    """Records in a shard read with tf.data and parsed with the schema; image sizes checked."""
    import tensorflow as tf

    spec = records.feature_spec()
    n = 0
    for batch in tf.data.TFRecordDataset(str(path)).batch(1024):
        ex = tf.io.parse_example(batch, spec)
        pixels = tf.cast(ex["height"] * ex["width"] * ex["channel"], tf.int32)
        assert bool(tf.reduce_all(tf.strings.length(ex["image_raw"]) == pixels)), path
        n += int(tf.shape(batch)[0])
    return n


def _check_published(out: Path) -> dict[str, tuple[int, int]]:
    """Every shard under its final name parses fully and matches its statistics record.

    Returns (inode, mtime_ns) of the shards whose statistics were recorded, i.e. finished.
    """
    finished = {}
    for shard in sorted(out.rglob("*.tfrecord")):
        rel = shard.relative_to(out).as_posix()
        with open(shard, "rb") as f:
            count = sum(1 for _ in recordio.iter_records(f))  # framing and CRC32C of every record
        assert _tf_count(shard) == count, rel  # and TensorFlow's own reader and parser
        recorded = out / "_work" / f"{shard.name}.json"
        if recorded.exists():
            stats = json.loads(recorded.read_text())
            assert (stats["file"], stats["records"], stats["bytes"]) == (rel, count, shard.stat().st_size)
            st = shard.stat()
            finished[rel] = (st.st_ino, st.st_mtime_ns)
    return finished


def _strip_timings(value):
    if isinstance(value, dict):
        return {k: _strip_timings(v) for k, v in value.items() if k not in ("seconds", "run", "resumed", "root")}
    if isinstance(value, list):
        return [_strip_timings(v) for v in value]
    return value


def _tree(out: Path) -> dict:
    """Every file under the output root: JSON without timings, anything else by digest."""
    tree = {}
    for p in sorted(out.rglob("*")):
        if p.is_dir():
            continue
        rel = p.relative_to(out).as_posix()
        if rel == "report.html":  # shows the run's throughput
            continue
        if p.suffix == ".json":
            tree[rel] = _strip_timings(json.loads(p.read_text()))
        else:
            tree[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return tree


def _stamps(out: Path, files) -> dict[str, tuple[int, int]]:
    return {f: ((out / f).stat().st_ino, (out / f).stat().st_mtime_ns) for f in files}


def _resume_and_compare(big, out, reference, finished):
    p = run_cli("convert", "--data", big, "--output", out, "--workers", "2", "--train-shards", TRAIN_SHARDS)
    assert f"train: {TRAIN_SHARDS * 150} records in {TRAIN_SHARDS} shards" in p.stdout
    assert _stamps(out, finished) == finished, "a finished shard was written again"
    assert _tree(out) == _tree(reference)
    assert not list(out.rglob(".*.tmp")), "temporary files of the killed run are left"


def test_sigkill_of_the_whole_command_then_the_same_command_resumes(big, reference, tmp_path):
    out = tmp_path / "out"
    proc = _start(big, out)
    _wait_for_train_shards(out, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # nothing runs any more: this is what the kill left
    finished = _check_published(out)
    published = list((out / "train").glob("*.tfrecord"))
    assert finished and len(published) < TRAIN_SHARDS, "the kill did not land mid-way"
    assert not (out / "sizes.txt").exists()
    _resume_and_compare(big, out, reference, finished)


def test_sigkill_of_one_worker_fails_clearly_then_the_same_command_resumes(big, reference, tmp_path):
    out = tmp_path / "out"
    proc = _start(big, out)
    _wait_for_train_shards(out, proc)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    _check_published(out)  # while the rest of the pool may still be running
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 5, (stdout, stderr)
    assert "error: a worker process died abruptly (killed by a signal" in stderr
    assert "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    finished = _check_published(out)
    assert 0 < len(finished) < TRAIN_SHARDS, "the kill did not land mid-way"
    assert not (out / "sizes.txt").exists()
    _resume_and_compare(big, out, reference, finished)


def test_ctrl_c_stops_soon_keeps_finished_shards_and_the_same_command_resumes(big, reference, tmp_path):
    out = tmp_path / "out"
    proc = _start(big, out)
    _wait_for_train_shards(out, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 5, (stdout, stderr)
    assert "interrupted: finished shards are kept; run the same command again to resume" in stderr
    finished = _check_published(out)
    # the pool stops after the shards already handed to workers, not after every queued one
    assert len(list((out / "train").glob("*.tfrecord"))) < TRAIN_SHARDS // 2
    _resume_and_compare(big, out, reference, finished)


# Damaged output of an earlier run: every shard is checked against its statistics record
# (size, record count, CRC32C of every record, plan entry and options) before it is kept.


def _run(data, out, **options) -> list[dict]:
    plan = build_plan(str(data), shard_size=8, train_shards=6)
    shards = ((i, text) for i, (_, text) in enumerate(plan.shard_texts()))
    return convert(plan, shards, str(out), Options(**options), workers=1)


@pytest.mark.parametrize("where", ["length field", "image bytes", "last checksum"])
def test_a_flipped_byte_in_a_finished_shard_is_found_and_the_shard_rewritten(sample_dir, tmp_path, where):
    _run(sample_dir, tmp_path)
    before = _tree(tmp_path)
    victim = tmp_path / "train" / "train-00002-of-00006.tfrecord"
    data = bytearray(victim.read_bytes())
    offset = {"length field": 3, "image bytes": len(data) // 2, "last checksum": len(data) - 1}[where]
    data[offset] ^= 0x01
    victim.write_bytes(bytes(data))  # same size, same record count when framing is read without CRCs
    with open(victim, "rb") as f, pytest.raises(recordio.CorruptShard):
        recordio.count_records(f)
    others = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.tfrecord") if p != victim]
    stamps = _stamps(tmp_path, others)
    results = _run(sample_dir, tmp_path)
    resumed = {r["file"] for r in results if r.get("resumed")}
    assert resumed == set(others)
    assert _stamps(tmp_path, others) == stamps
    assert _tree(tmp_path) == before


def test_missing_truncated_or_unrecorded_shards_are_written_again(sample_dir, tmp_path):
    _run(sample_dir, tmp_path)
    before = _tree(tmp_path)
    train = tmp_path / "train"
    (train / "train-00000-of-00006.tfrecord").unlink()
    truncated = train / "train-00001-of-00006.tfrecord"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    (tmp_path / "_work" / "train-00002-of-00006.tfrecord.json").unlink()
    (tmp_path / "_work" / "train-00003-of-00006.tfrecord.json").write_text("{not json")
    (train / ".train-00004-of-00006.tfrecord.abcd1234.tmp").write_bytes(b"partial")  # left by a killed writer
    (train / "train-00004-of-00006.tfrecord").unlink()
    results = _run(sample_dir, tmp_path)
    rewritten = {r["file"] for r in results if not r.get("resumed")}
    assert rewritten == {f"train/train-0000{i}-of-00006.tfrecord" for i in range(5)}
    assert _tree(tmp_path) == before
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_rerun_with_other_options_does_not_keep_shards_made_with_the_old_ones(sample_dir, tmp_path):
    _run(sample_dir, tmp_path / "fresh", grayscale="skip")
    _run(sample_dir, tmp_path / "out")
    results = _run(sample_dir, tmp_path / "out", grayscale="skip")
    assert not any(r.get("resumed") for r in results)
    fresh = {k: v for k, v in _tree(tmp_path / "fresh").items() if k.endswith(".tfrecord")}
    assert {k: v for k, v in _tree(tmp_path / "out").items() if k.endswith(".tfrecord")} == fresh
    # and the same options again resume every shard
    assert all(r.get("resumed") for r in _run(sample_dir, tmp_path / "out", grayscale="skip"))
