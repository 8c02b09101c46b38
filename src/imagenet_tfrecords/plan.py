"""The conversion plan's types and JSON: what a layout makes of a dataset, and what every later step reads.

A layout (``layouts/<name>.py``) turns a dataset root into a Plan: the classes (label = index
in the sorted class ids), one Shard per output file, the rejects found while reading the
metadata, and warnings. Every shard's sources (files, labels and reject reasons) are fixed at plan
time; how they are listed and how the train shards are cut is ``listing.py``'s. Shard names depend
only on the dataset, never on how shards are grouped into tasks (``group_tasks``), so output is the
same however the work is spread.

The Plan round-trips through JSON (plan.json, the pipeline's first artifact) without the shards'
sources: ``write_slices`` writes each conversion task's shards, sources included, to a slice file
of its own (``<output>/_work/plan/task-NNNNN.jsonl``, one shard a line) that ``read_slice`` streams
back, so no step holds every file's entry. A plan of another version is refused.

The conversion's options (``options``: convert.Options as a dict), the output they go to, the
processes per task and the reject threshold enter once, at the plan step, and travel in plan.json:
the later steps read them from there and take no copy of their own, so no two steps can disagree.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .fs import Location, publish, remove
from .fs import MetadataError as MetadataError  # the layouts raise it; imported from here too
from .records import Box

SPLITS = ("train", "val", "test")
PLAN_VERSION = 4  # 4: the conversion options, output, workers and reject threshold travel in it
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
SLICES_DIR = "_work/plan"  # under the output: each conversion task's shards (write_slices)


class TrainShardsError(ValueError):
    """More mixed train shards asked for than there are train inputs (a bad command line: exit 2)."""


class PlanError(ValueError):
    """plan.json is not a plan this version reads."""


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


class SpilledShards(Protocol):
    """Shards whose sources were spilled to local disk while the dataset was listed
    (listing.TrainShards): streamed once as (light shard, shard_text), then closed."""

    def texts(self) -> Iterator[tuple[Shard, str]]: ...

    def close(self) -> None: ...


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
    # Given once, to the plan step, for every later step: where the conversion writes, its options
    # (convert.Options' fields), processes per conversion task (0: every CPU), the reject threshold
    output: str = ""
    options: dict = field(default_factory=dict)
    workers: int = 0
    max_reject_fraction: float | None = None
    # the train shards' sources, spilled while listing (listing.TrainShards; not in plan.json: see write_slices)
    train: SpilledShards | None = field(default=None, compare=False, repr=False)

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
                "output": self.output,
                "options": self.options,
                "workers": self.workers,
                "max_reject_fraction": self.max_reject_fraction,
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
            output=d["output"],
            options=d["options"],
            workers=int(d["workers"]),
            max_reject_fraction=d["max_reject_fraction"],
        )


@dataclass
class Found:
    """What a layout finds while it reads a dataset besides its classes and shards, gathered as it
    goes: inputs no shard holds ({"path", "reason"}), warnings, problems about folders, and the
    entries ignored by name (fs.is_ignored) counted by split. ``plan`` makes the Plan of it all."""

    rejects: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    ignored: collections.Counter = field(default_factory=collections.Counter)

    def plan(
        self,
        root: Location,
        layout: str,
        classes: list[ClassInfo],
        shards: list[Shard],
        train_order: str,
        train: SpilledShards | None,
        boxes: str = "",
    ) -> Plan:
        """The plan of the dataset at ``root`` as ``layout`` read it (``boxes``: its pixel convention)."""
        return Plan(
            data=root.url,
            classes=classes,
            shards=shards,
            rejects=self.rejects,
            warnings=self.warnings,
            layout=layout,
            problems=self.problems,
            train_order=train_order,
            train=train,
            boxes=boxes,
            ignored=dict(self.ignored),
        )


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


def shard_text(shard: Shard) -> str:
    """A shard with its sources as JSON (Shard.to_json): a slice line's shard, and what a
    conversion worker is handed."""
    return json.dumps(shard.to_json())


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
        with publish(slice_location(plan, task)) as raw:
            f = io.TextIOWrapper(raw, encoding="utf-8")
            for i in ids:
                shard, text = next(shards)
                light.append(shard)
                f.write(f'{{"id": {i}, "shard": {text}}}\n')
                yield i, text
            f.flush()
            f.detach()  # (publish closes it: only when every line is written)
    plan.shards = light
    folder = Location.of(plan.slices)
    for e in folder.list_dir():  # an earlier plan's slices beyond this plan's tasks
        if re.fullmatch(r"task-(\d{5})\.jsonl", e.name) and int(e.name[5:10]) >= len(plan.tasks):
            remove(folder.child(e.name))
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
