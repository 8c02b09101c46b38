"""The conversion plan: what a layout makes of a dataset, and what every later step reads.

A layout (``layouts/<name>.py``) turns a dataset root into a Plan: the classes (label = index
in the sorted class ids), one Shard per output file, the rejects found while reading the
metadata, and warnings. Every shard's sources (files, labels and reject reasons) are fixed at plan
time. Train shards are cut by ``train_shards``: "mixed" (default) puts every train file in the
shard its path's stable hash falls in, in hash order, so each shard mixes the classes (as TFDS
does); "per-class" makes one shard per class folder in file order. The listing is spilled to
local disk while it is made (packed for the spill files where it is listed), so planning holds a
few class folders or one hash bucket at a time, never the whole train split. Shard names depend
only on the dataset, never on how shards are grouped into tasks, so output is the same however
the work is spread.

The Plan round-trips through JSON (plan.json, the pipeline's first artifact) without the shards'
sources: ``write_slices`` writes each conversion task's shards, sources included, to a slice file
of its own (``<output>/_work/plan/task-NNNNN.jsonl``, one shard a line) that ``read_slice`` streams
back, so no step holds every file's entry. A plan of another version is refused.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import pickle
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .fs import Entry, Location, MetadataError, publish
from .procs import available_cpus, check_terminated, stop_pool, worker_init

SPLITS = ("train", "val", "test")
PLAN_VERSION = 3
# Conversion tasks of one run. Every task's artifact reaches the fan-in step's executor input, which
# the Kubeflow backend passes as one command-line argument (Linux: under 128 KiB; our budget 48 KiB):
# about 690 bytes each as the open-source backend sends them with its default MinIO root, ours
# (five numbers) about 95 of them. Vertex AI collects at most 100 artifacts in one dsl.Collected input.
MAX_TASKS = 64
DEFAULT_MAX_TASKS = 64
DEFAULT_PARALLELISM = 16  # conversion tasks running at once on a cluster (ParallelFor parallelism)
DEFAULT_SHARD_SIZE = 500  # images per val/test shard
MIXED, PER_CLASS = "mixed", "per-class"
TRAIN_ORDERS = (MIXED, PER_CLASS)
TRAIN_RECORDS_PER_SHARD = 1000  # mixed train shards' default size: 100 shards for TinyImageNet, 1,281 for ImageNet
HASH_BUCKETS = 256  # spill files of a mixed train listing, by the first byte of the path hash
SPILL_ROWS = 16384  # train sources packed together when listed by the planning process (packed_classes)
SLICES_DIR = "_work/plan"  # under the output: each conversion task's shards (write_slices)


class TrainShardsError(ValueError):
    """More mixed train shards asked for than there are train inputs (a bad command line: exit 2)."""


class PlanError(ValueError):
    """plan.json is not a plan this version reads."""


Box = tuple[float, float, float, float, int]  # xmin, ymin, xmax, ymax in pixels as the metadata gives them; label


class Source(NamedTuple):
    """One input of a shard: a path relative to the shard's ``dir``, its label, and why it is not
    converted (None: it is). ``span`` is (offset, size) in bytes when the input is a member of an
    archive: ``dir`` is then the archive file and ``name`` the member's path inside it. ``boxes``
    are the image's bounding boxes where the layout has them."""

    name: str
    label: int | None
    reason: str | None = None
    span: tuple[int, int] | None = None
    boxes: tuple[Box, ...] = ()

    def to_json(self) -> list:
        out = [self.name, self.label, self.reason]
        if self.span is not None or self.boxes:
            out.append(list(self.span) if self.span else None)
        if self.boxes:
            out.append([list(b) for b in self.boxes])
        return out

    @classmethod
    def from_json(cls, item: list) -> Source:
        name, label, reason, *rest = item
        span = tuple(rest[0]) if rest and rest[0] is not None else None
        boxes = tuple(tuple(b) for b in rest[1]) if len(rest) > 1 else ()
        return cls(name, label, reason, span, boxes)


