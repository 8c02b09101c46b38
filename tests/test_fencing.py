"""A writer that lost its output's lease writes nothing more there (gs:// and s3://).

Run A is held still with SIGSTOP past its lease (as a long GC pause or a frozen node would) while
run B takes the expired lease over and completes an output of another plan; or B takes A's lease
over with ``--take-over-lease`` while A is alive. When A goes on, every write it had under way is
stopped by the fence (lock.Fence, checked by fs.publish right before a write becomes visible): A
exits 3 with one line, and B's output holds exactly what a local run of B's command writes.
Both stores: the fence is a read of the lease, which the GCS emulator serves as S3 does (the
emulator ignores write preconditions, which the fence does not rely on).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from imagenet_tfrecords import lock
from imagenet_tfrecords.fs import Location, LostOutput, publish
from imagenet_tfrecords.sample import write_sample

from .conftest import run_cli
from .processes import start, wait_for
from .test_object_stores import GcsBucket, S3Bucket, download

A_SHARDS, B_SHARDS = 10, 7  # another plan: B's train shards have other names than A's
MARKER = {"project": "imagenet-tfrecords", "state": "writing", "format": "", "files": []}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fencing-data")
    write_sample(str(d), classes=10, train_per_class=100, val=40, test=20, size=160)
    return d


@pytest.fixture(scope="module")
def b_reference(data, tmp_path_factory) -> Path:
    """What run B's command writes into a local folder of its own."""
    out = tmp_path_factory.mktemp("b-reference")
    run_cli("convert", "--data", data, "--output", out, "--workers", "2", "--train-shards", B_SHARDS)
    return out


@pytest.fixture(params=["gs", "s3"])
def bucket(request, store_env, gcs_server, s3_server):
    name = f"it-{uuid.uuid4().hex[:12]}"
    made = GcsBucket(gcs_server, name) if request.param == "gs" else S3Bucket(s3_server, name)
    made.probe = gcs_server.url + "/" if request.param == "gs" else s3_server.url + "/moto-api/"
    return made


def _store_answers(bucket) -> bool:
    """Whether the store answers within 3 s. The GCS emulator serves one request at a time: a run
    stopped in the middle of sending a request holds it until it goes on (GCS itself does not)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(bucket.probe, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def _lease_run(bucket) -> str | None:
    try:
        return json.loads(bucket.get("out/_work/lease.json")).get("run")
    except Exception:  # noqa: BLE001 - not there (yet)
        return None


def _check_b_output(bucket, b_reference: Path, tmp_path: Path) -> None:
    """B's output: exactly the files a local run of B writes, its shards byte-identical, verify ok."""
    got = tmp_path / "got"
    names = {n for n in download(bucket, "out", got) if not n.startswith("_work/")}
    ref = {p.relative_to(b_reference).as_posix() for p in b_reference.rglob("*") if p.is_file()}
    ref = {n for n in ref if not n.startswith("_work/")}
    assert names == ref, f"files that a run of B's command does not write (or misses): {sorted(names ^ ref)}"
    for name in sorted(n for n in ref if n.endswith((".tfrecord", ".idx")) or n == "sizes.txt"):
        assert (got / name).read_bytes() == (b_reference / name).read_bytes(), f"{name} differs"
    run_cli("verify", f"{bucket.scheme}://{bucket.name}/out")


def _stopped_a(bucket, data, lease_seconds: str) -> subprocess.Popen:
    """Run A, SIGSTOPped once it has published a train shard (its workers mid-way through the next)."""
    url = f"{bucket.scheme}://{bucket.name}/out"
    env = {lock.LEASE_ENV: lease_seconds}
    a = start("convert", "--data", data, "--output", url, "--workers", "2", "--train-shards", A_SHARDS, env=env)
    wait_for(lambda: any(k.endswith(".tfrecord") for k in bucket.keys("out/train/")), a)
    for _ in range(50):
        os.killpg(a.pid, signal.SIGSTOP)
        if _store_answers(bucket):
            return a
        os.killpg(a.pid, signal.SIGCONT)  # stopped mid-request (see _store_answers): a moment later
        time.sleep(0.05)
    pytest.fail("run A could not be stopped between two requests")


