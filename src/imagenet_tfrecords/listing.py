"""Listing a dataset for its plan: the layouts' shared helpers that read metadata lines and list
image folders, and the cutting of train shards from the listing.

Train shards are cut by ``train_shards``: "mixed" (default) puts every train file in the shard its
path's stable hash falls in, in hash order, so each shard mixes the classes (as TFDS does);
"per-class" makes one shard per class folder in file order. Class folders are listed by
``class_listings`` (forked processes for local folders, threads for object stores), and the
listing is spilled to local disk while it is made (packed for the spill files where it is listed),
so planning holds a few class folders or one hash bucket at a time, never the whole train split.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import pickle
import re
import shutil
import stat
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol

from .fs import Entry, Location, MetadataError, excerpt
from .plan import MIXED, PER_CLASS, TRAIN_ORDERS, Box, Shard, Source, TrainShardsError
from .procs import available_cpus, in_processes, result_of

TRAIN_RECORDS_PER_SHARD = 1000  # mixed train shards' default size: 100 shards for TinyImageNet, 1,281 for ImageNet
HASH_BUCKETS = 256  # spill files of a mixed train listing, by the first byte of the path hash
NAME_MAX = 255  # the longest file or folder name, in bytes, of common file systems (Linux's NAME_MAX)
SPILL_ROWS = 16384  # train sources packed together when listed by the planning process (packed_classes)


def note_class_id(loc: Location, n: int, wnid: str, seen: dict[str, int]) -> None:
    """Records class id ``wnid`` of line ``n`` of a class list in ``seen``: an error if it is longer
    than a folder name may be, or repeats a line."""
    if len(wnid.encode()) > NAME_MAX:
        raise MetadataError(
            f"{loc.url}:{n}: not a class id: {len(wnid):,} characters, longer than a folder name may be "
            f"({NAME_MAX} bytes): {excerpt(wnid)}"
        )
    if wnid in seen:
        raise MetadataError(f"{loc.url}:{n}: class id {wnid} repeats line {seen[wnid]}")
    seen[wnid] = n


def read_lines(loc: Location) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers; tolerates a BOM, CRLF and trailing blanks."""
    if not loc.exists():
        raise MetadataError(f"{loc.url}: file not found")
    try:
        text = loc.read_text()
    except UnicodeDecodeError as e:
        raise MetadataError(f"{loc.url}: not UTF-8 text ({e})") from None
    # Only \n, \r\n and \r end a line (str.splitlines() would also split at U+0085, U+2028...
    # which may occur inside words).
    lines = re.split(r"\r\n|\r|\n", text)
    return [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]


def stream_lines(loc: Location) -> Iterator[tuple[int, str]]:
    """read_lines, one line at a time (for metadata too large to hold as a list of lines)."""
    if not loc.exists():
        raise MetadataError(f"{loc.url}: file not found")
    with loc.fs.open(loc.path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None) as f:
        try:  # newline=None: \r\n and \r read as \n, and only they end a line
            for i, line in enumerate(f, 1):
                if line.strip():
                    yield i, line.strip()
        except UnicodeDecodeError as e:
            raise MetadataError(f"{loc.url}: not UTF-8 text ({e})") from None


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that orders val_2 before val_10."""
    return [int(t) if t.isdigit() else t for t in _DIGITS.split(name)]


def inputs_digest(entries: list[Entry]) -> str:
    """A digest of the names, sizes and change stamps of a shard's input files."""
    return identities_digest([e.identity for e in entries])


def identities_digest(identities: list) -> str:
    """inputs_digest of entries given by their ``identity`` lists."""
    return hashlib.sha256(json.dumps(identities).encode()).hexdigest()[:32]


def list_images(directory: Location, root: Location, natural: bool = True) -> tuple[dict[str, Entry], list[Entry], int]:
    """The files of an images folder by name in natural order (``natural=False``: by name), its
    other entries (folders, links leaving the dataset root, FIFOs...), which are never read, and the
    number of entries ignored by name (fs.is_ignored)."""
    listed = directory.list_dir(root) if directory.isdir() else []
    files = [e for e in listed if e.kind == "file"]  # list_dir sorts by name
    if natural:
        files.sort(key=lambda e: natural_key(e.name))
    others = [e for e in listed if e.kind not in ("file", "ignored")]
    return {e.name: e for e in files}, others, len(listed) - len(files) - len(others)


