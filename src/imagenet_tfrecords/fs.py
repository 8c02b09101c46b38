"""URL handling through fsspec: local paths, file://, memory://, gs://, s3://.

Every read and write of the project goes through here, so local disks and object stores
share one code path. Files are published atomically, and every write or removal under an output
passes one check first (``fenced``):

- Local outputs: a temporary file in the destination's folder, flocked while it is written, then
  renamed into place.
- Object stores: the bytes stream to the store as they are written (an S3 multipart upload, a GCS
  resumable upload, in parts of ``UPLOAD_PART`` bytes), never staged on local disk; the upload is
  committed (the object appears) only after the block ended and the fence passed, and is aborted
  otherwise. A killed task never leaves a truncated file under a final name.
- The fence: a writer that holds an output (lock.py's lease) registers a check for it (``fence``);
  ``publish``, ``Location.write_bytes`` and ``remove`` call it right before the data becomes
  visible, so a writer that lost its lease changes nothing (LostOutput).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, NamedTuple

import fsspec
from fsspec.core import url_to_fs


class InputError(ValueError):
    """An input, output or environment that cannot be used as it is; the message names it and says why
    (the command line's exit code 3)."""


class MetadataError(InputError):
    """The dataset's metadata (or one of its folders) is missing, unreadable or malformed; the message
    names file and line."""


class NoCredentialsError(InputError):
    """An object store URL for which no credentials are configured; the message says what to set."""


class MissingPackageError(ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` ("tf", "torch", "gcs", "s3", "docker") to this installation, one that works:

    - running from a source checkout (an editable install, or the sources on the path): that checkout;
    - installed from a checkout or a wheel file that is still there (pip records which, PEP 610's
      direct_url.json): that folder or file;
    - otherwise (from PyPI, or from a copy gone since): this version from PyPI.
    """
    import json
    from importlib import metadata
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    from . import __version__

    checkout = Path(__file__).resolve().parents[2]  # src/imagenet_tfrecords/fs.py -> a checkout's root
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "imagenet_tfrecords").is_dir():
        return f"pip install -e '{checkout}[{extra}]'"
    try:
        direct = json.loads(metadata.distribution("imagenet-tfrecords").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        direct = {}
    url = urlparse(direct.get("url", ""))
    where = Path(unquote(url.path)) if url.scheme == "file" else None
    if where is not None and "dir_info" in direct and (where / "pyproject.toml").is_file():
        return f"pip install '{where}[{extra}]'"
    if where is not None and "archive_info" in direct and where.is_file():
        return f"pip install '{where}[{extra}]'"
    return f"pip install 'imagenet-tfrecords[{extra}]=={__version__}'"


# What macOS, Windows and editors leave in image folders: never data, never a class (as torchvision's,
# Hugging Face's and TFDS's image-folder readers skip them). Counted as "ignored", per split.
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})


def is_ignored(name: str) -> bool:
    """Whether a file or folder name is one every layout ignores: a name starting with "." (.DS_Store,
    AppleDouble ._* files, .git...), Thumbs.db or desktop.ini."""
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def excerpt(text: str, limit: int = 40) -> str:
    """A short printable quote of ``text`` for a message: repr of its first ``limit`` characters."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def printable_name(name: str) -> str:
    """A file name as it can be written to UTF-8 reports: bytes that are not UTF-8 (a name read with
    surrogateescape) are shown as backslash escapes, e.g. ``caf\\xe9.JPEG``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Location:
    """A directory (or file) URL resolved to its fsspec filesystem."""

    url: str
    fs: fsspec.AbstractFileSystem
    path: str

    @classmethod
    def of(cls, url: str) -> Location:
        url = str(url)
        try:
            fs, path = url_to_fs(url)
        except ImportError as e:  # fsspec's "Install gcsfs to access Google Storage"
            extra = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}.get(url.split("://", 1)[0])
            if extra is None:
                raise
            raise MissingPackageError(f"{url}: {e.msg or e} ({install_command(extra)})") from None
        return cls(url.rstrip("/") or url, fs, path.rstrip("/") or path)

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def child(self, *parts: str) -> Location:
        rel = "/".join(p.strip("/") for p in parts if p)
        return Location(f"{self.url}/{rel}", self.fs, f"{self.path}/{rel}")

    def exists(self) -> bool:
        if self.is_local:
            return _local_stat(self.path) is not None
        return self.fs.exists(self.path)

    def isdir(self) -> bool:
        """Whether this is a folder; a local path that cannot be looked at (permission denied) is an
        error naming it, never taken for a missing folder."""
        if self.is_local:
            st = _local_stat(self.path)
            return st is not None and stat.S_ISDIR(st.st_mode)
        return self.fs.isdir(self.path)

    def read_bytes(self) -> bytes:
        if self.is_local:
            with open(self.path, "rb") as f:
                return f.read()
        return self.fs.cat_file(self.path)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8-sig")

    def write_bytes(self, data: bytes) -> None:
        """Write a small file atomically (local disks: temporary name, then move into place; object
        stores: one request), once the fence of its output passed (see fenced)."""
        if self.is_local or _protocols(self.fs)[0] not in _STREAMING:
            with publish(self) as f:
                f.write(data)
            return
        check_fence(self)
        try:
            self.fs.pipe_file(self.path, data)
        except OSError as e:
            if isinstance(e, PermissionError):
                raise
            raise BadOutput(f"{self.url}: cannot be written ({e.strerror or e})") from e
        check_fence(self, written=True)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def size(self) -> int:
        return int(self.fs.size(self.path))

    def list_dir(self, root: Location | None = None) -> list[Entry]:
        """Entries directly under this directory, sorted by name.

        On local disks a symlink whose target lies outside ``root`` (default: this
        directory) is reported as kind "outside" and not followed, and this directory itself must
        not be reached through such a link (MetadataError, as for a folder that cannot be read).
        Names every layout ignores (is_ignored) are of kind "ignored". Files carry their size and
        a stamp that changes when their content is replaced (see Entry).
        """
        if self.is_local:
            return _list_local(self.path, (root or self).path)
        entries = []
        for info in self.fs.ls(self.path, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if is_ignored(name):
                entries.append(Entry(name, "ignored"))
            elif info.get("type") == "directory":
                entries.append(Entry(name, "dir"))
            else:
                entries.append(Entry(name, "file", int(info.get("size") or 0), _stamp(info)))
        return sorted(entries)  # by name (names are unique)

    def read_many(self, names: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """Yield (name, content or the error reading it) for files under this directory.

        Object stores fetch a batch concurrently; local files are read one by one.
        """
        if self.is_local:
            for name in names:
                try:
                    yield name, _read_local(f"{self.path}/{name}")
                except OSError as e:
                    yield name, e
            return
        batch = 64
        for i in range(0, len(names), batch):
            chunk = names[i : i + batch]
            paths = [f"{self.path}/{n}" for n in chunk]
            got = self.fs.cat(paths, on_error="return")
            for name, path in zip(chunk, paths, strict=True):
                yield name, got.get(path, FileNotFoundError(path))


class BadOutput(InputError):
    """An output URL that cannot be written, or that would write into the input; the message names it."""


class LostOutput(BadOutput):
    """Someone else removed what this run was writing (its temporary file, its lock or lease): the
    output is not this run's alone; the message names what was lost."""


def check_output(out: Location, inside: list[Location]) -> None:
    """Fail before any work when ``out`` is no folder we can write, or is one of ``inside`` or below one.

    Local outputs are probed for real (a temporary file is created and removed in the folder, or
    in its nearest existing parent), so read-only file systems and ACLs are caught, for root too.
    Object stores are not probed: missing credentials show up as a PermissionError at the first write.
    """
    for loc in inside:
        if _protocols(loc.fs) == _protocols(out.fs) and _within(out, loc):
            raise BadOutput(f"{out.url}: the output must not be {loc.url} or inside it (that is where the data is)")
    if not out.is_local:
        return
    folder = out.path
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        what = "the output" if folder == out.path else f"{folder}, a parent of the output,"
        raise BadOutput(f"{out.url}: {what} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise BadOutput(f"{out.url}: cannot write in {folder} ({e.strerror or e})") from None


def _within(a: Location, b: Location) -> bool:
    pa, pb = (os.path.realpath(x.path) for x in (a, b)) if a.is_local else (a.path, b.path)
    return pa == pb or pa.startswith(pb.rstrip("/") + "/")


class Entry(NamedTuple):
    """One directory entry. ``size`` and ``stamp`` identify a file's content without reading it:
    modification and change times (ns) on local disks, the object generation or ETag on object
    stores. Together with the name they make a shard's input fingerprint (see convert.py). (A
    tuple: planning makes one per input file.)"""

    name: str
    # "file", "dir", "outside" (a symlink leaving the dataset root), "special", "loop" (a symlink loop),
    # "badname" (a name that is not UTF-8, escaped: printable_name) or "ignored" (is_ignored)
    kind: str
    size: int = -1
    stamp: str = ""

    @property
    def identity(self) -> list:
        return [self.name, self.kind, self.size, self.stamp]

    @property
    def reason(self) -> str:
        """Why an entry that is not a file is not converted."""
        return _NOT_CONVERTED.get(self.kind, f"not a regular file ({self.kind})")


_NOT_CONVERTED = {
    "dir": "a directory where images are expected",
    "loop": "symbolic link loop (too many levels of symbolic links)",
    "badname": "file name is not valid UTF-8 (shown with its bytes escaped as \\xNN)",
    "ignored": "ignored (a name starting with '.', Thumbs.db or desktop.ini)",
    "outside": "symlink pointing outside the dataset root (not followed)",
    "special": "not a regular file (FIFO, socket or device)",
}


def file_entry(loc: Location) -> Entry:
    """The Entry (size and change stamp, as list_dir gives them) of the single file at ``loc``."""
    name = loc.path.rsplit("/", 1)[-1]
    if loc.is_local:
        st = os.stat(loc.path)
        return Entry(name, "file", st.st_size, f"{st.st_mtime_ns}.{st.st_ctime_ns}")
    info = loc.fs.info(loc.path)
    return Entry(name, "file", int(info.get("size") or 0), _stamp(info))


def _read_local(path: str) -> bytes:
    """A whole local file, with fewer system calls and objects than open().read()."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)  # one read, unless the file is growing
        if len(data) <= size:
            return data
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# What changes when an object is replaced, by store: GCS generation, S3/HTTP ETag, else a time.
_STAMP_KEYS = ("generation", "ETag", "etag", "md5Hash", "mtime", "LastModified", "updated", "last_modified", "created")


def _stamp(info: dict) -> str:
    for key in _STAMP_KEYS:
        if info.get(key) not in (None, ""):
            return f"{key}={info[key]}"
    return ""


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _local_stat(path: str) -> os.stat_result | None:
    """os.stat of a local path, None when there is nothing there (or a dangling or looping link);
    MetadataError naming the folder that cannot be searched when it cannot be looked at."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        pass
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise
    # the folder that cannot be searched: the nearest parent that can be looked at
    folder = os.path.dirname(path)
    while folder != os.path.dirname(folder):
        try:
            os.stat(folder)
            break
        except PermissionError:
            folder = os.path.dirname(folder)
    raise MetadataError(f"{folder}: cannot be read (permission denied)")


def outside_root(path: str, root: str) -> str | None:
    """Where the local ``path`` really is when that is outside the folder ``root`` (links followed), else None."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return None if real == top or real.startswith(top.rstrip(os.sep) + os.sep) else real


def check_inside(loc: Location, root: Location) -> None:
    """MetadataError naming ``loc`` when it is reached through a link leaving the dataset ``root`` (local)."""
    if loc.is_local and root.is_local and (real := outside_root(loc.path, root.path)):
        raise MetadataError(
            f"{loc.url}: a symbolic link leaving the dataset folder {root.url} (to {real}); not followed"
        )


def _list_local(path: str, root: str) -> list[Entry]:
    if real := outside_root(path, root):
        raise MetadataError(f"{path}: a symbolic link leaving the dataset folder {root} (to {real}); not followed")
    try:
        return _scan_local(path, os.path.realpath(root))
    except PermissionError:
        raise MetadataError(f"{path}: cannot be read (permission denied)") from None


def _scan_local(path: str, root: str) -> list[Entry]:
    entries = []
    with os.scandir(path) as it:
        for e in it:
            name = e.name
            if name[0] == "." or (name[0] in "TtDd" and name.lower() in IGNORED_NAMES):
                entries.append(Entry(printable_name(name), "ignored"))
                continue
            if not name.isascii() and printable_name(name) != name:
                entries.append(Entry(printable_name(name), "badname"))
                continue
            if e.is_file(follow_symlinks=False):  # (the common case first: no link to resolve)
                st = e.stat(follow_symlinks=False)
                # ctime too: a copy that keeps the old modification time (cp -p, rsync -t) still changes it
                entries.append(Entry(name, "file", st.st_size, f"{st.st_mtime_ns}.{st.st_ctime_ns}"))
                continue
            try:
                entries.append(_linked_entry(e, root))
            except OSError as err:
                if err.errno != errno.ELOOP:
                    raise
                entries.append(Entry(name, "loop"))
    entries.sort()  # by name (names are unique)
    return entries


def _linked_entry(e: os.DirEntry, root: str) -> Entry:
    """The Entry of what is not a plain file: a link (not followed when it leaves ``root``), a folder..."""
    if e.is_symlink() and not os.path.realpath(e.path).startswith(root + os.sep):
        return Entry(e.name, "outside")
    if e.is_dir():
        return Entry(e.name, "dir")
    if e.is_file():
        st = e.stat()
        return Entry(e.name, "file", st.st_size, f"{st.st_mtime_ns}.{st.st_ctime_ns}")
    if e.is_symlink() and not os.path.exists(e.path):
        return Entry(e.name, "file")  # a broken link fails to read, with the reason
    return Entry(e.name, "special")


def open_regular(path: str) -> int | None:
    """A read-only descriptor of the regular file at ``path``, never opened through a link nor
    waiting on a FIFO; None when it is gone, a link or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # gone, or a link (ELOOP)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary files of ``path`` that a killed writer left behind: those whose writer is
    dead, i.e. that nobody holds the flock of (publish holds it while it writes). Only regular files
    of this user, never through a link."""
    parent, name = os.path.split(path)
    for stale in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.{'?' * 8}.tmp")):
        if (fd := open_regular(stale)) is None:
            continue
        try:
            if os.fstat(fd).st_uid != os.getuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer's
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
        finally:
            os.close(fd)


def _new_temporary(dest: Location) -> tuple[int, str]:
    """A new temporary file beside the local ``dest``, flocked (so that no other run takes it for a
    dead writer's), once the temporaries that killed writers left there are removed: (fd, path)."""
    parent = os.path.dirname(dest.path)
    try:
        os.makedirs(parent, exist_ok=True)
        _remove_stale_temporaries(dest.path)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest.path)}.", suffix=".tmp", dir=parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # (never waits: the file is new)
    except OSError as e:
        raise BadOutput(f"{dest.url}: cannot be written ({e.strerror or e})") from e
    return fd, tmp


def create_new(dest: Location, data: bytes) -> bool:
    """Write the small local file ``dest`` only if nothing is there; False when something is.

    The file appears complete or not at all: ``data`` goes to a temporary file in the same folder
    (named as publish names them, so a killed writer's is removed later), which is then linked to
    ``dest`` (link(2) fails when ``dest`` exists: of two commands creating it at once, one wins).
    """
    fd, tmp = _new_temporary(dest)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, data)
        os.link(tmp, dest.path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise BadOutput(f"{dest.url}: cannot be written ({e.strerror or e})") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        os.close(fd)


# --- publishing, under the fence ---------------------------------------------------------------

# Stores whose uploads stream and commit on demand: an S3 multipart upload appears only when it is
# completed, a GCS resumable upload only when its last part is sent (fsspec's ``autocommit=False``).
_STREAMING = ("s3", "s3a", "gs", "gcs")
# The part size of streamed uploads: what a writer holds in memory. S3 takes parts of 5 MiB and more
# (10,000 at most: 80 GiB a file at this size), GCS multiples of 256 KiB.
UPLOAD_PART = 8 << 20

_fences: dict[tuple[str, str], Callable[[Location | None], None]] = {}
_fences_lock = threading.Lock()


def _key(loc: Location) -> tuple[str, str]:
    return _protocols(loc.fs)[0], loc.path.rstrip("/")


def fence(out: Location, check: Callable[[Location | None], None] | None) -> None:
    """Register ``check`` (None: remove it) as the fence of the output ``out``: a callable that raises
    LostOutput once this process may no longer write there (lock.py's lease). Every write and removal
    under ``out`` calls it right before it becomes visible (check_fence). Forked workers inherit it."""
    with _fences_lock:
        if check is None:
            _fences.pop(_key(out), None)
        else:
            _fences[_key(out)] = check


def fence_of(out: Location) -> Callable[[Location | None], None] | None:
    """The fence registered for the output ``out`` (to hand to worker processes), or None."""
    return _fences.get(_key(out))


def check_fence(dest: Location, written: bool = False) -> None:
    """Raise LostOutput when ``dest`` lies in an output whose fence says this writer lost it.

    ``written``: the check made again just after ``dest`` was made visible; a fence that finds the
    output lost then takes back what the write put there if it is no file of the output's new owner
    (see lock.Fence): a write paused between the first check and its commit leaves no stray file."""
    protocol, path = _key(dest)
    with _fences_lock:
        checks = [c for (p, root), c in _fences.items() if p == protocol and (path + "/").startswith(root + "/")]
    for check in checks:
        check(dest if written else None)


def remove(loc: Location) -> None:
    """Remove the file at ``loc`` once the fence of its output passed (a missing file is no error)."""
    check_fence(loc)
    with contextlib.suppress(FileNotFoundError):
        loc.fs.rm_file(loc.path)


@contextmanager
def publish(dest: Location) -> Iterator[IO[bytes]]:
    """Yield a binary file to write ``dest``'s content to; when the block succeeds and the fence of
    its output passed (check_fence), make it ``dest`` in one step.

    Local destinations get a temporary file in the same directory, flocked while it is written (so
    that no other run takes it for a dead writer's), and an atomic rename; its temporary files that a
    killed writer left are removed first. S3 and GCS get an upload streamed in parts of UPLOAD_PART
    bytes (nothing staged on local disk), committed after the check; other stores a temporary object
    moved into place. On failure (the fence's LostOutput included) ``dest`` is left untouched and the
    temporary file or upload is removed or aborted. LostOutput when the temporary file was removed by
    someone else meanwhile. The file object is plain: a caller may wrap it (to hash what it writes).
    """
    if dest.is_local:
        with _publish_local(dest) as f:
            yield f
        return
    protocol = _protocols(dest.fs)[0]
    try:
        if protocol in _STREAMING:
            f = dest.fs.open(dest.path, "wb", autocommit=False, block_size=UPLOAD_PART)
        else:
            tmp = f"{dest.path}.{uuid.uuid4().hex[:8]}.tmp"
            f = dest.fs.open(tmp, "wb")
    except OSError as e:
        if isinstance(e, PermissionError):
            raise
        raise BadOutput(f"{dest.url}: cannot be written ({e.strerror or e})") from e
    committed = False
    try:
        yield f
        f.close()  # (every part but the last is uploaded; nothing is visible yet)
        check_fence(dest)
        if protocol in _STREAMING:
            f.commit()
            dest.fs.invalidate_cache(dest.path)
        else:
            dest.fs.mv(tmp, dest.path)
        committed = True
        check_fence(dest, written=True)
    except OSError as e:
        if e.filename not in (None, dest.path) or isinstance(e, PermissionError):
            raise
        raise BadOutput(f"{dest.url}: cannot be written ({e.strerror or e})") from e
    except GeneratorExit:
        # a generator holding this block closed, maybe by the garbage collector: no request from here
        # (an upload left uncommitted is invisible; S3 lifecycle rules and GCS abort such uploads)
        committed = True
        raise
    finally:
        if not committed:
            with contextlib.suppress(Exception):
                if protocol in _STREAMING:
                    with _unlogged(protocol):
                        f.discard()  # abort the multipart or resumable upload
                else:
                    f.close()
                    dest.fs.rm_file(tmp)
        f.closed = True  # (never uploaded when garbage-collected)


@contextmanager
def _unlogged(protocol: str) -> Iterator[None]:
    """Mutes the store library's logger around a best-effort request whose failure is handled: a
    cancel of a resumable upload that fails is logged by gcsfs as an error with its traceback (GCS
    answers 499, which gcsfs takes as done; the GCS emulator 501, which it retries, then logs). The
    upload is invisible either way, and expires."""
    logger = logging.getLogger("gcsfs" if protocol in ("gs", "gcs") else "s3fs")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


@contextmanager
def _publish_local(dest: Location) -> Iterator[IO[bytes]]:
    fd, tmp = _new_temporary(dest)
    f = open(tmp, "wb", buffering=1 << 16)  # noqa: SIM115 - closed below (the flock stays with fd)
    try:
        yield f
        f.close()
        check_fence(dest)
        try:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest.path)
        except FileNotFoundError:
            raise LostOutput(
                f"{dest.url}: the temporary file {tmp} that this run was writing was removed by another "
                "process (another run writing or cleaning the same output?); stopped (finished shards are kept)"
            ) from None
    except OSError as e:
        # a full disk, a quota, a folder removed meanwhile: the file that could not be written, named
        if e.filename not in (None, tmp, dest.path):
            raise
        raise BadOutput(f"{dest.url}: cannot be written ({e.strerror or e})") from e
    finally:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)  # (still locked: nobody else removes it meanwhile)
        os.close(fd)
