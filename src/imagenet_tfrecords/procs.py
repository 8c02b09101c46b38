"""Processes of a run: workers that die with their parent, stopping on SIGTERM as on Ctrl-C, and
how many CPUs a run may use (``available_cpus``).

Kubernetes stops a pod with SIGTERM, the out-of-memory killer with SIGKILL. Neither may leave a
worker behind: pool workers and listing processes are forked with ``worker_init`` as their
initializer, which asks Linux to kill them when the process that forked them dies
(``PR_SET_PDEATHSIG``), and leaves stopping them to that process (SIGINT ignored, SIGTERM kills).
The parent turns SIGTERM into KeyboardInterrupt (``interrupt_on_sigterm``), so it stops its
workers (``stop_pool``), keeps the finished shards and exits as after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging  # noqa: F401 - imported before register_at_fork below
import math
import os
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h
_KEEP_BELOW = 32 << 20  # glibc's largest mmap threshold on 64-bit


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation (once per process; False
    where it cannot: not glibc).

    A conversion worker allocates and frees buffers of an image's pixels (420 KB at 400x350) several
    times per image. By default glibc serves blocks this large from fresh mmaps, or trims the top of
    its heap when they are freed, so the kernel maps and zeroes every page of every buffer anew: 0.6 ms
    of system time per 400x350 image, a third of its conversion. Kept, the same pages serve each
    image (the worker's peak memory is unchanged: it held them anyway).
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) and mallopt(_M_TRIM_THRESHOLD, 4 * _KEEP_BELOW))


def worker_init(parent: int, then=None, *args) -> None:
    """Initializer of a forked worker of process ``parent``: die with it, leave signals to it;
    then call ``then(*args)``."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if then is not None:
        then(*args)


def stop_pool(pool) -> None:
    """Stop a ProcessPoolExecutor now: its workers are terminated (the shards they were writing are
    lost; their temporary files are removed by the next run), queued work is cancelled."""
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            p.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


_terminated = False
_main = 0  # the process that turned SIGTERM into KeyboardInterrupt
_forking = 0  # >0 while this process forks: Python only prints an exception raised in an at-fork callback


def _fork_starts() -> None:
    global _forking
    _forking += 1


def _fork_ends() -> None:
    global _forking
    _forking -= 1


# (registered after logging's own: this "before" runs before logging's, this "after" after it)
os.register_at_fork(before=_fork_starts, after_in_parent=_fork_ends, after_in_child=_fork_ends)


def _interrupt(signum, frame):
    global _terminated
    if os.getpid() != _main:  # a worker forked before its worker_init: die as SIGTERM kills it there
        os._exit(128 + signum)
    _terminated = True
    if not _forking:  # else check_terminated raises it once the fork is over
        raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    global _main
    _main = os.getpid()
    signal.signal(signal.SIGTERM, _interrupt)


def check_terminated() -> None:
    """KeyboardInterrupt if SIGTERM came: for one that came while this process forked (see
    _interrupt), or that Python swallowed (raised where exceptions are only printed)."""
    if _terminated:
        raise KeyboardInterrupt


def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of ``pid`` (default: this process), from /proc (Linux; [] elsewhere)."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # zombies are dead already
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants(grace: float = 2.0) -> None:
    """SIGTERM every descendant of this process, SIGKILL those still there after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while pids := descendants():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(0.05)


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by the cgroup CPU quota of a pod."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        with open("/sys/fs/cgroup/cpu.max") as f:
            q, p = f.read().split()
        return None if q == "max" else int(q) / int(p)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            q = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            p = int(f.read())
        return None if q <= 0 else q / p
    except (OSError, ValueError):
        return None
