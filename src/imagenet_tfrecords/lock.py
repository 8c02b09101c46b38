"""One writer per output: a run holds its output's lock (local) or lease (object stores) while it writes.

A run is one ``convert``, one ``run`` or one pipeline run, whatever its number of processes:
its processes present the same run token (``Writer.run``) and share the output; another run is
refused before any work (BusyOutput, exit code 3), with one line naming the holder and what to do.

- Local outputs: every process of the writing run holds an ``fcntl.flock`` on its own file under
  ``<output>/_work/writers/`` (which says its run, host, pid and start). The kernel drops the lock
  when the process dies, so a run killed with SIGKILL blocks nothing: an immediate re-run finds the
  file unlocked, removes it and goes ahead.
- Object stores have no locks: the run writes a lease object, ``<output>/_work/lease.json``, with a
  create-only precondition (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``), and renews it
  from a thread every third of its duration, each write conditional on the version it last wrote.
  A lease that has expired (its run died) is taken over, by a conditional write too; so is a live one
  with ``take_over`` (the user says its run is dead). Processes of the same run rewrite the lease
  as theirs (a retried task takes over its own lease). A run whose lease was removed or taken
  over stops (LostOutput) at its next shard.
- Fencing: a lease says who may write, but a writer paused past its lease (a long GC pause, a
  frozen node) or overtaken by ``take_over`` would go on writing when it wakes. So the lease
  registers a ``Fence`` for its output (fs.fence), and every write and removal under the output
  (fs.publish, Location.write_bytes, fs.remove: the one place) calls it after the data is
  uploaded and before it becomes visible: the fence reads the lease and lets the write through
  only while it is still this run's, with at least a sixth of its duration left. Neither S3 nor
  GCS can make a write conditional on another object (their preconditions concern the object
  written), so the check is a strongly consistent read just before the commit (an S3
  CompleteMultipartUpload or PutObject, a GCS upload's last part). What remains is the time
  between that read and the commit landing: one request, unless the writer is paused exactly
  there for longer than the lease's remaining sixth (then another run may have taken the lease
  over after its expiry; the one that took over removes, when it starts writing, every file the
  output's marker lists and its own plan does not make). Renewals read the lease before their
  conditional write too, so a store that ignores preconditions (the GCS emulator) still sees a
  take-over.

The lease's duration is ``IMAGENET_TFRECORDS_LEASE_SECONDS`` (default 600 s): it must cover
the gap between two steps of a pipeline run, when no process of the run renews it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from . import fs
from .fs import BadOutput, Location, LostOutput

WORK_DIR = "_work"
LEASE = "lease.json"
MARKER = "imagenet-tfrecords.json"  # (output.MARKER: the output's marker lists its owner's files)
WRITERS = "writers"
# The run token of processes started by a run that holds the output itself (``imagenet-tfrecords
# run`` for its kfp.local steps): they join that run.
RUN_ENV = "IMAGENET_TFRECORDS_RUN"
LEASE_ENV = "IMAGENET_TFRECORDS_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 600.0
TAKE_OVER_HINT = "--take-over-lease (pipeline parameter take_over_lease)"


class BusyOutput(BadOutput):
    """Another live run writes this output; the message names it and says what to do."""


def new_run() -> str:
    """A fresh run token."""
    return uuid.uuid4().hex[:12]


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_SECONDS)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


_LATEST = 32503680000.0  # 3000-01-01: a lease time beyond it is no time this code wrote


def _time(value) -> float | None:
    """A lease record's time (seconds since the epoch), or None when ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if 0 <= value < _LATEST else None


def _holder(record: dict) -> str:
    started = _time(record.get("started"))
    return (
        f"run {str(record.get('run', '?'))[:40]} (pid {str(record.get('pid', '?'))[:20]} on host "
        f"{str(record.get('host', '?'))[:80]}, started {_when(started) if started else 'at an unknown time'})"
    )


