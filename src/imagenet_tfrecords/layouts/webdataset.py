"""WebDataset tar shards (timm's ``imagenet1k-train-{0000..1023}.tar`` and the like)::

    <anything>-<split>-NNNN.tar      at the root or in a folder beneath it; split: train,
                                     validation/valid/val, test
    classes.txt                      (optional) the class names, one a line: line i (from 0) is label i;
                                     ``name<TAB>words`` lines (this tool's labels.txt) are read too

A sample is the members in a row sharing a key (the member's path up to the first dot of its file
name, as the webdataset library groups them): one image (``jpg``, ``jpeg``, ``png``, ``webp``, any
case), its label from ``cls`` (the number as text) or else the ``json``'s ``label``; a sample
without either is unlabelled (-1). Other members (captions, metadata) are not inputs. Without a
class names file (option ``classes=FILE``, default classes.txt), the class names are the label
numbers 0 to the largest label found: planning then reads every sample's label member (a small
range read each); with one it reads only the tar headers (archive.py). Every shard holds a run of
samples of one tar, read as byte ranges when converted (sources.py): train has ``train_count`` shards
(0: about 1,000 samples each) given to the tars in proportion to their samples, val and test
``shard_size`` samples a shard. Rejects are named by tar member: a member that is a link or a folder,
a sample with two images or none; corrupt bytes, non-images and labels outside the class names are
found when converting.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..archive import Member, RangeReader, list_tar
from ..fs import Entry, Location, file_entry, is_ignored
from ..listing import identities_digest, natural_key, read_lines, spread
from ..plan import MIXED, ClassInfo, Found, MetadataError, Plan, Shard, TrainShardsError
from ..sources import LABEL_CLS, LABEL_JSON, label_of
from .parquet import SPLIT_NAMES, train_counts

NAME = "webdataset"
REQUIRED = ()
OPTIONS = ("classes",)  # --layout webdataset:classes=FILE
CLASSES_FILE = "classes.txt"
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})
_SHARD = re.compile(r"(?:.*[-_])?(train|validation|valid|val|test)[-_]\d+\.(tar|tar\.gz|tgz)", re.IGNORECASE)
_KEY = re.compile(r"((?:.*/|)[^./]+)\.([^/]*)")


@dataclass(frozen=True)
class TarShard:
    rel: str
    split: str


def tar_shards(root: Location) -> list[TarShard]:
    """The shards under ``root`` and its folders one level down, in natural name order; a
    compressed one is an error (its members cannot be read as ranges)."""
    found = []
    for e in root.list_dir(root):
        names = [(e.name, e)]
        if e.kind == "dir":
            names = [(f"{e.name}/{c.name}", c) for c in root.child(e.name).list_dir(root)]
        for rel, entry in names:
            m = _SHARD.fullmatch(rel.rsplit("/", 1)[-1])
            if entry.kind != "file" or not m:
                continue
            if m.group(2).lower() != "tar":
                raise MetadataError(
                    f"{root.child(rel).url}: a compressed tar cannot be read in place: decompress it (gunzip)"
                )
            found.append(TarShard(rel, SPLIT_NAMES[m.group(1).lower()]))
    return sorted(found, key=lambda t: natural_key(t.rel))


def detected(root: Location) -> bool:
    """Whether ``root`` holds WebDataset shards (<name>-<split>-NNNN.tar)."""
    try:
        return bool(tar_shards(root))
    except MetadataError:
        return True  # (a compressed shard: the layout's plan names it)


def plan(
    root: Location,
    shard_size: int,
    train_order: str = MIXED,
    train_count: int = 0,
    classes: str | None = None,
    pattern: str | None = None,
) -> Plan:
    """List every shard's members from its headers and plan every output shard (``pattern``: a brace
    pattern naming the shards to convert, e.g. ``imagenet1k-train-{0000..1023}.tar``; else all)."""
    if train_order != MIXED:
        raise TrainShardsError(
            "--train-order per-class: the webdataset layout reads no label before converting (its plan reads "
            "only the tar headers), so it cannot make a shard a class; use mixed"
        )
    shards = tar_shards(root)
    if pattern is not None:
        named = expand(pattern)
        for name in named:
            if not root.child(name).exists():
                raise MetadataError(f"{root.child(name).url}: file not found (named by {pattern})")
        shards = [t for t in shards if t.rel in set(named)]
        if len(shards) < len(named):
            other = sorted(set(named) - {t.rel for t in shards})[0]
            raise MetadataError(f"{root.child(other).url}: not named <name>-<split>-NNNN.tar (named by {pattern})")
    if not shards:
        raise MetadataError(f"{root.url}: no WebDataset shards (<name>-<split>-NNNN.tar)")
    found = Found()
    names_file = root.child(classes or CLASSES_FILE)
    names = _class_names(names_file) if classes or names_file.exists() else None
    listed = []
    for shard, entry, samples, ignored in spread(lambda t: _list(root, t), shards, root.is_local):
        found.ignored[shard.split] += ignored
        listed.append((shard, entry, samples))
    if names is None:
        top = max((_largest_label(root.child(t.rel), samples) for t, _, samples in listed), default=-1)
        names = [(str(i), str(i)) for i in range(top + 1)]
        found.warnings.append(
            f"{root.url}: no {CLASSES_FILE}: the class names are the label numbers 0 to {top} (read from every "
            "sample's label member while planning)"
        )
    for split in ("train", "val", "test"):
        if split not in {t.split for t in shards}:
            found.warnings.append(f"{root.url}: no {split} split (no <name>-{split}-NNNN.tar)")
    runs = _Runs(listed, shard_size, train_count)
    return found.plan(root, NAME, [ClassInfo(n, w) for n, w in names], runs.light(), MIXED, runs)


MAX_PATTERN = 100_000  # names a brace pattern may expand to


def expand(pattern: str) -> list[str]:
    """The names a brace pattern stands for, in order: ``{0000..0003}`` (zero-padded as written),
    ``{train,validation}``, several of them; MetadataError for more than MAX_PATTERN names."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        a, b = r.groups()
        width = len(a) if len(a) == len(b) else 0
        if int(b) - int(a) > MAX_PATTERN:
            raise MetadataError(f"{pattern}: more than {MAX_PATTERN:,} names")
        items = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        items = body.split(",")
    out = []
    for item in items:
        out += expand(pattern[: m.start()] + item + pattern[m.end() :])
        if len(out) > MAX_PATTERN:
            raise MetadataError(f"{pattern}: more than {MAX_PATTERN:,} names")
    return out