def ignored_in(directory: Location, root: Location) -> int:
    """The entries of ``directory`` ignored by name (fs.is_ignored); 0 when it is not a folder."""
    return sum(e.kind == "ignored" for e in directory.list_dir(root)) if directory.isdir() else 0


def fixed_shards(split: str, folder: str, sources: list[Source], files: dict[str, Entry], size: int) -> list[Shard]:
    """Shards of fixed sources, ``size`` per shard, in the order given. Each shard's inputs digest
    covers those of its sources found in ``files`` (source name -> entry; the entries renamed to
    the source names, which may be paths inside ``folder``)."""
    chunks = [sources[i : i + size] for i in range(0, len(sources), size)]
    shards = []
    for i, chunk in enumerate(chunks):
        digest = identities_digest([[s.name, *files[s.name].identity[1:]] for s in chunk if s.name in files])
        shards.append(Shard(split, i, len(chunks), folder, sources=tuple(chunk), inputs=digest, found=len(chunk)))
    return shards


def list_files(
    directory: Location, root: Location, rel: str, rejects: list[dict], ignored: collections.Counter, split: str
) -> dict[str, Entry]:
    """The files of a folder of fixed sources (``list_images``) of ``split``; its other entries are
    appended to ``rejects``, named ``rel/<name>``, with their reason, and those ignored by name
    counted in ``ignored[split]``."""
    files, others, skipped = list_images(directory, root)
    rejects += [{"path": f"{rel}/{e.name}", "reason": e.reason} for e in sorted(others, key=lambda e: e.name)]
    ignored[split] += skipped
    return files


def test_shards(
    root: Location,
    rel: str,
    shard_size: int,
    rejects: list[dict],
    warnings: list[str],
    ignored: collections.Counter,
) -> list[Shard]:
    """The optional test split: the files of folder ``rel``, unlabelled (-1), ``shard_size`` a
    shard (its other entries to ``rejects``, those ignored by name counted in ``ignored``); none,
    and a warning, when the folder is missing."""
    folder = root.child(rel)
    if not folder.isdir():
        warnings.append(f"{folder.url}: no test split (directory not found)")
        return []
    files = list_files(folder, root, rel, rejects, ignored, "test")
    return fixed_shards("test", rel, [Source(name, -1) for name in files], files, shard_size)


def source_hash(path: str) -> str:
    """What orders mixed train shards: the first 8 bytes of BLAKE2b of a source's path relative to
    the dataset root (the record's ``filename``), in hex. Stable across runs, machines and versions."""
    return hashlib.blake2b(path.encode(), digest_size=8).hexdigest()


def default_train_shards(files: int) -> int:
    """Mixed train shards when none are asked for: about TRAIN_RECORDS_PER_SHARD sources each."""
    return max(1, round(files / TRAIN_RECORDS_PER_SHARD))


Listed = tuple[Source, Entry]  # a train source and the listing entry of its file (or other entry)
# A train source as planning handles it: plain values, quick to pickle and to sort:
# (key, name, label, reason, span, boxes, kind, size, stamp). ``key`` orders the train shards: the
# source's hash (mixed) or its class number (per class); then the Source, then its Entry's fields.
Row = tuple


def hash_key(path: str) -> int:
    """source_hash as a number: what mixed train shards are cut by."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "big")


def listed_rows(folder: str, listing: list[Listed], order: str, number: int) -> list[Row]:
    """The rows of one class's listing (sources named relative to ``folder``), keyed for ``order``:
    each source's hash_key of ``folder/<name>`` (mixed), or the class's ``number`` (per class)."""
    if order == MIXED:
        prefix = f"{folder}/"
        return [(hash_key(prefix + s.name), *s, e.kind, e.size, e.stamp) for s, e in listing]
    return [(number, *s, e.kind, e.size, e.stamp) for s, e in listing]


class Packed(NamedTuple):
    """The rows of one or more classes (listed_rows) as train_shards spills them: ``parts`` maps a
    spill file's name to one pickled list of rows for it. Packed where the rows are listed (in a
    listing process), so the process that spills them only appends bytes."""

    classes: int
    rows: int
    parts: dict[str, bytes]


def pack(row_lists: list[list[Row]], order: str) -> Packed:
    """The rows of the classes of ``row_lists`` (one list a class, in label order) by spill file:
    per class, all in one file in order; mixed, each in the bucket of its key's first byte."""
    rows = list(itertools.chain.from_iterable(row_lists))
    if order == PER_CLASS:
        parts = {"all": rows}
    else:
        parts = {}
        for row in rows:
            parts.setdefault(f"{row[0] >> 56:02x}", []).append(row)
    blobs = {name: pickle.dumps(part, pickle.HIGHEST_PROTOCOL) for name, part in parts.items()}
    return Packed(len(row_lists), len(rows), blobs)