def _damage(record: dict) -> str | None:
    """Why a lease record read from the store cannot be a lease this code wrote, or None."""
    if "damaged" in record:
        return record["damaged"]
    if "expires" not in record:
        return "it has no 'expires'"
    if _time(record["expires"]) is None:
        value = repr(record["expires"])
        return f"its 'expires' is not a time: {value[:40]}{'...' if len(value) > 40 else ''}"
    return None


@dataclass(frozen=True)
class Fence:
    """The check every write under a leased output passes right before it becomes visible (fs.fence):
    the lease at ``lease`` (a URL) is still run ``run``'s, with at least a sixth of its ``seconds``
    left. A lease whose renewal is late (its run was paused, the store did not answer) is waited
    for, up to a third of its duration; LostOutput once it is another run's, removed or expired."""

    lease: str
    run: str
    seconds: float

    def __call__(self, written: Location | None = None) -> None:
        loc = Location.of(self.lease)
        out = self.lease.rsplit(f"/{WORK_DIR}/", 1)[0]
        give_up = time.monotonic() + self.seconds / 3
        while True:
            record, _ = _read(loc)
            if record is None or record.get("run") != self.run:
                by = f"taken over by {_holder(record)}" if record else "removed"
                undone = self._take_back(Location.of(out), written) if written is not None else ""
                raise LostOutput(
                    f"{out}: this run's lease {self.lease} was {by} while it wrote: the output is not this "
                    f"run's any more; stopped before writing more{undone}"
                )
            if written is not None:
                return  # (it landed while the lease was this run's)
            left = (_time(record.get("expires")) or 0.0) - time.time()
            if left > self.seconds / 6:
                return
            if time.monotonic() > give_up:
                raise LostOutput(
                    f"{out}: this run's lease {self.lease} expired without being renewed (the run was paused, or "
                    "the store did not answer): another run may write the output; stopped before writing more"
                )
            time.sleep(min(0.5, self.seconds / 30))

    @staticmethod
    def _take_back(out: Location, written: Location) -> str:
        """Remove ``written``, which landed after the lease was lost (the writer was paused between
        the fence and the commit), unless the output's marker lists it now: then it is a file of
        the new owner's, which that owner writes, checks and resumes itself."""
        rel = written.path[len(out.path) + 1 :]
        try:
            marker = json.loads(out.child(MARKER).read_bytes())
            files = marker.get("files") if isinstance(marker, dict) else None
            if isinstance(files, list) and rel in files:
                return ""
            written.fs.rm_file(written.path)
        except FileNotFoundError:
            return ""  # (removed meanwhile: by the new owner, as a file of the run before it)
        except Exception as e:  # noqa: BLE001 - say what is left instead
            return f" ({written.url}, written as the lease was lost, could not be taken back: {e})"
        return f" ({written.url}, written as the lease was lost, was taken back)"


