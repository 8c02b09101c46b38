"""Tar archives read in place: members listed from their headers alone, images read as byte ranges.

A tar is a sequence of 512-byte headers, each followed by its member's data padded to 512 bytes,
so a member's bytes are one contiguous range of the file. ``list_tar`` walks the headers only
(one 512-byte read per member, plus the payload of GNU long-name and pax headers), never the
data; ``list_nested`` also walks every member that is itself a tar (ImageNet's train archive: a
tar of per-class tars, stored uncompressed) in place, with offsets in the outer file, and
``iter_inner`` lists such inner tars a group at a time, so memory holds one group's members. The
walks of the inner tars (of a group) advance together, the k-th header of each in one batch of
range reads (``fs.cat_ranges``: concurrent requests on object stores), so listing a group costs
about as many round trips as its largest inner tar has members, not as many as all of them together. A flat
tar of many members (ImageNet's val and test archives) is listed from many starting points at
once: one window read every ``SEGMENT_BYTES`` finds the first header in it, a walk starts at each,
and each walk stops where the next one started, so the walks chain into the one listing a walk
from byte 0 would give (a start that is no real header, e.g. inside a member that is itself a
tar, is never reached by the chain and so never used). Local files are read through one open
file and seeks.

On object stores the walks do not wait for each other: every walk has its next read in flight as
soon as its last one returned, up to ``in_flight_reads()`` requests at once
(``IMAGENET_TFRECORDS_RANGE_READS``, default 256), and ``iter_inner`` keeps up to ``group`` inner
tars walking, starting the next one as the oldest is handed over (a sliding window rather than one
group after another). A listing then costs about (its requests / the reads in flight) latencies,
plus the longest walk, instead of one latency per header of the largest tar of every group.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import tarfile
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

from .fs import Location
from .plan import MetadataError, Source
from .procs import first_done

BLOCK = 512
BATCH = 128  # byte ranges per fs.cat_ranges call when reading images
SEGMENT_BYTES = 16 << 20  # a flat tar is walked from one starting point per this many bytes
WINDOW = 256 << 10  # bytes read at each starting point to find a header
_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)
IN_FLIGHT_ENV = "IMAGENET_TFRECORDS_RANGE_READS"
DEFAULT_IN_FLIGHT = 256


def in_flight_reads() -> int:
    """How many range reads a listing keeps in flight on an object store (IN_FLIGHT_ENV, default 256)."""
    value = os.environ.get(IN_FLIGHT_ENV, "")
    if not value:
        return DEFAULT_IN_FLIGHT
    if not value.isdigit() or int(value) < 1:
        raise MetadataError(f"{IN_FLIGHT_ENV}={value[:20]!r}: must be a whole number of 1 or more")
    return int(value)


class ArchiveError(MetadataError):
    """An archive whose headers cannot be read; the message names the archive and the byte offset."""


@dataclass(frozen=True)
class Member:
    """One tar member: its path, where its data starts in the archive file, its size, and its
    kind ("file", "dir", or the tar type of anything else, e.g. "symlink")."""

    name: str
    offset: int
    size: int
    kind: str = "file"

    @property
    def span(self) -> tuple[int, int]:
        return (self.offset, self.size)


class RangeReader:
    """Byte ranges of one file, counting requests and bytes: one open file and seeks on local
    disks, batched ``fs.cat_ranges`` calls (concurrent requests) on object stores."""

    def __init__(self, loc: Location, in_flight: int | None = None):
        self.loc = loc
        self.rounds = 0  # batches of reads, each waiting for the one before (the longest walk, pipelined)
        self.requests = 0
        self.bytes = 0
        self.in_flight = in_flight or in_flight_reads()
        self.peak = 0  # the most reads in flight at once (pipelined walks)
        self._file = open(loc.path, "rb") if loc.is_local else None  # noqa: SIM115 (closed by close())
        self._async = None if loc.is_local else _async_fs(loc, self.in_flight)

    def read(self, spans: Sequence[tuple[int, int]]) -> list[bytes | Exception]:
        """The bytes of each (offset, size), or the error reading it; fewer bytes at the file's end."""
        if self._file is not None:
            got = [self._read_local(offset, size) for offset, size in spans]
        else:
            starts = [offset for offset, _ in spans]
            ends = [offset + size for offset, size in spans]
            got = self.loc.fs.cat_ranges([self.loc.path] * len(spans), starts, ends, on_error="return")
        self.rounds += 1
        self.requests += len(spans)
        self.bytes += sum(len(b) for b in got if isinstance(b, bytes))
        return got

    def _read_local(self, offset: int, size: int) -> bytes | Exception:
        try:
            self._file.seek(offset)
            return self._file.read(size)
        except OSError as e:
            return e

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_tar(loc: Location, reader: RangeReader | None = None, segment: int = SEGMENT_BYTES) -> list[Member]:
    """The members of the tar file at ``loc``, from its headers (and one ``WINDOW`` per ``segment``
    bytes, 0: none) alone; ``reader`` counts the reads."""
    with reader or RangeReader(loc) as r:
        return _list(r, segment)