@dataclass(frozen=True)
class Shard:
    """One output file. ``sources`` are paths relative to ``dir``, fixed at plan time; None in a
    plan read from plan.json, which holds only their number (``found``): a task reads them from
    its slice. ``inputs`` is the digest of the sources' files (names, sizes, change stamps)."""

    split: str
    index: int
    count: int
    dir: str
    sources: tuple[Source, ...] | None = None
    inputs: str = ""
    found: int = 0

    @property
    def file(self) -> str:
        """The output path relative to the output root."""
        return f"{self.split}/{self.split}-{self.index:05d}-of-{self.count:05d}.tfrecord"

    @property
    def name(self) -> str:
        return self.file.rsplit("/", 1)[1]

    def to_json(self) -> dict:
        out = {"split": self.split, "index": self.index, "count": self.count, "dir": self.dir}
        if self.sources is None:
            return out | {"found": self.found}
        return out | {"files": [s.to_json() for s in self.sources], "inputs": self.inputs}

    @classmethod
    def from_json(cls, d: dict) -> Shard:
        common = {k: d[k] for k in ("split", "index", "count", "dir")}
        if "files" not in d:
            return cls(**common, found=d["found"])
        sources = tuple(Source.from_json(f) for f in d["files"])
        return cls(**common, sources=sources, inputs=d["inputs"], found=len(sources))

    def light(self) -> Shard:
        """This shard as plan.json holds it: its number of sources, not the sources."""
        return dataclasses.replace(self, sources=None, inputs="", found=self.size)

    @property
    def size(self) -> int:
        """Its number of sources (inputs found)."""
        return self.found if self.sources is None else len(self.sources)


@dataclass(frozen=True)
class ClassInfo:
    wnid: str
    words: str


@dataclass
class Plan:
    data: str
    classes: list[ClassInfo]
    shards: list[Shard]
    rejects: list[dict] = field(default_factory=list)  # {"path", "reason"}: inputs no shard holds
    warnings: list[str] = field(default_factory=list)
    tasks: list[list[int]] = field(default_factory=list)  # the shard ids of each conversion task
    layout: str = "tinyimagenet"
    problems: list[dict] = field(default_factory=list)  # {"path", "reason"} about folders, not inputs
    # files and folders ignored by name (fs.is_ignored: .DS_Store, Thumbs.db...), counted by split
    ignored: dict[str, int] = field(default_factory=dict)
    train_order: str = MIXED
    slices: str = ""  # where write_slices put each task's shards
    # the pixel convention of the sources' boxes (boxes.CONVENTIONS), "" when the layout has none
    boxes: str = ""
    run: str = field(default="", compare=False)  # the run token of the pipeline run that made it (lock.py)
    # the train shards' sources, spilled while listing (not in plan.json: see write_slices)
    train: TrainShards | None = field(default=None, compare=False, repr=False)

    def shard_texts(self) -> Iterator[tuple[Shard, str]]:
        """Every shard, light (Shard.light) and with its sources as JSON (shard_text), in shard id
        order: the train shards streamed from their spill, then the others (val, test) as planned.
        For a plan as built, before write_slices."""
        spilled = self.train.texts() if self.train else iter(())
        for shard in self.shards:
            yield next(spilled) if shard.sources is None else (shard.light(), shard_text(shard))

    def all_shards(self) -> Iterator[Shard]:
        """shard_texts as Shard objects with their sources."""
        for _, text in self.shard_texts():
            yield Shard.from_json(json.loads(text))

    @property
    def train_shard_count(self) -> int:
        return sum(1 for s in self.shards if s.split == "train")

    @property
    def wnids(self) -> tuple[str, ...]:
        return tuple(c.wnid for c in self.classes)

    def labels_text(self) -> str:
        """labels.txt: one 'wnid<TAB>words' line per class; the line index is the label."""
        return "".join(f"{c.wnid}\t{c.words}\n" for c in self.classes)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": PLAN_VERSION,
                "layout": self.layout,
                "data": self.data,
                "classes": [{"wnid": c.wnid, "words": c.words} for c in self.classes],
                "shards": [s.to_json() for s in self.shards],
                "rejects": self.rejects,
                "warnings": self.warnings,
                "tasks": self.tasks,
                "problems": self.problems,
                "train_order": self.train_order,
                "slices": self.slices,
                "boxes": self.boxes,
                "ignored": self.ignored,
                "run": self.run,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = json.loads(text)
        if d.get("version") != PLAN_VERSION:
            raise PlanError(f"plan version {d.get('version')}, this is version {PLAN_VERSION}: plan again")
        return cls(
            data=d["data"],
            classes=[ClassInfo(**c) for c in d["classes"]],
            shards=[Shard.from_json(s) for s in d["shards"]],
            rejects=d["rejects"],
            warnings=d["warnings"],
            tasks=[[int(i) for i in t] for t in d["tasks"]],
            layout=d["layout"],
            problems=d["problems"],
            train_order=d["train_order"],
            slices=d["slices"],
            boxes=d["boxes"],
            ignored=d.get("ignored", {}),
            run=d.get("run", ""),
        )


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


