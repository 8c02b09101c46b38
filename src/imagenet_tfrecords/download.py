"""Download and safely extract the TinyImageNet archive (standard library HTTP, resumable).

The archive is fetched into ``<output>/<name>.part``; an interrupted download (or a dropped
connection, retried here) resumes with an HTTP Range request from the bytes already on disk.
When complete it is renamed to ``<output>/<name>``, its SHA-256 is checked, and the zip is
extracted into ``<output>`` only if every entry stays inside it: absolute paths, ``..``
components, symlinks and other special files are refused before anything is written. What the
archive holds is never extracted over: when it is there already it is kept if it is the same (names
and sizes), else refused (ExtractedDiffers), left as it is.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass

DEFAULT_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

# Stanford publishes no checksum for the archive. Its size (248,100,043 bytes), MD5
# (90528d7ca1a48142e341f4ef8d21d0de, the value dataset loaders have checked for years) and this
# SHA-256 are recorded consistently by several independent projects that downloaded it from
# cs231n.stanford.edu; it is checked by default for the official URL (over http or https).
KNOWN_SHA256 = {
    DEFAULT_URL: "6198c8ae015e2b3e007c7841da39ec069199b9aa3bfa943a462022fe5e43c821",
    DEFAULT_URL.replace("http://", "https://"): "6198c8ae015e2b3e007c7841da39ec069199b9aa3bfa943a462022fe5e43c821",
}

CHUNK = 1 << 20
log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """The server could not be reached or did not send the file (the .part file is kept)."""


class ChecksumMismatch(ValueError):
    """The downloaded file does not have the expected SHA-256 (it is deleted)."""


class ExtractedDiffers(FileExistsError):
    """What the archive holds is in the output folder already, but differs from it (left as it is)."""


class UnsafeArchive(ValueError):
    """The archive is not a readable zip, or an entry would land outside the target folder."""


@dataclass
class Result:
    archive: str
    sha256: str
    checked: bool  # compared with an expected SHA-256
    downloaded: int  # bytes fetched by this call (0 when the archive was already complete)
    resumed_from: int  # bytes that were already in the .part file
    extracted: list[str]  # top-level entries extracted into the output folder
    files: int


def is_sha256(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def archive_name(url: str) -> str:
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"cannot take a file name from {url!r}")
    return name


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _Progress:
    """A tqdm bar on a terminal, a log line every 10% otherwise."""

    def __init__(self, total: int | None, done: int, desc: str, show: bool | None, unit: str = "B"):
        self.total, self.done, self.desc, self.unit = total, done, desc, unit
        self.bar = None
        self.next_log = 0.1
        if show is None:
            show = sys.stderr.isatty()
        if show:
            from tqdm import tqdm

            scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
            self.bar = tqdm(total=total, initial=done, unit=unit, desc=desc, file=sys.stderr, **scale)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.total and self.done / self.total >= self.next_log:
            log.info(
                "%s: %d of %d %s (%.0f%%)", self.desc, self.done, self.total, self.unit, 100 * self.done / self.total
            )
            self.next_log = (int(10 * self.done / self.total) + 1) / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from 'bytes 100-199/200' or 'bytes */200'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return first, total


class _Interrupted(Exception):
    """The transfer stopped part way; what arrived is in the .part file, so it can resume."""


def _fetch_once(url: str, part: str, state: dict, show_progress: bool | None, timeout: float) -> None:
    """Fetch the rest of ``url`` into ``part`` (appending to what is there).

    ``state["fetched"]`` counts the bytes received; ``state["kept"]`` is set to 0 when the
    bytes that were on disk had to be discarded.
    """
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": "imagenet-tfrecords", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == have:
                return  # the .part file already holds the whole file
            log.warning("%s: the server refused to resume at byte %d; starting over", url, have)
            os.remove(part)
            state["kept"] = 0
            return _fetch_once(url, part, state, show_progress, timeout)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        if not state["fetched"] and isinstance(e, urllib.error.URLError) and isinstance(reason, OSError):
            # no host by that name, nothing listening, no route: retrying in seconds would not help
            host = urllib.parse.urlparse(url).netloc
            raise DownloadError(f"{url}: cannot connect to {host}: {reason.strerror or reason}") from e
        raise _Interrupted(f"cannot connect: {reason}") from e
    with response:
        if response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                raise DownloadError(f"{url}: asked for the bytes from {have}, the server sent them from {first}")
            mode = "ab"
        elif response.status == 200:
            if have:
                log.warning("%s: the server does not support resuming; downloading from the start", url)
                state["kept"] = 0
            have, mode, total = 0, "wb", None
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {response.status}")
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        if total is None and expected is not None:
            total = have + expected
        got = 0
        progress = _Progress(total, have, os.path.basename(part)[: -len(".part")], show_progress)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Interrupted(f"the connection failed after {got} bytes: {e!r}") from e
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    state["fetched"] += len(chunk)
                    progress.update(len(chunk))
        finally:
            progress.close()
    if expected is not None and got != expected:
        raise _Interrupted(f"the connection ended after {got} of {expected} bytes")


def fetch(url: str, dest: str, *, retries: int = 3, show_progress: bool | None = None, timeout: float = 60.0):
    """Download ``url`` to ``dest`` through ``dest.part``; return (bytes fetched, bytes of the .part file kept).

    A dropped connection or a failed connect is retried ``retries`` times, each time resuming
    from what is on disk; HTTP errors (404, ...) are not retried. The .part file is kept on
    failure, so running again resumes.
    """
    part = dest + ".part"
    resumed_from = os.path.getsize(part) if os.path.exists(part) else 0
    if resumed_from:
        log.info("resuming %s from byte %d", url, resumed_from)
    state = {"fetched": 0, "kept": resumed_from}
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, state, show_progress, timeout)
            break
        except _Interrupted as e:
            if attempt == retries:
                raise DownloadError(f"{url}: {e}; gave up after {retries + 1} attempts (run again to resume)") from e
            delay = min(2**attempt, 30)
            log.warning("%s: %s; resuming in %d s (retry %d of %d)", url, e, delay, attempt + 1, retries)
            time.sleep(delay)
    os.replace(part, dest)
    return state["fetched"], state["kept"]


def _unsafe_reason(info: zipfile.ZipInfo, target: str) -> str | None:
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)  # unix file type; 0 when the zip does not record it
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal):
        return "absolute path"
    if any(part == ".." for part in normal.split("/")):
        return "'..' component"
    if "\x00" in normal:
        return "NUL in name"
    dest = os.path.realpath(os.path.join(target, normal))
    if os.path.commonpath([dest, target]) != target:
        return "resolves outside the target folder"
    return None


def check_archive(path: str, target: str) -> list[zipfile.ZipInfo]:
    """The entries of the zip at ``path``; raise UnsafeArchive naming every entry that would escape ``target``."""
    target = os.path.realpath(target)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise UnsafeArchive(f"{path}: not a readable zip archive ({e})") from e
    bad = [f"{i.filename!r}: {reason}" for i in infos if (reason := _unsafe_reason(i, target))]
    seen = Counter(i.filename.replace("\\", "/").rstrip("/") for i in infos)
    bad += [f"{name!r}: duplicate entry" for name, n in sorted(seen.items()) if n > 1]
    if bad:
        raise UnsafeArchive(
            f"{path}: refusing to extract; {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} would not stay inside "
            f"{target}:\n  " + "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        )
    return infos


def _top_level(infos: list[zipfile.ZipInfo]) -> list[str]:
    return sorted({i.filename.replace("\\", "/").split("/", 1)[0] for i in infos} - {""})


def tree_difference(target: str, infos: list[zipfile.ZipInfo]) -> str | None:
    """How the files under ``target`` differ from the zip entries ``infos`` (names and sizes), or None.

    Checks every entry's file and, within the archive's top-level folders, files the archive does not hold.
    """
    expected = {i.filename.replace("\\", "/").rstrip("/"): i for i in infos}
    folders = {name.rsplit("/", k)[0] for name in expected for k in range(1, name.count("/") + 1)}
    problems = []
    for name, info in sorted(expected.items()):
        path = os.path.join(target, *name.split("/"))
        if info.is_dir():
            if not os.path.isdir(path):
                problems.append(f"{name}/: missing")
        elif not os.path.isfile(path):
            problems.append(f"{name}: missing")
        elif os.path.getsize(path) != info.file_size:
            problems.append(f"{name}: {os.path.getsize(path)} bytes, the archive's {info.file_size}")
    for top in _top_level(infos):
        for folder, dirs, files in os.walk(os.path.join(target, top)):
            for name in sorted(dirs + files):
                rel = os.path.relpath(os.path.join(folder, name), target).replace(os.sep, "/")
                if rel not in expected and rel not in folders:
                    problems.append(f"{rel}: not in the archive")
    if not problems:
        return None
    more = f", and {len(problems) - 1} more difference{'s' if len(problems) > 2 else ''}" if len(problems) > 1 else ""
    return problems[0] + more


def extract(path: str, target: str, *, show_progress: bool | None = None) -> tuple[list[str], int]:
    """Extract the zip at ``path`` into ``target`` after check_archive; return (top-level names, files).

    Entries are written to a temporary folder inside ``target`` first and moved into place
    when all are written, so an interrupted extraction leaves no half-written tree under the
    final names. Existing top-level entries are never overwritten.
    """
    target = os.path.realpath(target)
    infos = check_archive(path, target)
    top = _top_level(infos)
    clash = [t for t in top if os.path.lexists(os.path.join(target, t))]
    if clash:
        raise FileExistsError(
            f"{os.path.join(target, clash[0])} already exists; remove it or choose another --output to extract {path}"
        )
    tmp = tempfile.mkdtemp(prefix=".extracting-", dir=target)
    files = 0
    try:
        progress = _Progress(len(infos), 0, f"extracting {os.path.basename(path)}", show_progress, unit="entries")
        with zipfile.ZipFile(path) as zf:
            for info in infos:
                dest = os.path.join(tmp, *info.filename.replace("\\", "/").split("/"))
                if info.is_dir():
                    os.makedirs(dest, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with zf.open(info) as src, open(dest, "xb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    files += 1
                progress.update(1)
        progress.close()
        for name in top:
            os.rename(os.path.join(tmp, name), os.path.join(target, name))
    except zipfile.BadZipFile as e:
        raise UnsafeArchive(f"{path}: corrupt zip archive ({e})") from e
    except OSError as e:  # a full disk, a quota, a folder that cannot be written
        raise DownloadError(
            f"{path}: cannot be extracted into {target}: {e.strerror or e}; nothing was extracted "
            "(the archive is kept: make room and run the same command again)"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return top, files


def download(
    url: str = DEFAULT_URL,
    output: str = ".",
    sha256: str | None = None,
    *,
    retries: int = 3,
    show_progress: bool | None = None,
    timeout: float = 60.0,
) -> Result:
    """Fetch ``url`` into ``output`` (resuming), check its SHA-256, extract it safely into ``output``.

    The expected SHA-256 is ``sha256``, else the recorded one for the official archive, else
    none (the result says it was not checked). A mismatch deletes the file and raises
    ChecksumMismatch before anything is extracted.
    """
    if sha256 is not None and not is_sha256(sha256):
        raise ValueError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    expected = (sha256 or KNOWN_SHA256.get(url) or "").lower() or None
    os.makedirs(output, exist_ok=True)
    dest = os.path.join(output, archive_name(url))
    fetched = resumed_from = 0
    if os.path.exists(dest):
        log.info("%s is already downloaded; checking it", dest)
    else:
        fetched, resumed_from = fetch(url, dest, retries=retries, show_progress=show_progress, timeout=timeout)
    actual = file_sha256(dest)
    if expected and actual != expected:
        if fetched or resumed_from:  # downloaded by this command: a bad download
            os.remove(dest)
            raise ChecksumMismatch(
                f"{dest}: SHA-256 is {actual}, expected {expected}; the file was deleted and nothing was extracted"
            )
        raise ChecksumMismatch(
            f"{dest}: SHA-256 is {actual}, expected {expected}; the file was there before and is left as it is: "
            "move it away and run the command again to download the archive; nothing was extracted"
        )
    # What the archive holds may be there already: kept when it is the same, never overwritten.
    infos = check_archive(dest, output)
    top = _top_level(infos)
    if any(os.path.lexists(os.path.join(output, t)) for t in top):
        difference = tree_difference(output, infos)
        if difference:
            raise ExtractedDiffers(
                f"{os.path.join(output, top[0])} exists and differs from {dest} ({difference}); it was left as it "
                f"is: move it away (or choose another --output) and run the command again to extract the archive"
            )
        log.info("%s was already extracted into %s", dest, output)
        return Result(dest, actual, bool(expected), fetched, resumed_from, top, 0)
    top, files = extract(dest, output, show_progress=show_progress)
    return Result(dest, actual, bool(expected), fetched, resumed_from, top, files)