def list_nested(loc: Location, reader: RangeReader | None = None) -> tuple[list[Member], dict[str, list[Member]]]:
    """The members of the tar at ``loc`` and, for each member named ``*.tar``, the members of
    that inner tar (offsets in the outer file), from headers alone."""
    with reader or RangeReader(loc) as r:
        outer = _list(r, segment=0)  # its members are tars: a window would find their headers
        tars = [m for m in outer if m.kind == "file" and m.name.endswith(".tar")]
        inner = list_inner(r, tars)
    return outer, {m.name: members for m, members in zip(tars, inner, strict=True)}


def list_inner(reader: RangeReader, tars: Sequence[Member]) -> list[list[Member]]:
    """The members of each of ``tars`` (members of the reader's file that are tars), with offsets
    in that file, from headers alone: the walks advance together (local files: the k-th header of
    each in one batch; object stores: each walk's next read issued as its last one returns), so this
    costs about as many latencies as the largest of ``tars`` has members."""
    return [members for _, members in _inner(reader, tars, len(tars) or 1)]


def iter_inner(loc: Location, tars: Sequence[Member], group: int) -> Iterator[tuple[Member, list[Member]]]:
    """(tar, its members) for each of ``tars`` (members of the tar file at ``loc`` that are tars),
    in order, with up to ``group`` tars listed or waiting to be handed over at a time: memory holds
    that many tars' listings. Local files: one group after another; object stores: a sliding window
    (the next tar starts as soon as the oldest is handed over), up to the reader's reads in flight."""
    if group < 1:
        raise ValueError(f"group must be 1 or more, got {group}")
    with RangeReader(loc) as reader:
        yield from _inner(reader, tars, group)


def _inner(reader: RangeReader, tars: Sequence[Member], group: int) -> Iterator[tuple[Member, list[Member]]]:
    def walk(m: Member) -> Walk:
        return _walk(m.offset, m.offset + m.size, f"{reader.loc.url}/{m.name}")

    if reader._async is None:
        for i in range(0, len(tars), group):
            chunk = tars[i : i + group]
            for m, got in zip(chunk, _run(reader, [walk(m) for m in chunk]), strict=True):
                yield m, _chain([m.offset], [got])
        return
    for m, got in zip(tars, _pipelined(reader, (walk(m) for m in tars), len(tars), group), strict=True):
        yield m, _chain([m.offset], [got])


def _list(reader: RangeReader, segment: int) -> list[Member]:
    size = reader.loc.size()
    starts = [0, *_find_headers(reader, size, segment)] if segment else [0]
    walks = [_walk(start, size, reader.loc.url, frozenset(starts)) for start in starts]
    if reader._async is None:
        return _chain(starts, _run(reader, walks))
    return _chain(starts, list(_pipelined(reader, iter(walks), len(walks), len(walks))))


def _find_headers(reader: RangeReader, size: int, segment: int) -> list[int]:
    """The offset of the first tar header in a ``WINDOW`` at every multiple of ``segment`` (a
    multiple of 512) past 0, where one is found."""
    offsets = list(range(segment, size - BLOCK, segment))
    found = []
    for offset, window in zip(offsets, reader.read([(o, WINDOW) for o in offsets]), strict=True):
        if isinstance(window, Exception):
            raise ArchiveError(f"{reader.loc.url}: cannot read bytes {offset}+{WINDOW}: {window}")
        at = next((i for i in range(0, len(window) - BLOCK + 1, BLOCK) if _is_header(window[i : i + BLOCK])), None)
        if at is not None:
            found.append(offset + at)
    return sorted(set(found))


def _is_header(block: bytes) -> bool:
    if block[257:262] != b"ustar":
        return False
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _chain(starts: list[int], results: list) -> list[Member]:
    """The members of the walk from ``starts[0]``, continued by the walk that started where it
    stopped, and so on to the end; an error of a walk in the chain is raised."""
    by_start = dict(zip(starts, results, strict=True))
    members: list[Member] = []
    at: int | None = starts[0]
    while at is not None:
        got = by_start.pop(at)
        if isinstance(got, Exception):
            raise got
        part, at = got
        members += part
    return members