def group_tasks(num_shards: int, max_tasks: int = DEFAULT_MAX_TASKS) -> list[list[int]]:
    """Group shard ids into ``min(max_tasks, num_shards)`` tasks: contiguous runs whose lengths differ by one at most.

    Train shards come first in the plan, then val and test; a task may hold
    shards of two splits. The grouping never changes what is written, only who writes it.
    """
    if not 1 <= max_tasks <= MAX_TASKS:
        raise ValueError(f"max_tasks must be between 1 and {MAX_TASKS}, got {max_tasks}")
    if num_shards == 0:
        return []
    per_task, longer = divmod(num_shards, min(max_tasks, num_shards))
    bounds = [0]
    for t in range(min(max_tasks, num_shards)):
        bounds.append(bounds[-1] + per_task + (t < longer))
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds)]


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
    (fs.is_ignored) are counted in ``ignored["train"]``.

    boxes_of and reason_of need not be picklable: the listing processes are forked with them."""
    natural = order == PER_CLASS

    def rows_of(number: int) -> tuple[list[Row], int, dict | None, int]:
        sub, label = classes[number]
        files, others, skipped = list_images(root.child(folder, sub), root, natural=natural)
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
    if root.is_local and len(tasks) > 1 and (cpus := _cpus()) > 1:
        done = _ahead_in_processes(task, tasks, cpus)
    else:
        done = _ahead(task, tasks, 1 if root.is_local else LISTING_THREADS)
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


_HELD: list = []  # the function a forked listing process calls (_ahead_in_processes)


def _hold(fn) -> None:
    _HELD[:] = [fn]


def _call_held(arg):
    return _HELD[0](arg)


def _ahead_in_processes(fn, args: Iterable, processes: int) -> Iterator:
    """fn(arg) for each of ``args`` in order, computed by ``processes`` forked processes, at most
    LISTING_THREADS calls per process ahead. ``fn`` reaches them by the fork, not by pickling."""
    ctx = multiprocessing.get_context("fork")
    # the listing processes die with this one, and are stopped at once on an error, Ctrl-C or SIGTERM
    pool = ProcessPoolExecutor(processes, mp_context=ctx, initializer=worker_init, initargs=(os.getpid(), _hold, fn))
    try:
        pending: collections.deque = collections.deque()
        for arg in args:
            pending.append(pool.submit(_call_held, arg))
            if len(pending) >= LISTING_THREADS * processes:
                yield pending.popleft().result()
                check_terminated()
        while pending:
            yield pending.popleft().result()
            check_terminated()
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _ahead(fn, items: Iterable, threads: int) -> Iterator:
    """fn(item) for each item in order, computed by ``threads`` threads at most ``threads`` items ahead."""
    if threads == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


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
    spill = tempfile.mkdtemp(prefix="imagenet-tfrecords-plan-")
    try:
        classes_seen, total = _spill(classes, spill)  # (whether or not count is given: this is the listing)
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise
    if order == MIXED and count > total:
        shutil.rmtree(spill, ignore_errors=True)
        raise TrainShardsError(
            f"--train-shards {count} (pipeline parameter train_shards) is more than the {_n(total)} train inputs: "
            f"at most {_n(max(total, 1))} (0: about {TRAIN_RECORDS_PER_SHARD:,} records a shard)"
        )
    count = classes_seen if order == PER_CLASS else count or default_train_shards(total)
    return TrainShards(folder, order, count, spill)


def _n(n: int) -> str:
    return f"{n:,}"


def _spill(classes: Iterable[Packed], spill: str) -> tuple[int, int]:
    """Append each Packed's parts to their spill files; return the number of classes and of rows."""
    seen = total = 0
    with contextlib.ExitStack() as stack:
        files: dict[str, io.BufferedWriter] = {}
        for packed in classes:
            for name, blob in packed.parts.items():
                if name not in files:
                    files[name] = stack.enter_context(open(f"{spill}/{name}", "wb"))
                files[name].write(blob)
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


