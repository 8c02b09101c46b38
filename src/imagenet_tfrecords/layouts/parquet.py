"""Parquet files as the Hugging Face Hub stores a dataset (``huggingface-cli download --repo-type dataset``)::

    data/<split>-NNNNN-of-MMMMM[-<hash>].parquet     one config
    <split>/*.parquet                                  a folder a split
    <config>/<split>-*.parquet, <config>/<split>/*.parquet   several configs: pick one (option config)

Split names: ``train``, ``validation``/``valid``/``val`` (the val split), ``test``. The image column
is the one the ``datasets`` library records as an Image feature (struct ``bytes``, ``path``) in the
``huggingface`` key of the schema's metadata, the label column its one ClassLabel feature; options
name them where a dataset has several, or none recorded. The class names are the ClassLabel's
``names`` in their order: that order is the label index (labels.txt lists them so), the one the
dataset's users already use, not a sorted order. A label of -1 (the Hub's test splits) is unlabelled;
a split without the label column is unlabelled.

Planning reads only the files' footers (parquet.py), a few files at a time. Every shard holds a run of
rows of one file, read a row group at a time when converted (sources.py): train has ``train_count``
shards (0: about 1,000 rows each), given to the files in proportion to their rows (at least one a
file), val and test ``shard_size`` rows a shard. The rows keep the files' order: train shards are
not mixed across files (the labels are not read before conversion); per-class train shards cannot
be made. Each row is a source named by its row number in its file (``<file>/<row>``); what cannot be
converted is a reject named so. A parquet file of no split is a problem of the plan.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..fs import Entry, Location, file_entry
from ..listing import _ahead, default_train_shards, identities_digest, natural_key
from ..parquet import Footer, ParquetError, class_labels, image_columns, read_footer
from ..plan import MIXED, ClassInfo, Found, MetadataError, Plan, Shard, TrainShardsError

NAME = "parquet"
REQUIRED = ()
OPTIONS = ("config", "image", "label")  # --layout parquet:config=NAME,image=COLUMN,label=COLUMN
SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}
_SPLIT_FILE = re.compile(r"(train|validation|valid|val|test)(?:[-_.].*)?\.parquet")
SUFFIX = ".parquet"


@dataclass(frozen=True)
class SplitFile:
    rel: str  # path relative to the root
    config: str  # "" for a dataset of one config
    split: str  # train, val or test
    named: str  # the split's name as the file has it (validation, valid, val...)


def parquet_files(root: Location) -> tuple[list[SplitFile], list[str]]:
    """The split files under ``root`` (at most three folders deep: ``<config>/<split>/*.parquet``)
    and the other parquet files' paths (no split in their name or folder)."""
    found, others = [], []

    def visit(rel: str, depth: int) -> None:
        folder = root.child(rel) if rel else root
        for e in folder.list_dir(root):
            path = f"{rel}/{e.name}" if rel else e.name
            if e.kind == "dir" and depth < 2 and (depth == 0 or e.name.lower() in SPLIT_NAMES or e.name == "data"):
                visit(path, depth + 1)
            elif e.kind == "file" and e.name.lower().endswith(SUFFIX):
                got = _split_file(path)
                (found.append(got) if got else others.append(path))

    visit("", 0)
    return found, others


def _split_file(rel: str) -> SplitFile | None:
    *dirs, name = rel.split("/")
    m = _SPLIT_FILE.fullmatch(name.lower())
    if m:
        named = m.group(1)
    elif dirs and dirs[-1].lower() in SPLIT_NAMES:
        named = dirs.pop().lower()
    else:
        return None
    config = "/".join(d for d in dirs if d != "data")
    return SplitFile(rel, config, SPLIT_NAMES[named], named)


def detected(root: Location) -> bool:
    """Whether ``root`` holds parquet split files (the parquet layout)."""
    return bool(parquet_files(root)[0])


@dataclass(frozen=True)
class _File:
    split: SplitFile
    footer: Footer
    entry: Entry
    image: int  # column index
    label: int  # column index, -1: none


def plan(
    root: Location,
    shard_size: int,
    train_order: str = MIXED,
    train_count: int = 0,
    config: str | None = None,
    image: str | None = None,
    label: str | None = None,
) -> Plan:
    """Read the footers of the split files under ``root`` and plan every output shard."""
    if train_order != MIXED:
        raise TrainShardsError(
            "--train-order per-class: the parquet layout reads no label before converting (its plan reads "
            "only the files' footers), so it cannot make a shard a class; use mixed"
        )
    files, others = parquet_files(root)
    found = Found()
    found.problems += [{"path": p, "reason": "a parquet file of no split (train, validation, test)"} for p in others]
    if not files:
        raise MetadataError(f"{root.url}: no parquet split files (data/<split>-*.parquet, <split>/*.parquet)")
    configs = sorted({f.config for f in files})
    if config is not None:
        if config not in configs:
            raise MetadataError(f"{root.url}: no config {config!r}; its configs: {', '.join(configs) or '(none)'}")
        files = [f for f in files if f.config == config]
    elif len(configs) > 1:
        raise MetadataError(
            f"{root.url}: {len(configs)} configs ({', '.join(configs)}): choose one with --layout parquet:config=NAME"
        )
    named = {}
    for f in files:
        if named.setdefault(f.split, f.named) != f.named:
            raise MetadataError(f"{root.url}: both {named[f.split]} and {f.named} files: which is the {f.split} split?")
    files.sort(key=lambda f: (("train", "val", "test").index(f.split), natural_key(f.rel)))
    read = list(_ahead(lambda f: (f, read_footer(root.child(f.rel)), file_entry(root.child(f.rel))), files, 8))
    classes: list[str] | None = None
    where = ""
    chosen: list[_File] = []
    for f, footer, entry in read:
        img = _image_column(footer, image)
        lbl, names = _label_column(footer, label)
        if names is not None:
            if classes is None:
                classes, where = names, footer.url
            elif names != classes:
                raise MetadataError(f"{footer.url}: its ClassLabel names differ from those of {where}")
        chosen.append(_File(f, footer, entry, footer.columns.index(img), footer.columns.index(lbl) if lbl else -1))
    if classes is None:
        found.warnings.append(f"{root.url}: no ClassLabel column: every record is unlabelled (-1)")
        classes = []
    for split in ("train", "val", "test"):
        if split not in {f.split.split for f in chosen}:
            found.warnings.append(f"{root.url}: no {split} split (no parquet file of it)")
    shards = _RowShards(chosen, shard_size, train_count)
    return found.plan(root, NAME, [ClassInfo(wnid=n, words=n) for n in classes], shards.light(), MIXED, shards)


def _image_column(footer: Footer, asked: str | None) -> str:
    if asked is not None:
        if asked not in footer.columns:
            raise ParquetError(f"{footer.url}: no column {asked!r} (its columns: {', '.join(footer.columns)})")
        if footer.kinds[footer.columns.index(asked)] not in ("image", "binary"):
            raise ParquetError(
                f"{footer.url}: column {asked!r} holds no image bytes (not struct bytes/path, not binary)"
            )
        return asked
    found = image_columns(footer)
    if not found:
        raise ParquetError(
            f"{footer.url}: no image column (no Image feature in its huggingface metadata, no struct bytes/path "
            "column); name one with --layout parquet:image=COLUMN"
        )
    if len(found) > 1:
        raise ParquetError(
            f"{footer.url}: {len(found)} image columns ({', '.join(found)}): "
            "choose one with --layout parquet:image=COLUMN"
        )
    return found[0]


def _label_column(footer: Footer, asked: str | None) -> tuple[str | None, list[str] | None]:
    labels = class_labels(footer)
    if asked is not None:
        if asked in labels:
            return asked, labels[asked]
        if asked in footer.columns:
            raise ParquetError(f"{footer.url}: column {asked!r} is not a ClassLabel (no class names recorded)")
        return None, None  # (a split without it, e.g. the test split: unlabelled)
    if len(labels) > 1:
        raise ParquetError(
            f"{footer.url}: {len(labels)} ClassLabel columns ({', '.join(labels)}): choose one with "
            "--layout parquet:label=COLUMN"
        )
    return next(iter(labels.items()), (None, None))


@dataclass(frozen=True)
class _Run:
    shard: Shard  # light
    file: _File
    start: int
    stop: int


class _RowShards:
    """Every shard of the plan, each a run of rows of one file; their sources made as they are
    streamed (plan.SpilledShards: the plan holds only the runs)."""

    def __init__(self, files: list[_File], shard_size: int, train_count: int):
        self.runs: list[_Run] = []
        train = [f for f in files if f.split.split == "train" and f.footer.rows]
        counts = train_counts([f.footer.rows for f in train], train_count)
        self._add("train", list(zip(train, counts, strict=True)))
        for split in ("val", "test"):
            self._add(split, [(f, -(-f.footer.rows // shard_size)) for f in files if f.split.split == split])

    def _add(self, split: str, parts: list[tuple[_File, int]]) -> None:
        """The shards of ``split``: each file of ``parts`` cut into its number of runs of rows."""
        cuts = []
        for f, n in parts:
            bounds = [f.footer.rows * i // n for i in range(n + 1)] if n else []
            cuts += [(f, a, b) for a, b in itertools.pairwise(bounds)]
        for i, (f, a, b) in enumerate(cuts):
            self.runs.append(_Run(Shard(split, i, len(cuts), f.split.rel, found=b - a), f, a, b))

    def light(self) -> list[Shard]:
        return [r.shard for r in self.runs]

    def texts(self) -> Iterator[tuple[Shard, str]]:
        for r in self.runs:
            f = r.file
            offsets = [0]
            for n in f.footer.row_groups:
                offsets.append(offsets[-1] + n)
            files = []
            for row in range(r.start, r.stop):
                g = bisect.bisect_right(offsets, row) - 1
                files.append([str(row), -1, None, [g, row - offsets[g], f.image, f.label]])
            e = f.entry
            digest = identities_digest([[f.split.rel, "rows", r.start, r.stop, e.size, e.stamp]])
            d = {"split": r.shard.split, "index": r.shard.index, "count": r.shard.count, "dir": r.shard.dir}
            yield r.shard, json.dumps(d | {"files": files, "inputs": digest})

    def close(self) -> None:
        self.runs = []


def train_counts(rows: list[int], asked: int) -> list[int]:
    """Train shards of each file of ``rows`` rows: ``asked`` in all (0: about 1,000 rows a shard), in
    proportion to the files' rows, at least one a file and at most a row a shard."""
    if not rows:
        return []
    files = rows
    total = sum(rows)
    if asked > total:
        raise TrainShardsError(f"--train-shards {asked} is more than the {total:,} train rows: at most {total:,}")
    if asked and asked < len(files):
        raise TrainShardsError(
            f"--train-shards {asked}: the train split has {len(files)} files and a shard holds rows of "
            f"one file: at least {len(files)}"
        )
    want = asked or max(default_train_shards(total), len(files))
    quota = [want * n / total for n in rows]
    counts = [min(n, max(1, int(q))) for n, q in zip(rows, quota, strict=True)]
    while sum(counts) < want:
        i = max((i for i in range(len(files)) if counts[i] < rows[i]), key=lambda i: quota[i] - counts[i])
        counts[i] += 1
    while sum(counts) > want:
        i = max((i for i in range(len(files)) if counts[i] > 1), key=lambda i: counts[i] - quota[i])
        counts[i] -= 1
    return counts