def _a_stopped_by_the_fence(a: subprocess.Popen) -> str:
    os.killpg(a.pid, signal.SIGCONT)
    stdout, stderr = a.communicate(timeout=120)
    assert a.returncode == 3, (a.returncode, stdout, stderr)
    line = stderr.strip()
    assert "\n" not in line and "this run's lease" in line and "Traceback" not in line, line
    return line


@pytest.mark.slow
def test_a_writer_paused_past_its_lease_writes_nothing_into_the_next_runs_output(data, b_reference, bucket, tmp_path):
    a = _stopped_a(bucket, data, "3")
    try:
        time.sleep(3.5)  # A's lease has expired
        url = f"{bucket.scheme}://{bucket.name}/out"
        b = run_cli("convert", "--data", data, "--output", url, "--workers", "2", "--train-shards", B_SHARDS)
        assert "another run" not in b.stderr
    finally:
        line = _a_stopped_by_the_fence(a)
    print(line)
    # B ended, its lease gone: A finds it removed; or A acts first on what it read just before the pause
    # (its own record, expired by now)
    assert "was removed while it wrote" in line or "expired without being renewed (the run was paused" in line
    _check_b_output(bucket, b_reference, tmp_path)


@pytest.mark.slow
def test_a_lease_taken_over_while_its_run_lives_stops_that_run_and_only_the_new_one_writes(
    data, b_reference, bucket, tmp_path
):
    a = _stopped_a(bucket, data, "600")
    url = f"{bucket.scheme}://{bucket.name}/out"
    holder = _lease_run(bucket)
    try:
        b = start("convert", "--data", data, "--output", url, "--workers", "2", "--train-shards", B_SHARDS,
                   "--take-over-lease")  # fmt: skip
        wait_for(lambda: _lease_run(bucket) not in (None, holder), b)  # B holds the lease ...
    finally:
        line = _a_stopped_by_the_fence(a)  # ... and A, alive, goes on meanwhile
    stdout, stderr = b.communicate(timeout=300)
    assert b.returncode == 0, (stdout, stderr)
    print(line)
    assert "was taken over by run" in line or "was removed while it wrote" in line, line
    _check_b_output(bucket, b_reference, tmp_path)


def test_a_lost_fence_leaves_nothing_visible_and_no_upload_behind(bucket):
    """A file streamed in several parts is not made visible once the fence fails; the upload is
    aborted (S3: no multipart upload left)."""
    from imagenet_tfrecords.fs import fence

    out = Location.of(f"{bucket.scheme}://{bucket.name}/out")

    def lost(written=None):
        raise LostOutput("lost")

    fence(out, lost)
    try:
        with pytest.raises(LostOutput), publish(out.child("train", "shard.tfrecord")) as f:
            for _ in range(20):
                f.write(os.urandom(1 << 20))  # 20 MiB: parts uploaded while the block runs
        with pytest.raises(LostOutput):
            out.child("small.json").write_text("{}")
    finally:
        fence(out, None)
    assert bucket.keys("out/") == []
    if bucket.scheme == "s3":
        assert "Uploads" not in bucket.client.list_multipart_uploads(Bucket=bucket.name)
    with publish(out.child("train", "shard.tfrecord")) as f:  # the same without a fence: published
        f.write(b"x" * (9 << 20))
    assert bucket.keys("out/") == ["out/train/shard.tfrecord"]
    assert bucket.get("out/train/shard.tfrecord") == b"x" * (9 << 20)


