"""ILSVRC2012 (ImageNet-1k) as extracted from the Kaggle ImageNet object localization download::

    LOC_synset_mapping.txt                          'wnid words' per line (words may hold spaces, commas)
    LOC_val_solution.csv                            ImageId,PredictionString (wnid x0 y0 x1 y1 ...)
    LOC_train_solution.csv                          boxes of train images (optional; labels are the folders)
    ILSVRC/Data/CLS-LOC/train/<wnid>/*              training images of one class
    ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_*.JPEG   validation images, labelled by LOC_val_solution.csv
    ILSVRC/Data/CLS-LOC/test/ILSVRC2012_test_*.JPEG unlabelled test images (optional)

Labels index the sorted wnids of the mapping (as TFDS, Keras and torchvision number them), whatever
the mapping's line order. A val image's label is the wnid of its line's boxes. Every image carries
its boxes from the two CSV files (see boxes.py; pixel edges, as tensorflow/models reads them). Train
shards are planned by listing.train_shards from the class folders' listings (mixed by path hash, or one
class each); val and test shards hold ``shard_size`` sources each, in natural file order. Bad
metadata raises MetadataError naming the file and line; problems with single images become rejects,
as in tinyimagenet.

The same layout reads ILSVRC2012's original archives in place (the archive form, see
imagenet_archive.py) when they are there and LOC_synset_mapping.txt is not; labels are the same.
"""

from __future__ import annotations

import collections
import re

from .. import boxes
from ..boxes import EXTENSION
from ..fs import Location, check_inside
from ..listing import (
    class_listings,
    fixed_shards,
    list_files,
    natural_key,
    note_class_id,
    read_lines,
    test_shards,
    train_shards,
)
from ..plan import MIXED, ClassInfo, Found, MetadataError, Plan, Shard, Source
from . import imagenet_archive

NAME = "imagenet"
MAPPING = "LOC_synset_mapping.txt"
VAL_CSV = "LOC_val_solution.csv"
TRAIN_CSV = "LOC_train_solution.csv"  # boxes of the train images (optional)
REQUIRED = (MAPPING, VAL_CSV)
DATA = "ILSVRC/Data/CLS-LOC"  # the split folders, relative to the root

_ID = re.compile(r"[^\s/\\,]+")


def parse_mapping(loc: Location) -> list[tuple[str, str, int]]:
    """(wnid, words, line) in file order; malformed lines and repeated ids are errors."""
    out: list[tuple[str, str, int]] = []
    seen: dict[str, int] = {}
    for n, line in read_lines(loc):
        wnid, _, words = line.partition(" ")
        words = words.strip()
        if not _ID.fullmatch(wnid) or not words or "\t" in words:
            raise MetadataError(f"{loc.url}:{n}: expected 'wnid words', got {line[:80]!r}")
        note_class_id(loc, n, wnid, seen)
        out.append((wnid, words, n))
    if not out:
        raise MetadataError(f"{loc.url}: no classes")
    return out


def parse_val_solution(
    loc: Location, labels: dict[str, int]
) -> tuple[dict[str, tuple[int | None, str | None]], list[str]]:
    """file name -> (label, reject reason), and warnings for harmless oddities (a repeated line)."""
    out: dict[str, tuple[int | None, str | None]] = {}
    first: dict[str, tuple[int, str | None]] = {}
    warnings: list[str] = []
    for n, _, file, found in boxes.solution_rows(loc, iter(read_lines(loc)), train=False):
        image_id = file.removesuffix(EXTENSION)
        wnids = sorted({w for w, _ in found})
        wnid = wnids[0] if len(wnids) == 1 else None  # None: the boxes name several classes
        if file in first:
            prev_n, prev_wnid = first[file]
            if wnid is not None and prev_wnid == wnid:
                warnings.append(f"{loc.url}:{n}: duplicate of line {prev_n} ({image_id} {wnid})")
            else:
                out[file] = (None, f"conflicting classes in {VAL_CSV} line {n} (and line {prev_n})")
            continue
        first[file] = (n, wnid)
        if wnid is None:
            out[file] = (None, f"conflicting classes in {VAL_CSV} line {n}: {', '.join(wnids)}")
        elif wnid in labels:
            out[file] = (labels[wnid], None)
        else:
            out[file] = (None, f"{VAL_CSV} line {n} names unknown class {wnid}")
    return out, warnings


def archive_form(root: Location) -> bool:
    """Whether ``root`` holds the archive form: the devkit or an image archive, and no LOC_synset_mapping.txt."""
    return not root.child(MAPPING).exists() and any(root.child(r).exists() for r in imagenet_archive.REQUIRED)