def read_sources(directory: Location, sources: Sequence[Source]) -> Iterator[tuple[str, bytes | Exception]]:
    """(name, content or the error reading it) of each source, in order: the byte ranges of an
    archive (``directory``) for sources with a span, else the files under ``directory``."""
    if not any(s.span for s in sources):
        yield from directory.read_many([s.name for s in sources])
        return
    with RangeReader(directory) as reader:
        for i in range(0, len(sources), BATCH):
            chunk = sources[i : i + BATCH]
            for s, data in zip(chunk, reader.read([s.span for s in chunk]), strict=True):
                if isinstance(data, bytes) and len(data) != s.span[1]:
                    data = EOFError(f"{directory.url} ends inside this member ({len(data)} of {s.span[1]} bytes)")
                yield s.name, data


Walk = Generator[tuple[int, int], bytes, tuple[list[Member], int | None]]


def _run(reader: RangeReader, walks: list[Walk]) -> list:
    """Advance every walk until it returns (or raises ArchiveError: that error is its result),
    each round's reads of all walks in one batch."""
    results: list = [None] * len(walks)
    pending: dict[int, tuple[int, int]] = {}
    for i in range(len(walks)):
        _advance(walks, i, None, pending, results)
    while pending:
        ids = list(pending)
        got = reader.read([pending[i] for i in ids])
        for i, data in zip(ids, got, strict=True):
            if isinstance(data, Exception):
                raise ArchiveError(f"{reader.loc.url}: cannot read bytes {pending[i][0]}+{pending[i][1]}: {data}")
            _advance(walks, i, data, pending, results)
    return results


def _async_fs(loc: Location, in_flight: int):
    """The filesystem of ``loc`` for pipelined range reads: S3's with a connection pool as large as
    the reads in flight (botocore's default pool holds 10 connections: more requests wait for one);
    others as they are (gcsfs's aiohttp pool holds 100). None when it has no async interface."""
    fs = loc.fs
    if not getattr(fs, "async_impl", False):
        return None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("s3", "s3a"):
        options = dict(fs.storage_options)
        config = {**options.get("config_kwargs", {}), "max_pool_connections": in_flight}
        fs = type(fs)(**{**options, "config_kwargs": config})  # (cached by fsspec: one per pool size)
    return fs


def _pipelined(reader: RangeReader, walks: Iterator[Walk], count: int, window: int) -> Iterator:
    """The results of ``count`` walks (as _run's), in order, each walk's next read issued on the
    object store's event loop as soon as its last one returned: at most ``window`` walks started and
    not yet handed over, at most ``reader.in_flight`` reads in flight. A read that fails raises
    ArchiveError naming the bytes."""
    fs, path, limit = reader._async, reader.loc.path, reader.in_flight
    results: dict[int, object] = {}
    depth: dict[int, int] = {}  # reads so far of each walk: the longest is the listing's rounds
    active: dict[int, Walk] = {}
    waiting: list[tuple[int, tuple[int, int]]] = []  # reads beyond the limit, in the order asked
    flying: dict[concurrent.futures.Future, tuple[int, tuple[int, int]]] = {}
    started = handed = 0

    def advance(i: int, data: bytes | None) -> None:
        try:
            waiting.append((i, active[i].send(data)))
        except StopIteration as done:
            results[i] = done.value
            del active[i]
        except ArchiveError as e:
            results[i] = e
            del active[i]

    def submit() -> None:
        while waiting and len(flying) < limit:
            i, (offset, size) = waiting.pop(0)
            coro = fs._cat_file(path, start=offset, end=offset + size)
            flying[asyncio.run_coroutine_threadsafe(coro, fs.loop)] = (i, (offset, size))
        reader.peak = max(reader.peak, len(flying))

    try:
        while handed < count:
            while started < count and started - handed < window:
                active[started] = next(walks)
                depth[started] = 0
                advance(started, None)
                started += 1
            submit()
            while handed in results:
                reader.rounds = max(reader.rounds, depth.pop(handed, 0))
                yield results.pop(handed)
                handed += 1
                if started - handed < window and started < count:
                    break
            else:
                for fut in first_done(flying):
                    i, (offset, size) = flying.pop(fut)
                    try:
                        data = fut.result()
                    except Exception as e:  # noqa: BLE001 - named with the bytes it was reading
                        raise ArchiveError(f"{reader.loc.url}: cannot read bytes {offset}+{size}: {e}") from None
                    reader.requests += 1
                    reader.bytes += len(data)
                    depth[i] += 1
                    advance(i, data)
    finally:
        for fut in flying:
            fut.cancel()


def _advance(walks: list[Walk], i: int, data: bytes | None, pending: dict, results: list) -> None:
    try:
        pending[i] = walks[i].send(data)
    except StopIteration as done:
        pending.pop(i, None)
        results[i] = done.value
    except ArchiveError as e:
        pending.pop(i, None)
        results[i] = e