def packed_classes(row_lists: Iterable[list[Row]], order: str) -> Iterator[Packed]:
    """pack() of each class's rows, gathered up to SPILL_ROWS rows a Packed (fewer, larger batches
    in the spill files)."""
    held: list[list[Row]] = []
    count = 0
    for rows in row_lists:
        held.append(rows)
        count += len(rows)
        if count >= SPILL_ROWS:
            yield pack(held, order)
            held, count = [], 0
    if held:
        yield pack(held, order)


# Class folders are listed CLASSES_PER_TASK a task, one after another, and each task's rows packed
# together (fewer, larger batches in the spill files). Tasks of an object store run LISTING_THREADS
# at once: each listing waits on a round trip. Local folders are listed by a pool of forked
# processes, one per CPU, a few tasks ahead of the process that spills what they list: there the
# work (listing, parsing the boxes, hashing, pickling) is Python's, and threads would only contend.
LISTING_THREADS = 8
CLASSES_PER_TASK = 8


def class_listings(
    root: Location,
    folder: str,
    classes: list[tuple[str, int]],
    problems: list[dict],
    order: str,
    boxes_of: Callable[[str], Parsed | None] | None = None,
    box_notes: list | None = None,
    reason_of: Callable[[str], str | None] | None = None,
    ignored: collections.Counter | None = None,
    parents: bool = False,
) -> Iterator[Packed]:
    """The train sources of each class folder ``folder/<sub>`` of ``classes`` ((sub, label) in
    label order), as rows (listed_rows) packed for train_shards a few classes at a time, in that
    order, named ``sub/<name>``: its files labelled ``label`` (in natural order for per-class
    shards), then its other entries (folders, links leaving the root...) with their reasons.
    ``reason_of(name)``, where given, says why a file is not taken as an image by its name alone
    (None: it is): such a file is a reject with that reason. ``boxes_of(sub)`` gives the boxes of a
    class's files by file name where the layout has them (None: the class has none); each class's
    outcome, (sub, the boxes dropped for naming an unknown class by file, or None), is appended to
    ``box_notes``. A folder without images is appended to ``problems``; entries ignored by name
    (fs.is_ignored) are counted in ``ignored["train"]``, with ``parents`` those of the folder above
    each class's images folder too (``train/<wnid>/`` of ``train/<wnid>/images``).

    boxes_of and reason_of need not be picklable: the listing processes are forked with them."""
    natural = order == PER_CLASS

    def rows_of(number: int) -> tuple[list[Row], int, dict | None, int]:
        sub, label = classes[number]
        files, others, skipped = list_images(root.child(folder, sub), root, natural=natural)
        if parents and "/" in sub:
            skipped += ignored_in(root.child(folder, sub.rsplit("/", 1)[0]), root)
        parsed = boxes_of(sub) if boxes_of else None
        found = parsed.boxes if parsed else {}
        listing = []
        for n, e in files.items():
            why = reason_of(n) if reason_of else None
            listing.append((Source(f"{sub}/{n}", None if why else label, why, boxes=found.get(n, ())), e))
        images = sum(s.reason is None for s, _ in listing)
        listing += [(Source(f"{sub}/{e.name}", None, e.reason), e) for e in others]
        return listed_rows(folder, listing, order, number), images, parsed.unknown if parsed else None, skipped

    def task(numbers: range) -> tuple[Packed, list[tuple[int, dict | None, int]]]:
        listed = [rows_of(n) for n in numbers]
        return pack([rows for rows, *_ in listed], order), [outcome for _, *outcome in listed]

    tasks = [range(i, min(i + CLASSES_PER_TASK, len(classes))) for i in range(0, len(classes), CLASSES_PER_TASK)]
    done = spread(task, tasks, root.is_local)
    outcome = "class gets an empty shard" if order == PER_CLASS else "class has no train records"
    for numbers, (packed, outcomes) in zip(tasks, done, strict=True):
        for n, (images, unknown, skipped) in zip(numbers, outcomes, strict=True):
            sub = classes[n][0]
            if ignored is not None:
                ignored["train"] += skipped
            if not images:
                problems.append({"path": f"{folder}/{sub}", "reason": f"class directory has no images ({outcome})"})
            if boxes_of and box_notes is not None:
                box_notes.append((sub, unknown))
        yield packed