class Writer:
    """The output held by this process for run ``run``; ``check()`` raises LostOutput once it is lost."""

    def __init__(self, out: Location, run: str):
        self.out = out
        self.run = run
        self.record = {"run": run, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        self._lost = ""

    def check(self) -> None:
        if self._lost:
            raise LostOutput(self._lost)

    def release(self, keep: bool = False) -> None:
        raise NotImplementedError


@contextlib.contextmanager
def hold(
    output_url: str, run: str | None = None, take_over: bool = False, keep: bool = False, keep_on_error: bool = False
) -> Iterator[Writer]:
    """Hold the output for run ``run`` (default: the run of RUN_ENV, else a new one) while the block
    runs; BusyOutput when another live run holds it.

    A lease is removed when the block ends, unless ``keep`` (``keep_on_error`` when the block
    raised): a pipeline step whose run goes on in the next step keeps it, and so does a process
    that joined the run of RUN_ENV (the holder releases it). A local lock ends with its process.
    """
    outer = os.environ.get(RUN_ENV, "")
    run = run or outer or new_run()
    joined = bool(outer) and run == outer
    out = Location.of(output_url)
    writer = _LocalWriter(out, run) if out.is_local else _Lease(out, run, take_over)
    try:
        yield writer
    except BaseException:
        writer.release(keep=keep_on_error or joined)
        raise
    writer.release(keep=keep or joined)


# --- local outputs: a flock per process --------------------------------------------------------


class _LocalWriter(Writer):
    def __init__(self, out: Location, run: str):
        super().__init__(out, run)
        folder = os.path.join(out.path, WORK_DIR, WRITERS)
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"{self.record['host']}-{self.record['pid']}-{uuid.uuid4().hex[:8]}.json")
        # Checking the others and adding ourselves is one step: a short lock on the folder itself.
        mutex = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _flock_within(mutex, 10.0, out)
            for other in sorted(os.listdir(folder)):
                record = _live_record(os.path.join(folder, other))
                if record is not None and record.get("run") != run:
                    raise BusyOutput(
                        f"{out.url}: another run is writing this output: {_holder(record)}; wait until it ends "
                        "or stop it, then run again (finished shards are kept)"
                    )
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self.fd, json.dumps(self.record).encode())
        finally:
            os.close(mutex)  # (closing drops the flock)

    def check(self) -> None:
        if not self._lost:
            try:
                same = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                self._lost = (
                    f"{self.out.url}: this run's lock file {self.path} was removed by another process while it "
                    "wrote: the output is not this run's alone any more; stopped (finished shards are kept)"
                )
        super().check()

    def release(self, keep: bool = False) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.remove(self.path)
        os.close(self.fd)
        self.fd = -1


def _flock_within(fd: int, seconds: float, out: Location) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise BusyOutput(f"{out.url}: {WORK_DIR}/{WRITERS} stayed locked for {seconds:.0f} s") from None
            time.sleep(0.01)


def _live_record(path: str) -> dict | None:
    """The record of a writer file whose process lives (it holds the file's flock); a dead
    process's file is removed (None). A link, a folder or a FIFO is no writer's file (None): never
    opened through, waited on or removed."""
    if (fd := fs.open_regular(path)) is None:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.read(fd, 1 << 16) or b"{}")
            except ValueError:
                return {}
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # its process died
        return None
    finally:
        os.close(fd)


# --- object stores: a lease object -------------------------------------------------------------


class _Conflict(Exception):
    """A conditional write found another version of the lease than the one it was conditioned on."""


class _Lease(Writer):
    def __init__(self, out: Location, run: str, take_over: bool):
        super().__init__(out, run)
        self.loc = out.child(WORK_DIR, LEASE)
        self.seconds = lease_seconds()
        self.version: str | None = None
        self._stop = threading.Event()
        for _ in range(20):  # (a conflict means another writer moved meanwhile: look again)
            record, version = _read(self.loc)
            if record is not None and record.get("run") != run and not take_over:
                damage = _damage(record)
                if damage:
                    raise BusyOutput(
                        f"{self.loc.url}: this output's lease is damaged ({damage}); if no run is writing the "
                        f"output, remove the file or run again with {TAKE_OVER_HINT}"
                    )
                expires = _time(record["expires"])
                if expires >= time.time():
                    raise BusyOutput(
                        f"{out.url}: another run is writing this output: {_holder(record)}; its lease "
                        f"({self.loc.url}) runs until {_when(expires)} and is renewed while "
                        f"it lives: wait until it ends, or if it is dead, run again after that time or with "
                        f"{TAKE_OVER_HINT}"
                    )
            try:
                self.version = _write(self.loc, self._data(), version if record is not None else None)
                break
            except _Conflict:
                time.sleep(0.05)
        else:
            raise BusyOutput(f"{out.url}: the lease {self.loc.url} keeps changing: another run is taking it")
        self.fence = Fence(self.loc.url, run, self.seconds)
        fs.fence(out, self.fence)
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        if not self._lost:
            try:
                self.fence(None)
            except LostOutput as e:
                self._lost = str(e)
        super().check()

    def _data(self) -> bytes:
        return json.dumps({**self.record, "expires": time.time() + self.seconds}).encode()

    def _renew(self) -> None:
        until = time.time() + self.seconds
        while not self._stop.wait(self.seconds / 3):
            try:
                # read first: a store that ignores the write's precondition still shows a take-over
                record, version = _read(self.loc)
                if record is None or record.get("run") != self.run:
                    raise _Conflict
                self.version = version  # (another process of this run may have renewed it)
                self.version = _write(self.loc, self._data(), self.version)
                until = time.time() + self.seconds
            except _Conflict:
                record, version = _read(self.loc)
                if record is None or record.get("run") != self.run:
                    by = f"taken over by {_holder(record)}" if record else "removed"
                    self._lost = (
                        f"{self.out.url}: this run's lease {self.loc.url} was {by} while it wrote: the output is "
                        "not this run's alone any more; stopped (finished shards are kept)"
                    )
                    return
                self.version = version  # another process of this run renewed it
            except Exception as e:  # noqa: BLE001 - a store that does not answer for a while
                if time.time() > until:
                    self._lost = f"{self.out.url}: could not renew this run's lease {self.loc.url}: {e}"
                    return

    def release(self, keep: bool = False) -> None:
        """Stop renewing; remove the lease unless ``keep`` (and unless it is another run's now)."""
        self._stop.set()
        self._thread.join()
        fs.fence(self.out, None)
        if keep:
            return
        with contextlib.suppress(Exception):
            record, _ = _read(self.loc)
            if record is not None and record.get("run") == self.run:
                self.loc.fs.rm_file(self.loc.path)


