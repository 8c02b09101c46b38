"""A run stopped at any moment ends in seconds with its exit code: SIGTERM and Ctrl-C while the
dataset is being listed, an interruption while the conversion pool starts, and a limit on open
files too low for the plan.

The signals are sent at random moments of the planning phase, many times over, to one output
folder: each run must end with exit 5 within seconds, leave no process behind and release the
output, so that the next try is not refused.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imagenet_tfrecords.procs import descendants
from imagenet_tfrecords.sample import write_sample

from .conftest import CLI
from .processes import session, start

INTERRUPTED = "interrupted: finished shards are kept; run the same command again to resume"


def wide_dataset(root: Path, classes: int, per_class: int) -> Path:
    """A TinyImageNet-layout dataset of many class folders, made fast: one real JPEG a class,
    hard-linked ``per_class`` times (planning lists names and sizes, it reads no image)."""
    write_sample(str(root), classes=classes, train_per_class=1, val=10, test=5)
    for wnid in os.listdir(root / "train"):
        images = root / "train" / wnid / "images"
        first = images / f"{wnid}_0.JPEG"
        for n in range(1, per_class):
            os.link(first, images / f"{wnid}_{n}.JPEG")
        lines = "".join(f"{wnid}_{n}.JPEG\t0\t0\t63\t63\n" for n in range(per_class))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(lines)
    return root


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """600 class folders of 60 files: 75 listing tasks whose results are several pipe buffers long."""
    return wide_dataset(tmp_path_factory.mktemp("wide"), 600, 60)


def _ended(proc: subprocess.Popen, what: str, seconds: float = 20) -> tuple[str, str]:
    """The run's output once it ends; a failure naming ``what`` if it is still running after ``seconds``."""
    try:
        return proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{what}: the run still had not ended {seconds} s later (killed)")


TRIES = 30