class Parsed(Protocol):
    """What a layout's boxes_of returns for a class: its boxes by file name, and the boxes dropped
    for naming a class that is not one of the dataset's, counted by file (boxes.Parsed)."""

    boxes: dict[str, tuple[Box, ...]]
    unknown: dict[str, int]


def _cpus() -> int:
    """CPUs this process may use for listing processes of its own (1: none; a daemon has no children)."""
    return 1 if multiprocessing.current_process().daemon else available_cpus()


def spread(fn: Callable, items: list, local: bool) -> Iterator:
    """fn(item) for each of ``items``, in order. Local files: in forked processes, one a CPU (their
    listing is parsing, which threads of one process would only take turns at); object stores: in
    LISTING_THREADS threads (their listing is waiting for answers)."""
    if local and len(items) > 1 and (cpus := _cpus()) > 1:
        return in_processes(fn, items, cpus, LISTING_THREADS)
    return _ahead(fn, items, 1 if local else LISTING_THREADS)


def _ahead(fn, items: Iterable, threads: int) -> Iterator:
    """fn(item) for each item in order, computed by ``threads`` threads at most ``threads`` items ahead."""
    if threads == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= threads:
                    yield result_of(pending.popleft())
            while pending:
                yield result_of(pending.popleft())
        except BaseException:  # an error, Ctrl-C or SIGTERM: only the calls under way are waited for
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def train_shards(folder: str, classes: Iterable[Packed], order: str = MIXED, count: int = 0) -> TrainShards:
    """Plan the train shards of the sources under ``folder`` (``classes``: the rows of every class,
    listed_rows keyed for ``order``, packed (pack) a few classes at a time, in label order).

    "mixed": ``count`` shards (0: default_train_shards); each source goes to the shard that its
    path's ``source_hash`` falls in (shard i holds the i-th of ``count`` equal hash ranges), in
    hash order. A source's shard depends on its own path only, so adding or removing one file
    changes one shard, and shard sizes are even up to chance (1,000 +- 32 for 1,000 a shard).
    "per-class": one shard per class, in the order given. The packed rows are appended to local
    spill files as they come (one file per hash bucket), so memory holds a few classes here and
    one bucket when the shards are read back.
    """
    if order not in TRAIN_ORDERS:
        raise ValueError(f"train order must be one of {', '.join(TRAIN_ORDERS)}, got {order!r}")
    if count < 0:
        raise ValueError(f"train shards must be 0 (default) or more, got {count}")
    spill, owner = new_spill()
    try:
        classes_seen, total = _spill(classes, spill)  # (whether or not count is given: this is the listing)
    except BaseException:
        _remove_spill(spill, owner)
        raise
    if order == MIXED and count > total:
        _remove_spill(spill, owner)
        raise TrainShardsError(
            f"--train-shards {count} (pipeline parameter train_shards) is more than the {_n(total)} train inputs: "
            f"at most {_n(max(total, 1))} (0: about {TRAIN_RECORDS_PER_SHARD:,} records a shard)"
        )
    count = classes_seen if order == PER_CLASS else count or default_train_shards(total)
    return TrainShards(folder, order, count, spill, owner)


SPILL_PREFIX = "imagenet-tfrecords-plan-"  # spill folders in the temporary folder
MAKING_PREFIX = "imagenet-tfrecords-planning-"  # one being made (its owner file not yet locked)
OWNER_FILE = "owner.lock"  # in a spill folder: locked (flock) by the processes of the run it belongs to