def _walk(start: int, end: int, where: str, stops: frozenset[int] = frozenset()) -> Walk:
    """Yield the (offset, size) reads that list the tar occupying bytes [start, end) of a file
    from its header at ``start``, receiving their bytes; return its members and where it stopped:
    at the first header in ``stops`` past ``start`` (None: at the end). ``where`` names the tar in errors."""
    members: list[Member] = []
    extra: dict[str, str] = {}  # path and size from a GNU long-name or pax header, for the next member
    pos = start
    while pos < end:  # (a file that ends inside a header is truncated: the read below is short)
        if pos in stops and pos != start and not extra:
            return members, pos
        block = yield pos, BLOCK
        if len(block) < BLOCK:
            raise ArchiveError(f"{where}: the file ends inside the header at byte {pos}")
        if block == bytes(BLOCK):
            break  # the end-of-archive marker
        try:
            info = _header(block)
        except tarfile.HeaderError as e:
            raise ArchiveError(f"{where}: not a tar header at byte {pos} ({e})") from None
        data = pos + BLOCK
        if info.type in _META_TYPES:
            payload = yield data, info.size
            extra |= _meta(info.type, payload, f"{where}: the extended header at byte {pos}")
            pos = data + _padded(info.size)
            continue
        size = int(extra.pop("size", info.size)) if info.isreg() else 0
        name = extra.pop("path", info.name).rstrip("/")
        extra.clear()
        if data + size > end:
            raise ArchiveError(f"{where}: member {name} at byte {pos} runs past the end ({end})")
        members.append(Member(name, data, size, _kind(info)))
        pos = data + _padded(size)
    return members, None


# A number field as tar writers write it: octal digits, then spaces or NULs (what tarfile reads as a
# number for certain; anything else goes to tarfile, which decides).
_PLAIN_NUMBER = re.compile(rb"[0-7]*[ \0]+")
_NUMBERS = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))  # mode .. devminor
_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


def _header(block: bytes) -> tarfile.TarInfo:
    """The member a 512-byte header describes, as tarfile.TarInfo.frombuf reads it (HeaderError as it
    raises them). The common header (a file or folder, plain number fields, no ustar prefix, the
    unsigned checksum) is read here, in a third of frombuf's time: a WebDataset has two
    members a sample, ImageNet's tars 1.28 million; any other goes to frombuf."""
    size, chksum, kind = block[124:136], block[148:156], block[156:157]
    if (
        kind in _PLAIN_TYPES
        and block[345] == 0
        and _PLAIN_NUMBER.fullmatch(size)
        and _PLAIN_NUMBER.fullmatch(chksum)
        and all(_PLAIN_NUMBER.fullmatch(block, a, b) for a, b in _NUMBERS)
        and int(chksum.rstrip(b" \0") or b"0", 8) == 256 + sum(block) - sum(chksum)
    ):
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if kind == tarfile.AREGTYPE and name.endswith("/"):
            kind = tarfile.DIRTYPE  # (the old V7 form of a folder)
        info = tarfile.TarInfo(name.rstrip("/") if kind == tarfile.DIRTYPE else name)
        info.size, info.type = int(size.rstrip(b" \0") or b"0", 8), kind
        return info
    return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")


def _meta(kind: bytes, payload: bytes, what: str) -> dict[str, str]:
    """The path (and size) a GNU long-name or pax extended header gives the next member; a record
    that is not '<length> <key>=<value>\n' within the header raises ArchiveError naming ``what``."""
    if kind == tarfile.GNUTYPE_LONGNAME:
        return {"path": payload.rstrip(b"\0").decode("utf-8", "surrogateescape")}
    if kind != tarfile.XHDTYPE:
        return {}  # a long link target or global pax header: nothing about the next member's data
    out, i = {}, 0
    while i < len(payload) and payload[i] != 0:  # records: b"<length> <key>=<value>\n"
        digits = payload[i:].split(b" ", 1)[0]
        length = int(digits) if digits.isdigit() else 0
        if not len(digits) + 2 < length <= len(payload) - i or payload[i + length - 1] != ord("\n"):
            raise ArchiveError(f"{what}: malformed pax record at byte {i} of the header's data")
        key, _, value = payload[i + len(digits) + 1 : i + length - 1].partition(b"=")
        if key == b"size" and not value.isdigit():
            raise ArchiveError(f"{what}: pax size {value[:20]!r} is not a number")
        if key in (b"path", b"size"):
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
        i += length
    return out


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    return "symlink" if info.issym() else "hard link" if info.islnk() else f"tar type {info.type!r}"
