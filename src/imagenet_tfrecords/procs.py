"""Processes of a run: workers that die with their parent, stopping on SIGTERM as on Ctrl-C, and
how many CPUs a run may use (``available_cpus``).

Kubernetes stops a pod with SIGTERM, the out-of-memory killer with SIGKILL. Neither may leave a
worker behind: pool workers and listing processes are forked with ``worker_init`` as their
initializer, which asks Linux to kill them when the process that forked them dies
(``PR_SET_PDEATHSIG``), and leaves stopping them to that process (SIGINT ignored, SIGTERM kills).
The parent turns SIGTERM and Ctrl-C into KeyboardInterrupt by one handler (``interrupt_on_signals``),
so it stops its workers (``stop_pool``, ``in_processes``), keeps the finished shards and exits,
in seconds whatever moment the signal came at and whichever thread took it (``_relay_to_main``).
The main thread's waits (``first_done``, ``result_of``, ``interruptible``) also look every POLL
seconds for a signal whose KeyboardInterrupt Python swallowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging  # noqa: F401 - imported before register_at_fork below
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn

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


class WorkerDied(RuntimeError):
    """A worker process was killed; finished shards are kept and a re-run resumes."""


def stop_pool(pool, grace: float = 5.0) -> None:
    """Stop a ProcessPoolExecutor now, whatever moment it was interrupted at: its workers are killed
    (the shards they were writing are lost; their temporary files are removed by the next run),
    queued work is cancelled, and nothing is waited for longer than ``grace`` seconds."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for p in processes:
        with contextlib.suppress(Exception):
            p.kill()
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(grace)
    thread = getattr(pool, "_executor_manager_thread", None)
    if thread is not None and not _started(thread, grace):
        # interrupted between the thread's creation and its start: there is no thread to join
        # (joining it would raise "cannot join thread before it is started")
        pool._executor_manager_thread = thread = None
    # A worker killed while sending a result leaves part of it in the result pipe, where the pool's
    # thread waits for the rest for ever. With every worker gone, closing this process's own end
    # for writing ends that wait (the pool then counts as broken, and its thread ends).
    queue = getattr(pool, "_result_queue", None)
    if queue is not None:
        with contextlib.suppress(Exception):
            queue._writer.close()
    pool.shutdown(wait=False, cancel_futures=True)
    if thread is not None:
        thread.join(grace)
        if thread.is_alive():  # never joined at exit either (concurrent.futures joins its threads there)
            from concurrent.futures import process

            process._threads_wakeups.pop(thread, None)


def _started(thread: threading.Thread, grace: float) -> bool:
    """Whether ``thread`` was started (its start() interrupted or not): a thread that start() handed
    to the system sets its started flag within ``grace`` seconds."""
    if thread.ident is None and thread not in getattr(threading, "_limbo", {}):
        return False  # start() was never called, or stopped before it handed the thread to the system
    return thread._started.wait(grace)


def in_processes(fn: Callable, args: Iterable, processes: int, ahead: int) -> Iterator:
    """fn(arg) for each of ``args``, in order, computed by ``processes`` forked processes, at most
    ``ahead`` calls queued per process. ``fn`` reaches them by the fork, not by pickling; an
    exception it raises is raised here.

    No thread of this process takes part: on an error, Ctrl-C or SIGTERM here (or when the caller
    stops iterating) the processes are killed and reaped at once, and nothing is left to join.
    Each process talks through a socket pair of its own, so one killed in the middle of a result
    ends that result (EOF, WorkerDied) rather than leaving a reader waiting for the rest.
    """
    parent = os.getpid()
    workers: dict[int, Connection] = {}  # pid -> this process's end
    try:
        for _ in range(processes):
            ours, theirs = multiprocessing.Pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the forked process
                _serve(fn, theirs, [ours, *workers.values()], parent)
            workers[pid] = ours
            theirs.close()
        check_terminated()  # (SIGTERM while forking)
        yield from _ordered(workers, enumerate(args), ahead)
    finally:
        _reap(workers)


def _serve(fn: Callable, conn: Connection, others: list[Connection], parent: int) -> NoReturn:
    """A forked process of in_processes: (number, arg) pairs in, (number, ok, fn(arg) or the
    exception) out, until None or EOF. Never returns into the caller's code."""
    code = 0
    try:
        for c in others:  # the other ends: EOF comes when the parent's end closes
            c.close()
        worker_init(parent)
        while (item := _recv(conn)) is not None:
            number, arg = item
            try:
                reply = (number, True, fn(arg))
            except BaseException as e:  # (handed to the parent, which raises it)
                reply = (number, False, e)
            try:
                conn.send(reply)
            except Exception as e:  # an unpicklable result or exception
                conn.send((number, False, RuntimeError(f"{type(e).__name__}: {e}")))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _recv(conn: Connection):
    try:
        return conn.recv()
    except EOFError:
        return None