def test_a_write_landing_just_after_its_lease_was_lost_is_taken_back(bucket):
    """The window no store condition closes: the fence passed, then (a pause) another run took the
    lease and wrote its marker, then the commit landed. The writer's check after the commit takes
    the file back, unless the new owner's marker lists it (the new owner rewrites and checks its own)."""
    from imagenet_tfrecords.fs import fence

    out = Location.of(f"{bucket.scheme}://{bucket.name}/out")
    lease = out.child("_work", "lease.json")
    real = lock.Fence(lease.url, "a", 600.0)

    def lease_of(run: str) -> None:
        bucket.put("out/_work/lease.json", json.dumps({"run": run, "pid": 1, "expires": time.time() + 600}).encode())

    def paused_in_the_window(written=None):
        real(written)
        if written is None:  # the fence passed; another run takes over before the commit lands
            lease_of("b")
            bucket.put("out/imagenet-tfrecords.json", json.dumps({**MARKER, "files": ["val/kept"]}).encode())

    fence(out, paused_in_the_window)
    try:
        lease_of("a")
        taken_back = "was taken over by run b .*stray.tfrecord, written as the lease was lost, was taken back"
        with pytest.raises(LostOutput, match=taken_back), publish(out.child("train", "stray.tfrecord")) as f:
            f.write(b"a" * (9 << 20))
        lease_of("a")
        with pytest.raises(LostOutput, match="taken over by run b"):
            out.child("val", "kept").write_bytes(b"a's")
    finally:
        fence(out, None)
    assert bucket.keys("out/train/") == []
    assert bucket.get("out/val/kept") == b"a's"  # (B's to write again: its marker lists it)


@pytest.mark.parametrize(
    "lease",
    [
        b'{"run": "0123456789ab", "expires": "tomorrow"}',
        b'{"run": "0123456789ab", "expires": null}',
        b'{"run": "0123456789ab", "expires": 1e300}',
        b'{"run": "0123456789ab", "expires": NaN}',
        b'{"run": "0123456789ab"}',
        b"not json",
    ],
    ids=["text", "null", "1e300", "NaN", "missing", "not-json"],
)
def test_a_damaged_s3_lease_is_one_line_and_exit_3(store_env, s3_server, sample_dir, lease):
    bucket = S3Bucket(s3_server, f"it-{uuid.uuid4().hex[:12]}")
    bucket.put("out/imagenet-tfrecords.json", json.dumps(MARKER).encode())
    bucket.put("out/_work/lease.json", lease)
    url = f"s3://{bucket.name}/out"
    p = run_cli("convert", "--data", sample_dir, "--output", url, check=False)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    line = p.stderr.strip()
    print(line)
    assert "\n" not in line and line.startswith(f"error: {url}/_work/lease.json: this output's lease is damaged ("), (
        line
    )
    assert "--take-over-lease" in line and len(line) < 400
    assert bucket.get("out/_work/lease.json") == lease, "the damaged lease was changed"
    run_cli("convert", "--data", sample_dir, "--output", url, "--take-over-lease")  # the way out it names


def _racing_fence(folder: Path):
    """A fence for train/ whose first write is committed and then taken back slowly, while the next
    is refused in the meantime: that refusal reaches the run while the first worker is between its
    commit and its take-back. (Files in ``folder`` order the two workers.)"""

    def wait_for_file(name: str) -> None:
        deadline = time.monotonic() + 30
        while not (folder / name).exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def check(written: Location | None) -> None:
        if written is None:  # right before a commit
            try:
                os.close(os.open(folder / "committer", os.O_CREAT | os.O_EXCL))
                return  # the first goes ahead
            except FileExistsError:
                wait_for_file("taking-back")
                (folder / "refused").touch()
                raise LostOutput("refused: the lease is lost") from None
        (folder / "taking-back").touch()  # right after the commit
        wait_for_file("refused")
        time.sleep(1.5)  # the run has the refusal by now
        written.fs.rm_file(written.path)
        (folder / "taken-back").touch()
        raise LostOutput("taken back: the lease was lost as this was written")

    return check


def test_a_worker_taking_back_its_write_is_not_killed_when_another_finds_the_lease_lost(data, bucket, tmp_path):
    """A write that landed as the lease was lost is removed by its own worker right after its commit.
    Another worker's refusal stopped the run, which killed every worker at once: the one between
    its commit and its take-back left its shard in the output that is no longer this run's."""
    from imagenet_tfrecords import fs, tasks

    url = f"{bucket.scheme}://{bucket.name}/out"
    train = Location.of(f"{url}/train")
    fs.fence(train, _racing_fence(tmp_path))
    try:
        with pytest.raises(LostOutput):
            tasks.convert_dataset(str(data), url, workers=2, train_shards=4)
    finally:
        fs.fence(train, None)
    assert (tmp_path / "taken-back").exists(), "the worker was stopped before it took its write back"
    assert not [k for k in bucket.keys("out/train/") if k.endswith((".tfrecord", ".idx"))]