@pytest.mark.slow
def test_sigterm_or_ctrl_c_at_random_moments_of_planning_ends_the_run_in_seconds(wide, tmp_path):
    out = tmp_path / "out"  # one output for every try: each run must have released it
    rng = random.Random(os.environ.get("PYTEST_SEED", time.time_ns()))
    for n in range(TRIES):
        ctrl_c = n % 2 == 1
        proc = start("convert", "--data", wide, "--output", out, "--workers", "2")
        deadline = time.monotonic() + 120
        while not descendants(proc.pid):  # the listing processes have started
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no listing process in 120 s"
            time.sleep(0.002)
        delay = rng.uniform(0, 1.2)
        time.sleep(delay)
        what = f"try {n + 1}: {'Ctrl-C' if ctrl_c else 'SIGTERM'} {delay:.3f} s after listing started"
        if ctrl_c:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to its foreground process group
        else:
            proc.send_signal(signal.SIGTERM)  # to the command only, as Kubernetes does
        _, stderr = _ended(proc, what)
        assert proc.returncode == 5, (what, proc.returncode, stderr)
        assert stderr.strip().splitlines() == [INTERRUPTED], (what, stderr)
        deadline = time.monotonic() + 5
        while (left := session(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"{what}: processes of the run are left: {left}"


# The moment the conversion pool's thread is being started, caught exactly: a profile hook sends
# SIGTERM to the process itself as Thread.start of the pool's manager thread is entered, so the
# KeyboardInterrupt that SIGTERM becomes is raised before the thread exists.
SIGTERM_AS_THE_POOL_STARTS = """
import os, signal, sys, threading
from concurrent.futures.process import _ExecutorManagerThread
from imagenet_tfrecords.cli import main

def hook(frame, event, arg):
    if event == "call" and frame.f_code is threading.Thread.start.__code__:
        if isinstance(frame.f_locals.get("self"), _ExecutorManagerThread):
            sys.setprofile(None)
            os.kill(os.getpid(), signal.SIGTERM)

sys.setprofile(hook)
sys.exit(main(sys.argv[1:]))
"""


def _interrupted_by(script: str, what: str, data: Path, out: Path) -> None:
    """``convert`` run by ``script`` (which signals it at the moment ``what``) ends with exit 5, its
    one line, and no shard."""
    args = ["convert", "--data", data, "--output", out, "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _, stderr = _ended(proc, what)
    assert (proc.returncode, stderr.strip().splitlines()) == (5, [INTERRUPTED])
    assert not list(out.rglob("*.tfrecord"))


def test_sigterm_as_the_conversion_pool_starts_is_an_interruption_not_an_internal_error(sample_dir, tmp_path):
    _interrupted_by(SIGTERM_AS_THE_POOL_STARTS, "SIGTERM as the pool's thread starts", sample_dir, tmp_path / "out")


# Ctrl-C in the middle of a fork: Python runs the handler inside an at-fork callback (logging's
# lock release, the moment it came at in a looped run), where an exception is only printed. Here
# a callback of the parent's, registered first so it runs among the others, sends it once, as
# the first listing process has been forked.
CTRL_C_IN_A_FORK = """
import os, signal, sys

def once():
    global once
    if once:
        once = None
        os.kill(os.getpid(), signal.SIGINT)

os.register_at_fork(after_in_parent=lambda: once and once())
from imagenet_tfrecords.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_while_a_listing_process_is_forked_is_not_lost(wide, tmp_path):
    _interrupted_by(CTRL_C_IN_A_FORK, "Ctrl-C as a listing process is forked", wide, tmp_path / "out")


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> Path:
    """Two classes of 400 copies (hard links) of a 2000x2000 photo of noise, each decoded in tens
    of milliseconds: a shard of one class takes each worker half a minute."""
    import simplejpeg

    root = wide_dataset(tmp_path_factory.mktemp("slow"), 2, 400)
    noise = np.random.default_rng(7).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    for wnid in os.listdir(root / "train"):  # (every link of a class is the same file)
        (root / "train" / wnid / "images" / f"{wnid}_0.JPEG").write_bytes(simplejpeg.encode_jpeg(noise, 90))
    return root


def _converting(pid: int) -> bool:
    """Whether a process under ``pid`` converts shards (convert's pool workers, run's step)."""
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                line = f.read()
        except OSError:
            continue
        if b"convert-shards" in line or b"convert_shards" in line or b"-m\x00imagenet_tfrecords\x00convert" in line:
            return True
    return False


@pytest.mark.parametrize("command", ["convert", "run"])
def test_sigterm_taken_by_another_thread_ends_the_conversion_in_seconds(command, slow, tmp_path):
    """Linux hands a process's signal to any thread that does not block it. Taken by one of the
    pool's threads (convert's process pool, kfp.local's threads of a loop), it only flagged the main
    thread, which waited for the next shard (convert) or the whole step (run) to finish."""
    out = tmp_path / "out"
    proc = start(command, "--data", slow, "--output", out, "--workers", "2", "--shard-size", "400")
    deadline = time.monotonic() + 90
    while not (_converting(proc.pid) and len(descendants(proc.pid)) >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no conversion in 90 s"
        time.sleep(0.05)
    time.sleep(2)  # converting: a shard is 400 decodes of ~70 ms away
    others = sorted(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
    assert others, f"{command} has one thread"
    os.kill(others[-1], signal.SIGTERM)  # the newest thread (kill() given a thread's id prefers it)
    _, stderr = _ended(proc, f"SIGTERM taken by another thread of {command}", seconds=10)
    assert (proc.returncode, stderr.strip().splitlines()) == (5, [INTERRUPTED])
    assert not list(out.rglob("train-*.tfrecord"))


# --- a limit on open files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_thousand(tmp_path_factory) -> Path:
    """2,000 train files in 20 classes: the mixed listing fills all 256 of its spill buckets."""
    return wide_dataset(tmp_path_factory.mktemp("two-thousand"), 20, 100)


def _limited(soft: int, hard: int, *args, seconds: float = 120) -> tuple[int, str, str]:
    """A command run under ``ulimit -n`` (soft, hard): exit code, stdout, stderr."""
    import resource

    proc = subprocess.Popen(
        [*CLI, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    stdout, stderr = _ended(proc, f"ulimit -n {soft} (hard {hard})", seconds)
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("limit", [256, 64])
def test_a_conversion_fits_in_256_and_in_64_open_files(two_thousand, tmp_path, limit):
    """256 is macOS's default soft limit; both limits hard, so that none can be raised."""
    out = tmp_path / "out"
    code, stdout, stderr = _limited(limit, limit, "convert", "--data", two_thousand, "--output", out, "--workers", "2")
    assert code == 0, stderr
    assert "train: 2000 records" in stdout
    assert len(list((out / "train").glob("*.tfrecord"))) == 2


def test_the_soft_limit_is_raised_to_the_hard_one(two_thousand, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = _limited(16, 4096, "convert", "--data", two_thousand, "--output", out, "--workers", "2")
    assert code == 0, stderr
    assert "train: 2000 records" in stdout


@pytest.mark.parametrize("limit", [12, 14, 16, 18])
def test_too_few_open_files_end_the_run_with_one_line_and_exit_3(two_thousand, tmp_path, limit):
    out = tmp_path / "out"
    code, _, stderr = _limited(limit, limit, "convert", "--data", two_thousand, "--output", out, "--workers", "8")
    lines = stderr.strip().splitlines()
    assert (code, len(lines)) == (3, 1), stderr
    assert lines[0].startswith("error: ") and "too many open files" in lines[0].lower(), lines


# --- the plan's spill folders in the temporary folder -----------------------------------------


def _spills(tmp: Path) -> set[str]:
    return {p.name for p in tmp.glob("imagenet-tfrecords-plan*")}


def _start_in(tmp: Path, data: Path, out: Path) -> tuple[subprocess.Popen, str]:
    """A convert whose temporary folder is ``tmp``, once its spill folder is there (its name)."""
    before = _spills(tmp)
    proc = subprocess.Popen(
        [*CLI, "convert", "--data", str(data), "--output", str(out), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (new := {n for n in _spills(tmp) - before if n.startswith("imagenet-tfrecords-plan-")}):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no spill folder in 120 s"
        time.sleep(0.002)
    return proc, new.pop()


@pytest.mark.slow
def test_the_next_run_removes_the_spill_of_a_killed_run_and_never_a_live_ones(wide, sample_dir, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    live, alive = _start_in(tmp, wide, tmp_path / "live")
    os.killpg(live.pid, signal.SIGSTOP)  # alive, however long the other runs take
    try:
        killed, dead = _start_in(tmp, wide, tmp_path / "killed")  # (it looked, and kept the live one's)
        os.killpg(killed.pid, signal.SIGKILL)  # as the out-of-memory killer does: no clean-up of its own
        killed.communicate()
        assert {dead, alive} <= _spills(tmp)
        p = subprocess.run(
            [*CLI, "convert", "--data", str(sample_dir), "--output", str(tmp_path / "next")],
            capture_output=True,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp)},
        )
        assert p.returncode == 0, p.stderr
        assert dead not in _spills(tmp)  # its owner is gone
        assert alive in _spills(tmp)  # its owner lives
    finally:
        os.killpg(live.pid, signal.SIGCONT)
    live.send_signal(signal.SIGTERM)
    _, stderr = _ended(live, "the live run after SIGTERM")
    assert live.returncode == 5 and stderr.strip().splitlines() == [INTERRUPTED]
    assert _spills(tmp) == set()
