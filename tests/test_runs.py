"""One writer per output, and runs that die cleanly: real processes, real signals, real servers.

A second run started on an output that a live run writes is refused before any work (exit 3, one
line naming the other run); the first finishes and its output equals an uninterrupted single run's.
The first run is held still with SIGSTOP once it is converting, so that it is alive whatever the
machine's load when the second one looks. SIGTERM stops a run as Ctrl-C does (exit 5, finished
shards kept, no process left); a conversion step killed under ``run`` is reported, not waited for.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from imagenet_tfrecords import lock
from imagenet_tfrecords.fs import Location, LostOutput, publish
from imagenet_tfrecords.sample import write_sample

from .conftest import run_cli
from .processes import session, start, wait_for
from .test_object_stores import S3Bucket

TRAIN_SHARDS = 40
REFUSED = "another run is writing this output: run "


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    write_sample(str(d), classes=TRAIN_SHARDS, train_per_class=150, val=200, test=100)
    return d


def _options(*extra) -> list[str]:
    return ["--workers", "2", "--train-shards", str(TRAIN_SHARDS), *extra]


@pytest.fixture(scope="module")
def reference(big, tmp_path_factory) -> Path:
    """The output of a single uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    run_cli("convert", "--data", big, "--output", out, *_options())
    return out


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every shard, index and count file."""
    names = ("*.tfrecord", "*.idx", "sizes.txt", "labels.txt", "rejects.tsv")
    files = sorted({p for pattern in names for p in root.rglob(pattern)})
    digests = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert sum(n.endswith(".tfrecord") for n in digests) == TRAIN_SHARDS + 2
    return digests


def _no_process_left(proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 5
    while (left := session(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes of the run are left: {left}"


def _converting(out: Path):
    return lambda: len(list((out / "train").glob("*.tfrecord"))) >= 2


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, out, err)
    return out, err


def _holder_pids(proc: subprocess.Popen) -> set[int]:
    return set(session(proc.pid))


# --- two runs on one local output ---------------------------------------------------------------


@pytest.mark.parametrize(
    "first, second", [("convert", "convert"), ("run", "run"), ("convert", "run"), ("run", "convert")]
)
@pytest.mark.slow
def test_a_second_run_on_a_live_runs_output_is_refused_and_the_first_finishes(big, reference, tmp_path, first, second):
    out = tmp_path / "out"
    one = start(first, "--data", big, "--output", out, *_options())
    started = time.monotonic()
    wait_for(_converting(out), one)
    holders = _holder_pids(one)
    os.killpg(one.pid, signal.SIGSTOP)  # alive, mid-conversion, for as long as the second one looks
    try:
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        temporaries = sorted(out.rglob(".*.tmp"))
        two = run_cli(second, "--data", big, "--output", out, *_options(), check=False, timeout=300)
        assert sorted(out.rglob(".*.tmp")) == temporaries, "the refused run touched the first run's temporaries"
    finally:
        os.killpg(one.pid, signal.SIGCONT)
    assert two.returncode == 3, (two.stdout, two.stderr)
    lines = two.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: {REFUSED}"), two.stderr
    assert "wait until it ends or stop it, then run again" in lines[0]
    named = int(lines[0].split("(pid ", 1)[1].split()[0])
    assert named in holders, (named, holders)
    assert " started 20" in lines[0] and " on host " in lines[0]
    assert not two.stdout
    print(lines[0])
    _finish(one)
    run_cli("verify", out)
    assert _digests(out) == _digests(reference)


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    """A second writer of the same file (another run, a retried task) leaves the first one's
    temporary alone; once the first is dead its temporary is cleaned up."""
    dest = Location.of(str(tmp_path / "shard.tfrecord"))
    with publish(dest) as first:
        first.write(b"first")
        with publish(dest) as second:
            second.write(b"second")
        assert Path(first.name).exists(), "the live writer's temporary was removed"
    assert (tmp_path / "shard.tfrecord").read_bytes() == b"first"
    # a writer that died (no one holds its temporary's lock) leaves one to clean up
    dead = tmp_path / ".shard.tfrecord.abcd1234.tmp"
    dead.write_bytes(b"left by a killed writer")
    with publish(dest) as third:
        third.write(b"third")
        assert not dead.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_run_whose_temporary_is_removed_stops_with_exit_3(tmp_path):
    dest = Location.of(str(tmp_path / "shard.tfrecord"))
    with pytest.raises(LostOutput, match="was removed by another process"), publish(dest) as f:
        os.remove(f.name)
    assert not (tmp_path / "shard.tfrecord").exists()


@pytest.mark.slow
def test_a_run_whose_lock_is_removed_stops_with_exit_3(big, tmp_path):
    out = tmp_path / "out"
    one = start("convert", "--data", big, "--output", out, *_options())
    wait_for(_converting(out), one)
    os.killpg(one.pid, signal.SIGSTOP)
    for f in (out / "_work" / "writers").iterdir():
        f.unlink()
    os.killpg(one.pid, signal.SIGCONT)
    stdout, stderr = one.communicate(timeout=120)
    assert one.returncode == 3, (stdout, stderr)
    assert "lock file" in stderr and "was removed by another process" in stderr, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    _no_process_left(one)


# --- pipeline tasks of one run share it --------------------------------------------------------


_STEP = """
import sys
from imagenet_tfrecords.tasks import convert_step
plan, task, out, manifest = sys.argv[1:]
print(convert_step(plan, int(task), manifest))
"""


def _plan(big, out_url: str, work: Path, tasks: int = 2) -> str:
    from imagenet_tfrecords.tasks import plan_step

    plan = work / "plan.json"
    plan_step(str(big), out_url, 500, tasks, str(plan), str(work / "labels.txt"), train_shards=TRAIN_SHARDS, workers=1)
    return str(plan)


def _step(plan: str, task: int, out_url: str, work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _STEP, plan, str(task), out_url, str(work / f"manifest-{task}-{uuid.uuid4().hex}")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _retried_task_joins_its_run(big, reference, tmp_path, out_url: str, published) -> None:
    from imagenet_tfrecords.tasks import aggregate_step

    plan = _plan(big, out_url, tmp_path)
    token = json.loads(Path(plan).read_text())["run"]
    first = _step(plan, 0, out_url, tmp_path)
    wait_for(lambda: published() >= 2, first)
    os.killpg(first.pid, signal.SIGSTOP)
    # another run is refused, naming this pipeline run ...
    other = run_cli("convert", "--data", big, "--output", out_url, *_options(), check=False, timeout=300)
    assert other.returncode == 3 and f"{REFUSED}{token} " in other.stderr, other.stderr
    # ... its other task is not, while the first runs ...
    sibling = _step(plan, 1, out_url, tmp_path)
    assert sibling.wait(timeout=300) == 0, sibling.communicate()
    # ... nor is a retry of the first, once the first was killed mid-way (as by the out-of-memory killer)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    retry = _step(plan, 0, out_url, tmp_path)
    stdout, stderr = retry.communicate(timeout=300)
    assert retry.returncode == 0, stderr
    assert "'resumed': 0" not in stdout, "the retry did not keep the shards of the killed attempt"
    tasks = [eval(stdout.strip().splitlines()[-1])]  # noqa: S307 - the step's own printed dict
    aggregate_step(plan, tasks, str(tmp_path / "ds"), str(tmp_path / "sizes"), str(tmp_path / "rep"))


@pytest.mark.slow
def test_a_retried_conversion_task_of_the_same_pipeline_run_is_not_refused(big, reference, tmp_path):
    out = tmp_path / "out"
    _retried_task_joins_its_run(
        big, reference, tmp_path, str(out), lambda: len(list((out / "train").glob("*.tfrecord")))
    )
    run_cli("verify", out)
    assert _digests(out) == _digests(reference)


# --- SIGTERM and dying processes ---------------------------------------------------------------


def _interrupted(proc: subprocess.Popen, timeout: float = 60) -> str:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 5, (proc.returncode, stdout, stderr)
    assert "interrupted: finished shards are kept; run the same command again to resume" in stderr, stderr
    assert "Traceback" not in stderr
    _no_process_left(proc)
    return stderr


@pytest.mark.slow
def test_sigterm_stops_convert_as_ctrl_c_does_and_leaves_no_process(big, reference, tmp_path):
    out = tmp_path / "out"
    proc = start("convert", "--data", big, "--output", out, *_options())
    wait_for(_converting(out), proc)
    proc.send_signal(signal.SIGTERM)  # to the command only, as Kubernetes does to a container's process
    _interrupted(proc)
    assert len(list((out / "train").glob("*.tfrecord"))) < TRAIN_SHARDS
    run_cli("convert", "--data", big, "--output", out, *_options())  # resumes
    assert _digests(out) == _digests(reference)


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory) -> Path:
    """Planning takes a while here: 1,500 class folders for the listing processes."""
    d = tmp_path_factory.mktemp("many")
    write_sample(str(d), classes=1500, train_per_class=2, val=10, test=5)
    return d


@pytest.mark.slow
def test_sigterm_while_planning_stops_the_listing_processes(many_classes, tmp_path):
    out = tmp_path / "out"
    proc = start("convert", "--data", many_classes, "--output", out, "--workers", "2")
    from imagenet_tfrecords.procs import descendants

    wait_for(lambda: descendants(proc.pid), proc, 120)  # the listing processes: no conversion pool yet
    assert not (out / "_work" / "plan").exists(), "planning was over before the signal"
    proc.send_signal(signal.SIGTERM)
    _interrupted(proc)
    assert not list(out.rglob("*.tfrecord"))


def _step_processes(pid: int) -> list[int]:
    """kfp.local's step processes under ``pid``: Python running kfp's executor (not their pool
    workers, forked with the same command line)."""
    from imagenet_tfrecords.procs import descendants

    def executor(p: int) -> bool:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        return b"python" in os.path.basename(argv[0]) and any(b"executor_main" in a for a in argv)

    def parent(p: int) -> int:
        with open(f"/proc/{p}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])

    return [p for p in descendants(pid) if executor(p) and not executor(parent(p))]


@pytest.mark.slow
def test_sigterm_stops_run_and_its_steps(big, tmp_path):
    out = tmp_path / "out"
    proc = start("run", "--data", big, "--output", out, *_options())
    wait_for(_converting(out), proc)
    assert _step_processes(proc.pid)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _interrupted(proc)
    assert time.monotonic() - started < 30
    assert len(list((out / "train").glob("*.tfrecord"))) < TRAIN_SHARDS


@pytest.mark.slow
def test_a_killed_conversion_step_is_reported_by_run_and_leaves_no_worker(big, tmp_path):
    out = tmp_path / "out"
    proc = start("run", "--data", big, "--output", out, *_options())
    wait_for(_converting(out), proc)
    steps = _step_processes(proc.pid)
    assert len(steps) == 1, steps
    os.kill(steps[0], signal.SIGKILL)  # what the out-of-memory killer does
    stdout, stderr = proc.communicate(timeout=60)  # (on a hang: the workers hold the step's output pipe)
    assert proc.returncode == 5, (stdout, stderr)
    assert "died without a Python error" in stderr and "run the same command again to resume" in stderr, stderr
    _no_process_left(proc)


# --- object stores: the lease -----------------------------------------------------------------


@pytest.fixture()
def s3_out(store_env, s3_server):
    bucket = S3Bucket(s3_server, f"it-{uuid.uuid4().hex[:12]}")
    return bucket.client, bucket.name


def _s3_keys(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _s3_download(client, bucket: str, prefix: str, local: Path) -> Path:
    for key in _s3_keys(client, bucket, prefix + "/"):
        dest = local / key[len(prefix) + 1 :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return local


def _s3_published(client, bucket: str, prefix: str):
    return lambda: sum(k.endswith(".tfrecord") for k in _s3_keys(client, bucket, f"{prefix}/train/"))


def test_the_lease_is_created_only_once_and_replaced_only_from_the_version_read(s3_out):
    """S3 (moto honours both If-None-Match: * and If-Match on PutObject)."""
    client, bucket = s3_out
    loc = Location.of(f"s3://{bucket}/out/_work/lease.json")
    version = lock._write(loc, b'{"run": "a"}', None)
    with pytest.raises(lock._Conflict):
        lock._write(loc, b'{"run": "b"}', None)  # create-only: it exists
    with pytest.raises(lock._Conflict):
        lock._write(loc, b'{"run": "b"}', '"0123456789abcdef0123456789abcdef"')  # not the version there
    assert lock._read(loc) == ({"run": "a"}, version)
    newer = lock._write(loc, b'{"run": "c"}', version)
    assert lock._read(loc) == ({"run": "c"}, newer)


@pytest.fixture(params=["gs", "s3"])
def bucket(request, store_env, gcs_server, s3_server):
    from .test_object_stores import GcsBucket, S3Bucket

    name = f"it-{uuid.uuid4().hex[:12]}"
    made = GcsBucket(gcs_server, name) if request.param == "gs" else S3Bucket(s3_server, name)
    made.probe = gcs_server.url + "/" if request.param == "gs" else s3_server.url + "/moto-api/"
    return made


def _stop_between_requests(proc: subprocess.Popen, bucket) -> None:
    """SIGSTOP ``proc``'s group at a moment the store still answers: the GCS emulator serves one request
    at a time, so a run stopped in the middle of sending one (a shard's upload) would hold it."""
    from .test_fencing import _store_answers

    for _ in range(50):
        os.killpg(proc.pid, signal.SIGSTOP)
        if _store_answers(bucket):
            return
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("the run could not be stopped between two requests")


@pytest.mark.slow
def test_a_second_convert_on_a_leased_bucket_output_is_refused(big, reference, tmp_path, bucket):
    """On both stores: the second run reads the live lease and is refused. (The GCS emulator
    ignores ifGenerationMatch, so there only the read protects; on S3 the create-only and
    conditional writes do too: test_the_lease_is_created_only_once...)"""
    from .test_object_stores import download

    url = f"{bucket.scheme}://{bucket.name}/out"
    one = start("convert", "--data", big, "--output", url, *_options())
    wait_for(lambda: sum(k.endswith(".tfrecord") for k in bucket.keys("out/train/")) >= 2, one)
    holders = _holder_pids(one)
    _stop_between_requests(one, bucket)
    try:
        two = run_cli("convert", "--data", big, "--output", url, *_options(), check=False, timeout=300)
    finally:
        os.killpg(one.pid, signal.SIGCONT)
    assert two.returncode == 3, (two.stdout, two.stderr)
    line = two.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {url}: {REFUSED}"), line
    assert f"its lease ({url}/_work/lease.json) runs until 20" in line
    assert "or if it is dead, run again after that time or with --take-over-lease" in line
    assert int(line.split("(pid ", 1)[1].split()[0]) in holders
    print(line)
    _finish(one)
    assert "out/_work/lease.json" not in bucket.keys("out/_work/"), "the lease was kept"
    download(bucket, "out", tmp_path / "got")
    assert _digests(tmp_path / "got") == _digests(reference)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["after the lease expires", "with --take-over-lease"])