def _ordered(workers: dict[int, Connection], args: Iterator, ahead: int) -> Iterator:
    """in_processes's results in order: each call sent to the process with the fewest queued."""
    queued = {conn: 0 for conn in workers.values()}
    results: dict[int, Any] = {}
    sent = given = 0
    more = True
    while True:
        while more and sum(queued.values()) < ahead * len(queued):
            item = next(args, None)
            if item is None:
                more = False
                break
            conn = min(queued, key=queued.get)
            conn.send(item)
            queued[conn] += 1
            sent += 1
        if given in results:
            yield results.pop(given)
            given += 1
            check_terminated()
            continue
        if not more and given == sent:
            return
        for conn in wait([c for c, n in queued.items() if n], POLL):  # (see first_done)
            try:
                number, ok, value = conn.recv()
            except (EOFError, OSError):
                raise WorkerDied(
                    "a listing process died abruptly (killed by a signal, e.g. by the out-of-memory killer); "
                    "nothing was converted: run the same command again"
                ) from None
            queued[conn] -= 1
            if not ok:
                raise value
            results[number] = value


def _reap(workers: dict[int, Connection], grace: float = 5.0) -> None:
    """Kill and reap in_processes's processes (those done already just exit) and close their ends."""
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for conn in workers.values():
        conn.close()
    deadline = time.monotonic() + grace
    left = set(workers)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.01)


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
    if os.getpid() != _main:  # a process forked before its worker_init: die as SIGTERM kills it there
        os._exit(128 + signum)
    _terminated = True
    if not _forking:  # else check_terminated raises it once the fork is over
        raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """From now on SIGTERM and SIGINT raise KeyboardInterrupt in the main thread, and are remembered
    for ``check_terminated``: Python's own Ctrl-C handler raises inside logging's at-fork callback,
    or a ``__del__``, where the exception is only printed and the run goes on. The main thread is
    woken for them whichever thread took them (``_relay_to_main``)."""
    global _main
    _main = os.getpid()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    _relay_to_main()


_WAKE = signal.SIGURG  # ignored by default; here only to wake the main thread (a handler that does nothing)


@functools.cache
def _relay_to_main() -> None:
    """Wake the main thread for a SIGTERM or SIGINT that another thread took (once per process).

    Linux hands a process's signal to any of its threads that does not block it; Python then only
    flags the main thread, which runs the handler (any handler, including one set later, as ``run``
    sets its own) when it next runs Python code: a main thread blocked in a system call, as kfp.local's
    waits for its steps, would not until that call ended (a whole step). Python's C handler writes
    each signal's number to a wakeup fd whatever thread took it; a daemon thread reads them and
    sends the main thread _WAKE, whose interrupted call then runs the pending handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.signal(_WAKE, lambda signum, frame: None)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    main = threading.main_thread().ident

    def relay() -> None:
        while data := os.read(r, 64):
            if signal.SIGTERM in data or signal.SIGINT in data:
                with contextlib.suppress(ProcessLookupError, OSError):
                    signal.pthread_kill(main, _WAKE)

    threading.Thread(target=relay, name="signal-relay", daemon=True).start()


def check_terminated() -> None:
    """KeyboardInterrupt if SIGTERM or Ctrl-C came: for one that came while this process forked (see
    _interrupt), or that Python swallowed (raised where exceptions are only printed)."""
    if _terminated:
        raise KeyboardInterrupt


POLL = 0.1  # seconds between two looks at a signal while the main thread waits


def first_done(futures: Iterable[Future], until: float = math.inf) -> set[Future]:
    """concurrent.futures.wait(futures, return_when=FIRST_COMPLETED)'s finished set, waited for in
    steps of POLL seconds, until time.monotonic() ``until`` at most (then the empty set). A signal
    whose KeyboardInterrupt Python swallowed (see interrupt_on_signals) is raised within POLL seconds."""
    futures = list(futures)
    while futures and time.monotonic() < until:
        finished, _ = wait_futures(futures, timeout=POLL, return_when=FIRST_COMPLETED)
        check_terminated()
        if finished:
            return finished
    return set()  # (none to wait for, as wait() answers; or the time is up)


def result_of(future: Future) -> Any:
    """future.result(), waited for as first_done waits."""
    first_done([future])
    return future.result()


def interruptible(fn: Callable, *args) -> Any:
    """fn(*args), called in a daemon thread while this (main) thread waits as result_of waits: a
    SIGTERM or Ctrl-C ends the wait within POLL seconds with KeyboardInterrupt, the call left to die
    with the process. For a call that blocks in a socket: a signal whose KeyboardInterrupt Python
    swallowed (see interrupt_on_signals) would otherwise leave it waiting until the socket's own timeout."""
    future: Future = Future()

    def call() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # (raised in the caller's thread)
            future.set_exception(e)

    threading.Thread(target=call, name=getattr(fn, "__name__", "call"), daemon=True).start()
    return result_of(future)


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


MANY_OPEN_FILES = 65536  # as high as raise_open_files_limit goes


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit (as many tools do: the soft
    one is often far lower, 256 on macOS, 1,024 on Linux); return (soft, hard) as they now are."""
    try:
        import resource
    except ImportError:  # not POSIX
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    # (at most MANY_OPEN_FILES; macOS refuses RLIM_INFINITY and values above kern.maxfilesperproc, 10,240)
    for target in [min(hard, MANY_OPEN_FILES)] if hard != infinite else [MANY_OPEN_FILES, 10240]:
        if soft != infinite and soft < target:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                break
            except (ValueError, OSError):
                continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


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
