"""URL handling through fsspec: local paths, file://, memory://, gs://, s3://.

Every read and write of the project goes through here, so local disks and object stores
share one code path. Shards are published atomically: they are written to a local
temporary file first, then renamed into place (local output) or uploaded in one piece
(object stores commit an upload only when it is complete), so a killed task never
leaves a truncated file under a final name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import fsspec
from fsspec.core import url_to_fs


@dataclass(frozen=True)
class Location:
    """A directory (or file) URL resolved to its fsspec filesystem."""

    url: str
    fs: fsspec.AbstractFileSystem
    path: str

    @classmethod
    def of(cls, url: str) -> Location:
        url = str(url)
        fs, path = url_to_fs(url)
        return cls(url.rstrip("/") or url, fs, path.rstrip("/") or path)

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def child(self, *parts: str) -> Location:
        rel = "/".join(p.strip("/") for p in parts if p)
        return Location(f"{self.url}/{rel}", self.fs, f"{self.path}/{rel}")

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def isdir(self) -> bool:
        return self.fs.isdir(self.path)

    def read_bytes(self) -> bytes:
        if self.is_local:
            with open(self.path, "rb") as f:
                return f.read()
        return self.fs.cat_file(self.path)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8-sig")

    def write_bytes(self, data: bytes) -> None:
        """Write a small file atomically (temporary name, then move into place)."""
        with publish(self) as tmp, open(tmp, "wb") as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def size(self) -> int:
        return int(self.fs.size(self.path))

    def list_dir(self, root: Location | None = None) -> list[Entry]:
        """Entries directly under this directory, sorted by name.

        On local disks a symlink whose target lies outside ``root`` (default: this
        directory) is reported as kind "outside" and not followed. Files carry their size and
        a stamp that changes when their content is replaced (see Entry).
        """
        if self.is_local:
            return _list_local(self.path, (root or self).path)
        entries = []
        for info in self.fs.ls(self.path, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") == "directory":
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


class BadOutput(ValueError):
    """An output URL that cannot be written, or that would write into the input; the message names it."""


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
    kind: str  # "file", "dir", "outside" (a symlink leaving the dataset root) or "special"
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


def _list_local(path: str, root: str) -> list[Entry]:
    entries = []
    root = os.path.realpath(root)
    with os.scandir(path) as it:
        for e in it:
            if e.is_file(follow_symlinks=False):  # (the common case first: no link to resolve)
                st = e.stat(follow_symlinks=False)
                # ctime too: a copy that keeps the old modification time (cp -p, rsync -t) still changes it
                entries.append(Entry(e.name, "file", st.st_size, f"{st.st_mtime_ns}.{st.st_ctime_ns}"))
                continue
            if e.is_symlink():
                target = os.path.realpath(e.path)
                if not target.startswith(root + os.sep):
                    entries.append(Entry(e.name, "outside"))
                    continue
            if e.is_dir():
                entries.append(Entry(e.name, "dir"))
            elif e.is_file():
                st = e.stat()
                entries.append(Entry(e.name, "file", st.st_size, f"{st.st_mtime_ns}.{st.st_ctime_ns}"))
            elif e.is_symlink() and not os.path.exists(e.path):
                entries.append(Entry(e.name, "file"))  # a broken link fails to read, with the reason
            else:
                entries.append(Entry(e.name, "special"))
    entries.sort()  # by name (names are unique)
    return entries


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary files that a killed writer of ``path`` left behind."""
    parent, name = os.path.split(path)
    for stale in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.{'?' * 8}.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)


@contextmanager
def publish(dest: Location) -> Iterator[str]:
    """Yield a local temporary path; when the block succeeds, move it to ``dest``.

    Local destinations get a temporary file in the same directory and an atomic rename;
    remote ones get a temporary local file uploaded in one request after the block ends.
    On failure the temporary file is removed and ``dest`` is left untouched; temporary files
    of ``dest`` that a killed writer left behind are removed before a new one is made.
    """
    if dest.is_local:
        parent = os.path.dirname(dest.path)
        os.makedirs(parent, exist_ok=True)
        _remove_stale_temporaries(dest.path)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest.path)}.", suffix=".tmp", dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        if dest.is_local:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest.path)
        else:
            dest.fs.put_file(tmp, dest.path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