def _protocol(loc: Location) -> str:
    p = loc.fs.protocol
    return p if isinstance(p, str) else p[0]


def _read(loc: Location) -> tuple[dict | None, str | None]:
    """The lease's record and version (GCS generation, S3 ETag), or (None, None). The version is
    read first: a write conditioned on it can only replace what was read, or fail."""
    loc.fs.invalidate_cache(loc.path)
    try:
        info = loc.fs.info(loc.path)
        data = loc.fs.cat_file(loc.path)
    except FileNotFoundError:
        return None, None
    # (a store that has neither: the content's digest, compared before writing in _write)
    version = info.get("generation") or info.get("ETag") or info.get("etag") or _digest(data)
    try:
        record = json.loads(data)
    except ValueError:
        record = {"damaged": "not JSON"}
    if not isinstance(record, dict):
        record = {"damaged": f"not a JSON object but {type(record).__name__}"}
    return record, (str(version) if version else None)


def _write(loc: Location, data: bytes, version: str | None) -> str | None:
    """Write the lease if its version is still ``version`` (None: only if it does not exist);
    return the new version, or raise _Conflict."""
    fs, protocol = loc.fs, _protocol(loc)
    try:
        if protocol in ("gs", "gcs"):
            bucket, key = loc.path.split("/", 1)
            out = fs.call(
                "POST",
                f"{fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
                uploadType="media",
                name=key,
                ifGenerationMatch=version or "0",
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                json_out=True,
            )
            fs.invalidate_cache(loc.path)
            return str(out["generation"])
        if protocol in ("s3", "s3a"):
            bucket, key = loc.path.split("/", 1)
            match = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
            out = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **match)
            fs.invalidate_cache(loc.path)
            return out.get("ETag")
    except FileExistsError:  # GCS 412; S3 412 of If-None-Match
        raise _Conflict from None
    except FileNotFoundError:  # S3 If-Match on an object removed meanwhile
        raise _Conflict from None
    except OSError as e:
        if _precondition_failed(e):  # S3 If-Match (412), or 409: another conditional write at the same time
            raise _Conflict from None
        raise
    # Another fsspec store: no precondition; look, then write (not atomic).
    _, now = _read(loc)
    if now != version:
        raise _Conflict
    fs.pipe_file(loc.path, data)
    return _digest(data)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _precondition_failed(e: BaseException | None) -> bool:
    """Whether an S3 error (s3fs keeps botocore's as the cause) is a failed or conflicting condition."""
    while e is not None:
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)
        e = e.__cause__ or e.__context__
    return False