def new_spill() -> tuple[str, int]:
    """A new spill folder in the temporary folder, and the descriptor of its owner file, locked
    (flock) for as long as this process or one it forks keeps it open: however the run ends, even
    by kill -9 or the out-of-memory killer, the kernel drops the lock and the next run removes the
    folder (remove_abandoned_spills). The folder gets its final name with its owner locked, so no
    run sees it unowned."""
    remove_abandoned_spills()
    making = tempfile.mkdtemp(prefix=MAKING_PREFIX)
    owner = os.open(os.path.join(making, OWNER_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(owner, fcntl.LOCK_EX)
    spill = os.path.join(os.path.dirname(making), SPILL_PREFIX + os.path.basename(making).rsplit("-", 1)[1])
    os.rename(making, spill)
    return spill, owner


def _remove_spill(spill: str, owner: int) -> None:
    shutil.rmtree(spill, ignore_errors=True)
    os.close(owner)


def remove_abandoned_spills(folder: str | None = None) -> list[str]:
    """Remove the spill folders of runs that are gone (their owner file not locked) from the
    temporary folder (or ``folder``); a live run's is never touched. Return the paths removed."""
    folder = folder or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith((SPILL_PREFIX, MAKING_PREFIX))]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue  # (a link, or another user's)
        try:
            owner = os.open(os.path.join(path, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no owner file (an older version's, or one being made): not known to be ours, kept
            continue
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its run is alive
            continue
        else:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(owner)
    return removed


def _n(n: int) -> str:
    return f"{n:,}"


def _spill(classes: Iterable[Packed], spill: str) -> tuple[int, int]:
    """Append each Packed's parts to their spill files; return the number of classes and of rows.

    One spill file is open at a time (opened to append each part): the 256 buckets of a mixed
    listing never hold 256 descriptors, which is the whole of macOS's default limit."""
    seen = total = 0
    for packed in classes:
        for name, blob in packed.parts.items():
            with open(f"{spill}/{name}", "ab") as f:
                f.write(blob)
        seen += packed.classes
        total += packed.rows
    return seen, total


def pickled_batches(path: str) -> Iterator[list]:
    """The objects pickled one after another into the file at ``path`` (none if it does not exist)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def _source_json(row: Row) -> tuple:
    """Source.to_json of a row's source."""
    return row[1:4] if row[4] is None and not row[5] else row[1:5] if not row[5] else row[1:6]


class TrainShards:
    """Train shards planned by ``train_shards``: their number now, their sources streamed from the
    spill files (removed when this object goes, or by ``close``)."""

    def __init__(self, folder: str, order: str, count: int, spill: str, owner: int):
        self.folder, self.order, self.count, self.spill = folder, order, count, spill
        self.close = weakref.finalize(self, _remove_spill, spill, owner)

    def light(self) -> list[Shard]:
        """The shards without their sources (their sizes are known once streamed: write_slices)."""
        return [Shard("train", i, self.count, self.folder) for i in range(self.count)]

    def texts(self) -> Iterator[tuple[Shard, str]]:
        """Every shard, light (Shard.light) and as JSON with its sources (shard_text), in shard
        order (empty ones included); made from the rows without a Source object."""
        groups = itertools.groupby(self._listed(), key=lambda pair: pair[0])
        group = next(groups, None)
        for i in range(self.count):
            rows = []
            if group is not None and group[0] == i:
                rows = [row for _, row in group[1]]
                group = next(groups, None)
            digest = identities_digest([[r[1], *r[6:]] for r in rows])
            d = {"split": "train", "index": i, "count": self.count, "dir": self.folder}
            text = json.dumps(d | {"files": [_source_json(r) for r in rows], "inputs": digest})
            yield Shard("train", i, self.count, self.folder, found=len(rows)), text

    def _listed(self) -> Iterator[tuple[int, Row]]:
        """(shard number, row) in shard order, each shard's in its order: per class, the spill one
        class at a time; mixed, one bucket at a time, sorted."""
        if self.order == PER_CLASS:
            for rows in pickled_batches(f"{self.spill}/all"):
                for row in rows:
                    yield row[0], row
            return
        for b in range(HASH_BUCKETS):
            rows = sorted(itertools.chain.from_iterable(pickled_batches(f"{self.spill}/{b:02x}")), key=lambda r: r[:2])
            for row in rows:
                yield row[0] * self.count >> 64, row
