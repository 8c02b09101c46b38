"""Runs of the command started in the background, as a terminal starts a job: each in a session (and
process group) of its own, so that a signal reaches every process of the run and a test can find the
processes it left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from .conftest import CLI


def start(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,
    )


def session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (every process a run started, however deep)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def wait_for(what: Callable[[], object], proc: subprocess.Popen, seconds: float = 180, poll: float = 0.005) -> None:
    """Until ``what()`` holds; a failure with the run's output if the run ends first, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not what():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) too early\n{out}\n{err}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out")
        time.sleep(poll)