def _class_names(loc: Location) -> list[tuple[str, str]]:
    out = []
    for n, line in read_lines(loc):
        name, _, words = line.partition("\t")
        if not name.strip():
            raise MetadataError(f"{loc.url}:{n}: expected a class name, got {line[:80]!r}")
        out.append((name.strip(), words.strip() or name.strip()))
    if not out:
        raise MetadataError(f"{loc.url}: no class names")
    return out


Sample = list  # [image member name, label -1, reason or None, span or None]


def _list(root: Location, shard: TarShard) -> tuple[TarShard, Entry, list[Sample], int]:
    """The tar's samples (sources as JSON lists: its links and folders rejects among them), and how
    many of its members are ignored by name."""
    loc = root.child(shard.rel)
    entry = file_entry(loc)
    members = list_tar(loc)
    kept = [m for m in members if not any(is_ignored(part) for part in m.name.split("/") if part)]
    samples: list[Sample] = []
    for _, group in itertools.groupby(kept, key=lambda m: _key(m.name)[0]):
        samples += _sample(list(group))
    return shard, entry, samples, len(members) - len(kept)


def _key(name: str) -> tuple[str, str]:
    m = _KEY.fullmatch(name)
    return (m.group(1), m.group(2).lower()) if m else (name, "")


def _sample(members: list[Member]) -> list[Sample]:
    """The sources of one sample's members: its image with its label member's span, or rejects."""
    out: list[Sample] = []
    files = []
    for m in members:
        if m.kind == "dir":
            out.append([m.name, None, "a folder in the archive, not a sample's member", None])
        elif m.kind != "file":
            out.append([m.name, None, f"not a regular file in the archive ({m.kind})", None])
        else:
            files.append(m)
    images = [m for m in files if _key(m.name)[1] in IMAGE_EXTENSIONS]
    by_ext = {_key(m.name)[1]: m for m in files}
    label = by_ext.get("cls"), LABEL_CLS
    if label[0] is None:
        label = by_ext.get("json"), LABEL_JSON
    if len(images) > 1:
        listed = ", ".join(m.name.rsplit("/", 1)[-1] for m in images)
        why = f"the sample has {len(images)} images ({listed}): which is its image?"
        out += [[m.name, None, why, None] for m in images]
    elif images:
        m = images[0]
        span = [m.offset, m.size] + ([label[0].offset, label[0].size, label[1]] if label[0] else [])
        out.append([m.name, -1, None, span])
    elif files:
        what = ", ".join(m.name.rsplit("/", 1)[-1] for m in files)
        out.append([files[0].name, None, f"a sample without an image (jpg, jpeg, png, webp): {what}", None])
    return out