def required(root: Location) -> tuple[str, ...]:
    """The metadata files of the form found under ``root``."""
    return imagenet_archive.REQUIRED if archive_form(root) else REQUIRED


def plan(root: Location, shard_size: int, train_order: str = MIXED, train_count: int = 0) -> Plan:
    """Read the metadata under ``root`` and plan every output shard (train: ``train_order``,
    ``train_count`` shards when mixed, 0 for the default)."""
    if archive_form(root):
        return imagenet_archive.plan(root, shard_size, NAME, train_order, train_count)
    mapping = parse_mapping(root.child(MAPPING))
    words = {w: text for w, text, _ in mapping}
    wnids = sorted(words)
    labels = {w: i for i, w in enumerate(wnids)}
    found = Found()
    rejects, warnings, problems, ignored = found.rejects, found.warnings, found.problems, found.ignored
    _check_train(root, mapping, labels, rejects, ignored)
    rel = f"{DATA}/train"
    solution = _train_solution(root, labels, warnings)
    boxes_of = solution.of if solution else None
    notes: list[tuple[str, dict | None]] = []
    classes = sorted(labels.items())
    listings = class_listings(root, rel, classes, problems, train_order, boxes_of, notes, ignored=ignored)
    train = train_shards(rel, listings, train_order, train_count)
    if solution:
        unknown = {file: n for _, dropped in notes for file, n in (dropped or {}).items()}
        warnings += boxes.unknown_warnings(solution.loc, boxes.Parsed({}, unknown))
        solution.close()
    shards = train.light()
    shards += _val_shards(root, labels, shard_size, rejects, warnings, ignored)
    shards += test_shards(root, f"{DATA}/test", shard_size, rejects, warnings, ignored)
    classes = [ClassInfo(w, words[w]) for w in wnids]
    return found.plan(root, NAME, classes, shards, train_order, train, boxes.CONVENTIONS[NAME])


def _train_solution(root: Location, labels: dict[str, int], warnings: list[str]) -> boxes.TrainSolution | None:
    """The train images' boxes, class by class, from LOC_train_solution.csv when it is there (else
    none, and a warning says so)."""
    loc = root.child(TRAIN_CSV)
    if not loc.exists():
        warnings.append(f"{loc.url}: not found (train images get no boxes)")
        return None
    check_inside(loc, root)
    return boxes.TrainSolution(loc, labels)


def _check_train(root: Location, mapping: list, labels: dict[str, int], rejects: list[dict], ignored) -> None:
    """Every class has its folder under train/; stray entries of train/ are rejects."""
    rel = f"{DATA}/train"
    train = root.child(rel)
    if not train.isdir():
        raise MetadataError(f"{train.url}: directory not found")
    listed = train.list_dir(root)
    ignored["train"] += sum(e.kind == "ignored" for e in listed)
    class_dirs = {e.name: e.kind for e in listed if e.kind != "ignored"}
    for w, _, n in mapping:
        if class_dirs.get(w) == "outside":
            check_inside(train.child(w), root)
        if class_dirs.get(w) != "dir":
            raise MetadataError(
                f"{train.url}/{w}: class directory not found (class id from {root.child(MAPPING).url}:{n})"
            )
    for name, kind in sorted(class_dirs.items()):
        if name not in labels:
            reason = f"not a class listed in {MAPPING} ({kind} not converted)"
            rejects.append({"path": f"{rel}/{name}", "reason": reason})


def _val_shards(
    root: Location,
    labels: dict[str, int],
    shard_size: int,
    rejects: list[dict],
    warnings: list[str],
    ignored: collections.Counter,
) -> list[Shard]:
    solution, more_warnings = parse_val_solution(root.child(VAL_CSV), labels)
    warnings += more_warnings
    rel = f"{DATA}/val"
    val_dir = root.child(rel)
    if not val_dir.isdir():
        raise MetadataError(f"{val_dir.url}: directory not found")
    listed_before = len(rejects)
    files = list_files(val_dir, root, rel, rejects, ignored, "val")
    # an entry rejected while listing (a link leaving the dataset, a directory) is not also "missing"
    present = set(files) | {r["path"][len(rel) + 1 :] for r in rejects[listed_before:]}
    for name in sorted(set(solution) - present, key=natural_key):
        rejects.append({"path": f"{rel}/{name}", "reason": f"listed in {VAL_CSV} but missing"})
    found = boxes.parse_imagenet_val(root.child(VAL_CSV), labels)
    warnings += boxes.unknown_warnings(root.child(VAL_CSV), found)
    sources = [
        Source(name, *solution.get(name, (None, f"no line in {VAL_CSV}")), boxes=found.boxes.get(name, ()))
        for name in files
    ]
    return fixed_shards("val", rel, sources, files, shard_size)