def shard_text(shard: Shard) -> str:
    """A shard with its sources as JSON (Shard.to_json): a slice line's shard, and what a
    conversion worker is handed."""
    return json.dumps(shard.to_json())


def _source_json(row: Row) -> tuple:
    """Source.to_json of a row's source."""
    return row[1:4] if row[4] is None and not row[5] else row[1:5] if not row[5] else row[1:6]


class TrainShards:
    """Train shards planned by ``train_shards``: their number now, their sources streamed from the
    spill files (removed when this object goes, or by ``close``)."""

    def __init__(self, folder: str, order: str, count: int, spill: str):
        self.folder, self.order, self.count, self.spill = folder, order, count, spill
        self.close = weakref.finalize(self, shutil.rmtree, spill, ignore_errors=True)

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


def slice_location(plan: Plan, task: int) -> Location:
    """Where write_slices puts the shards of task number ``task``."""
    return Location.of(plan.slices).child(f"task-{task:05d}.jsonl")


def write_slices(plan: Plan, out_url: str, max_tasks: int = DEFAULT_MAX_TASKS) -> None:
    """Group the plan's shards into tasks and write each task's shards, sources included, to its
    slice under ``<out_url>/_work/plan/`` (streamed: one shard in memory), and remove the slices
    of an earlier plan with more tasks; the plan keeps only the shards' number of sources, so
    plan.json stays small whatever the dataset."""
    for _ in stream_slices(plan, out_url, max_tasks):
        pass


def stream_slices(plan: Plan, out_url: str, max_tasks: int = DEFAULT_MAX_TASKS) -> Iterator[tuple[int, str]]:
    """write_slices, yielding each (shard id, shard_text) as it is written, so that a
    caller converting every task itself (tasks.convert_dataset) starts before the last slice is
    written and need not read the slices back. ``plan.tasks`` and ``plan.slices`` are set at once."""
    plan.tasks = group_tasks(len(plan.shards), max_tasks)
    plan.slices = Location.of(out_url).child(SLICES_DIR).url
    return _stream_slices(plan)


def _stream_slices(plan: Plan) -> Iterator[tuple[int, str]]:
    shards, light = plan.shard_texts(), []
    for task, ids in enumerate(plan.tasks):
        with publish(slice_location(plan, task)) as tmp, open(tmp, "w") as f:
            for i in ids:
                shard, text = next(shards)
                light.append(shard)
                f.write(f'{{"id": {i}, "shard": {text}}}\n')
                yield i, text
    plan.shards = light
    folder = Location.of(plan.slices)
    for e in folder.list_dir():  # an earlier plan's slices beyond this plan's tasks
        if re.fullmatch(r"task-(\d{5})\.jsonl", e.name) and int(e.name[5:10]) >= len(plan.tasks):
            folder.fs.rm_file(folder.child(e.name).path)
    if plan.train is not None:
        plan.train.close()
        plan.train = None


def read_slice(plan: Plan, task: int) -> Iterator[tuple[int, str]]:
    """(shard id, shard with its sources as JSON: shard_text) of one task, streamed from its slice;
    a slice that does not match plan.json (another plan's) is refused, naming the file and line."""
    loc = slice_location(plan, task)
    ids = plan.tasks[task]
    with loc.fs.open(loc.path, "rt") as f:
        n = 0
        for n, line in enumerate(f, 1):
            d = json.loads(line)
            shard = Shard.from_json(d["shard"])
            if n > len(ids) or d["id"] != ids[n - 1] or shard.light() != plan.shards[d["id"]]:
                raise PlanError(f"{loc.url}:{n}: shard {d['id']} is not the one plan.json plans: plan again")
            yield d["id"], json.dumps(d["shard"])  # (the text written: JSON of json.dumps reads back the same)
    if n != len(ids):
        raise PlanError(f"{loc.url}: {n} shards, plan.json plans {len(ids)} for task {task}: plan again")