def _largest_label(loc: Location, samples: list[Sample]) -> int:
    """The largest label of the samples' label members (-1: none); a label that is not one is left
    to the conversion, which rejects it."""
    spans = [s[3] for s in samples if s[3] and len(s[3]) > 2]
    top = -1
    with RangeReader(loc) as reader:
        for i in range(0, len(spans), 256):
            chunk = spans[i : i + 256]
            for span, raw in zip(chunk, reader.read([sp[2:4] for sp in chunk]), strict=True):
                if isinstance(raw, bytes):
                    value = label_of(raw, span[4], 1 << 62)
                    if isinstance(value, int):
                        top = max(top, value)
    return top


class _Runs:
    """Every shard of the plan, each a run of samples of one tar, kept as JSON (plan.SpilledShards)."""

    def __init__(self, listed: list[tuple[TarShard, Entry, list[Sample]]], shard_size: int, train_count: int):
        self.shards: list[tuple[Shard, str]] = []
        train = [x for x in listed if x[0].split == "train" and x[2]]
        counts = train_counts([len(s) for _, _, s in train], train_count)
        self._add("train", [(*x, n) for x, n in zip(train, counts, strict=True)])
        for split in ("val", "test"):
            parts = [(*x, -(-len(x[2]) // shard_size)) for x in listed if x[0].split == split and x[2]]
            self._add(split, parts)

    def _add(self, split: str, parts: list) -> None:
        cuts = []
        for tar, entry, samples, n in parts:
            bounds = [len(samples) * i // n for i in range(n + 1)]
            cuts += [(tar, entry, samples, a, b) for a, b in itertools.pairwise(bounds)]
        for i, (tar, entry, samples, a, b) in enumerate(cuts):
            shard = Shard(split, i, len(cuts), tar.rel, found=b - a)
            digest = identities_digest([[tar.rel, "samples", a, b, entry.size, entry.stamp]])
            d = {"split": split, "index": i, "count": len(cuts), "dir": tar.rel}
            self.shards.append((shard, json.dumps(d | {"files": [_json(s) for s in samples[a:b]], "inputs": digest})))

    def light(self) -> list[Shard]:
        return [s for s, _ in self.shards]

    def texts(self) -> Iterator[tuple[Shard, str]]:
        yield from self.shards

    def close(self) -> None:
        self.shards = []


def _json(s: Sample) -> list:
    return s if s[3] is not None else s[:3]