def test_kill_9_then_a_rerun_on_a_bucket_waits_for_the_lease_or_takes_it_over(big, reference, tmp_path, s3_out, how):
    client, bucket = s3_out
    url = f"s3://{bucket}/out"
    env = {lock.LEASE_ENV: "6"}
    one = start("convert", "--data", big, "--output", url, *_options(), env=env)
    # shards finished: published with their index and statistics
    wait_for(lambda: sum(k.endswith(".json") for k in _s3_keys(client, bucket, "out/_work/train-")) >= 2, one)
    os.killpg(one.pid, signal.SIGKILL)
    one.wait()
    killed_at = time.time()
    again = run_cli("convert", "--data", big, "--output", url, *_options(), check=False, env=env, timeout=300)
    assert again.returncode == 3 and "its lease" in again.stderr and "runs until" in again.stderr, again.stderr
    print(again.stderr.strip())
    if how == "with --take-over-lease":
        p = run_cli("convert", "--data", big, "--output", url, *_options("--take-over-lease"), env=env, timeout=300)
    else:
        time.sleep(max(0.0, killed_at + 6.5 - time.time()))
        p = run_cli("convert", "--data", big, "--output", url, *_options(), env=env, timeout=300)
    assert "kept from an earlier run" in p.stdout, p.stdout
    got = _s3_download(client, bucket, "out", tmp_path / "got")
    assert _digests(got) == _digests(reference)


@pytest.mark.slow
def test_a_run_whose_lease_is_removed_stops_with_exit_3(big, tmp_path, s3_out):
    client, bucket = s3_out
    url = f"s3://{bucket}/out"
    one = start("convert", "--data", big, "--output", url, *_options(), env={lock.LEASE_ENV: "1.5"})
    wait_for(lambda: _s3_published(client, bucket, "out")() >= 1, one)
    client.delete_object(Bucket=bucket, Key="out/_work/lease.json")
    stdout, stderr = one.communicate(timeout=120)
    assert one.returncode == 3, (stdout, stderr)
    assert "lease" in stderr and "was removed while it wrote" in stderr, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    _no_process_left(one)


@pytest.mark.slow
def test_a_retried_conversion_task_on_a_bucket_takes_over_its_own_lease(big, reference, tmp_path, s3_out):
    client, bucket = s3_out
    url = f"s3://{bucket}/out"
    _retried_task_joins_its_run(big, reference, tmp_path, url, _s3_published(client, bucket, "out"))
    assert "out/_work/lease.json" not in _s3_keys(client, bucket, "out/_work/"), "the run's lease outlived it"
    got = _s3_download(client, bucket, "out", tmp_path / "got")
    assert _digests(got) == _digests(reference)
