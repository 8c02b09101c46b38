"""The conversion plan: what a layout makes of a dataset, and what every later step reads.

A layout (``layouts/<name>.py``) turns a dataset root into a Plan: the classes (label = index
in the sorted class ids), one Shard per output file, the rejects found while reading the
metadata, and warnings. A shard either lists fixed sources (val and test: files, labels and
reject reasons decided from the metadata) or names a class folder that is listed when it is
converted (train). Shard names depend only on the dataset, never on how shards are grouped into
tasks, so output is the same however the work is spread. The Plan round-trips through JSON
(plan.json, the pipeline's first artifact); a plan of another version is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from .fs import Entry, Location

SPLITS = ("train", "val", "test")
PLAN_VERSION = 2
# Conversion tasks of one run. Vertex AI collects at most 100 artifacts in one dsl.Collected
# input, and every collected artifact lengthens the fan-in step's executor input, which the
# Kubeflow backend passes as one command-line argument (Linux: under 128 KiB).
MAX_TASKS = 100
DEFAULT_MAX_TASKS = 64
DEFAULT_PARALLELISM = 16  # conversion tasks running at once on a cluster (ParallelFor parallelism)
DEFAULT_SHARD_SIZE = 500  # images per val/test shard


class MetadataError(ValueError):
    """The dataset's metadata is missing or malformed; the message names file and line."""


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
    """One output file. ``sources`` are fixed at plan time, or None: the files of ``dir`` are
    listed when the shard is converted, all labelled ``label``. ``inputs`` is the digest of the
    fixed sources' files (names, sizes, change stamps)."""

    split: str
    index: int
    count: int
    dir: str
    label: int | None = None
    wnid: str | None = None
    sources: tuple[Source, ...] | None = None
    inputs: str = ""

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
            out |= {"label": self.label, "wnid": self.wnid}
        else:
            out |= {"files": [s.to_json() for s in self.sources], "inputs": self.inputs}
        return out

    @classmethod
    def from_json(cls, d: dict) -> Shard:
        sources = tuple(Source.from_json(f) for f in d["files"]) if "files" in d else None
        common = {k: d[k] for k in ("split", "index", "count", "dir")}
        if sources is None:
            return cls(**common, label=d["label"], wnid=d.get("wnid"))
        return cls(**common, sources=sources, inputs=d.get("inputs", ""))


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
        )


def natural_key(name: str) -> list:
    """Sort key that orders val_2 before val_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def inputs_digest(entries: list[Entry]) -> str:
    """A digest of the names, sizes and change stamps of a shard's input files."""
    return hashlib.sha256(json.dumps([e.identity for e in entries]).encode()).hexdigest()[:32]


def list_images(directory: Location, root: Location) -> tuple[dict[str, Entry], list[Entry]]:
    """The files of an images folder by name in natural order, and its other entries (folders,
    links leaving the dataset root, FIFOs...), which are never read."""
    listed = directory.list_dir(root) if directory.isdir() else []
    files = sorted((e for e in listed if e.kind == "file"), key=lambda e: natural_key(e.name))
    return {e.name: e for e in files}, [e for e in listed if e.kind != "file"]


def fixed_shards(split: str, folder: str, sources: list[Source], files: dict[str, Entry], size: int) -> list[Shard]:
    """Shards of fixed sources, ``size`` per shard, in the order given. Each shard's inputs digest
    covers those of its sources found in ``files`` (source name -> entry; the entries renamed to
    the source names, which may be paths inside ``folder``)."""
    chunks = [sources[i : i + size] for i in range(0, len(sources), size)]
    shards = []
    for i, chunk in enumerate(chunks):
        entries = [dataclasses.replace(files[s.name], name=s.name) for s in chunk if s.name in files]
        shards.append(Shard(split, i, len(chunks), folder, sources=tuple(chunk), inputs=inputs_digest(entries)))
    return shards


def list_files(directory: Location, root: Location, rel: str, rejects: list[dict]) -> dict[str, Entry]:
    """The files of a folder of fixed sources (``list_images``); its other entries are appended to
    ``rejects``, named ``rel/<name>``, with their reason."""
    files, others = list_images(directory, root)
    rejects += [{"path": f"{rel}/{e.name}", "reason": e.reason} for e in sorted(others, key=lambda e: e.name)]
    return files


def group_tasks(num_shards: int, max_tasks: int = DEFAULT_MAX_TASKS) -> list[list[int]]:
    """Group shard ids into ``min(max_tasks, num_shards)`` tasks: contiguous runs whose lengths differ by one at most.

    Train shards come first in the plan (one class each), then val and test; a task may hold
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
