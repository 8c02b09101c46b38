"""TinyImageNet's layout (also any dataset laid out like it)::

    wnids.txt                     class ids, one per line (not sorted)
    words.txt                     wnid<TAB>words for (at least) every class id
    train/<wnid>/images/*         training images of one class
    train/<wnid>/<wnid>_boxes.txt file<TAB>x0<TAB>y0<TAB>x1<TAB>y1: each image's box
    val/images/*                  validation images
    val/val_annotations.txt       file<TAB>wnid[<TAB>x0<TAB>y0<TAB>x1<TAB>y1]
    test/images/*                 unlabelled test images (optional)

Train shards are planned by listing.train_shards from the class folders' listings (mixed by path
hash, or one class each); val and test shards hold ``shard_size`` sources each, fixed here. Train
and val images carry their boxes (see boxes.py; inclusive pixel indices). Bad
metadata raises MetadataError naming the file and line. Problems with single images (an
annotation naming an unknown class, an image with no annotation, an annotated file that is
missing) do not stop the run: they become rejects.
"""

from __future__ import annotations

import collections
import re

from .. import boxes
from ..fs import Location, check_inside, excerpt
from ..listing import (
    class_listings,
    fixed_shards,
    ignored_in,
    list_files,
    natural_key,
    note_class_id,
    read_lines,
    test_shards,
    train_shards,
)
from ..plan import MIXED, ClassInfo, Found, MetadataError, Plan, Shard, Source

NAME = "tinyimagenet"
REQUIRED = ("wnids.txt", "words.txt", "val/val_annotations.txt")


def parse_wnids(loc: Location) -> list[tuple[str, int]]:
    """(wnid, line) in file order; duplicates and malformed ids are errors."""
    seen: dict[str, int] = {}
    for n, line in read_lines(loc):
        if not re.fullmatch(r"[^\s/\\]+", line):
            raise MetadataError(f"{loc.url}:{n}: not a class id: {excerpt(line)}")
        note_class_id(loc, n, line, seen)
    if not seen:
        raise MetadataError(f"{loc.url}: no class ids")
    return list(seen.items())


def parse_words(loc: Location, wanted: set[str]) -> dict[str, str]:
    """wnid -> words for the wanted ids."""
    words: dict[str, str] = {}
    for n, line in read_lines(loc):
        wnid, tab, text = line.partition("\t")
        if not tab:
            raise MetadataError(f"{loc.url}:{n}: expected 'wnid<TAB>words', got {line[:80]!r}")
        if wnid in wanted:
            words[wnid] = text.strip()
    return words


def parse_val_annotations(
    loc: Location, labels: dict[str, int]
) -> tuple[dict[str, tuple[int | None, str | None]], list[str]]:
    """file name -> (label, reject reason), and warnings for harmless oddities."""
    out: dict[str, tuple[int | None, str | None]] = {}
    first: dict[str, tuple[int, str]] = {}
    warnings: list[str] = []
    name = loc.url.rsplit("/", 1)[-1]
    for n, file, wnid, _ in boxes.tinyimagenet_val_lines(loc):
        if file in first:
            prev_n, prev_wnid = first[file]
            if prev_wnid == wnid:
                warnings.append(f"{loc.url}:{n}: duplicate of line {prev_n} ({file} {wnid})")
            else:
                out[file] = (
                    None,
                    f"conflicting annotations in {name}: line {prev_n} says {prev_wnid}, line {n} says {wnid}",
                )
            continue
        first[file] = (n, wnid)
        if wnid in labels:
            out[file] = (labels[wnid], None)
        else:
            out[file] = (None, f"{name} line {n} names unknown class {wnid}")
    return out, warnings


def plan(root: Location, shard_size: int, train_order: str = MIXED, train_count: int = 0) -> Plan:
    """Read the metadata under ``root`` and plan every output shard (train: ``train_order``,
    ``train_count`` shards when mixed, 0 for the default)."""
    wnid_lines = parse_wnids(root.child("wnids.txt"))
    wnids = sorted(w for w, _ in wnid_lines)
    labels = {w: i for i, w in enumerate(wnids)}
    words = _words(root, wnid_lines)
    found = Found()
    rejects, warnings, problems, ignored = found.rejects, found.warnings, found.problems, found.ignored
    _check_train(root, wnid_lines, labels, rejects, ignored)
    classes = [(f"{w}/images", i) for w, i in sorted(labels.items())]
    notes: list[tuple[str, dict | None]] = []
    boxes_of = _train_boxes(root, labels)
    listings = class_listings(
        root, "train", classes, problems, train_order, boxes_of, notes, ignored=ignored, parents=True
    )
    train = train_shards("train", listings, train_order, train_count)
    no_boxes = [_boxes_file(root, sub.split("/", 1)[0]).url for sub, parsed in notes if parsed is None]
    if no_boxes:
        more = f" and {len(no_boxes) - 1} more classes" if len(no_boxes) > 1 else ""
        warnings.append(f"{min(no_boxes)}: not found{more} (their images get no boxes)")
    shards = train.light()
    shards += _val_shards(root, labels, shard_size, rejects, warnings, ignored)
    shards += test_shards(root, "test/images", shard_size, rejects, warnings, ignored)
    ignored["test"] += ignored_in(root.child("test"), root)  # (.DS_Store beside images/)
    classes = [ClassInfo(w, words[w]) for w in wnids]
    return found.plan(root, NAME, classes, shards, train_order, train, boxes.CONVENTIONS[NAME])


def _words(root: Location, wnid_lines: list[tuple[str, int]]) -> dict[str, str]:
    wnids_loc, words_loc = root.child("wnids.txt"), root.child("words.txt")
    words = parse_words(words_loc, {w for w, _ in wnid_lines})
    missing = [(w, n) for w, n in wnid_lines if w not in words]
    if missing:
        w, n = missing[0]
        raise MetadataError(
            f"{words_loc.url}: no entry for class {w} ({wnids_loc.url}:{n})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    return words


def _boxes_file(root: Location, wnid: str) -> Location:
    return root.child("train", wnid, f"{wnid}_boxes.txt")


def _train_boxes(root: Location, labels: dict[str, int]):
    """boxes_of for class_listings: the boxes of a class folder ``<wnid>/images`` from
    ``train/<wnid>/<wnid>_boxes.txt`` (None when the class has no such file: its images get no boxes)."""

    def boxes_of(sub: str) -> boxes.Parsed | None:
        wnid = sub.split("/", 1)[0]
        loc = _boxes_file(root, wnid)
        check_inside(loc, root)
        return boxes.parse_tinyimagenet_train(loc, wnid, labels) if loc.exists() else None

    return boxes_of


def _check_train(root: Location, wnid_lines: list, labels: dict[str, int], rejects: list[dict], ignored) -> None:
    """Every class has its folder under train/; stray entries of train/ are rejects."""
    train = root.child("train")
    if not train.isdir():
        raise MetadataError(f"{train.url}: directory not found")
    listed = train.list_dir(root)
    ignored["train"] += sum(e.kind == "ignored" for e in listed)
    class_dirs = {e.name: e.kind for e in listed if e.kind != "ignored"}
    for w, n in wnid_lines:
        if class_dirs.get(w) == "outside":
            check_inside(train.child(w), root)
        if class_dirs.get(w) != "dir":
            raise MetadataError(
                f"{train.url}/{w}: class directory not found (class id from {root.child('wnids.txt').url}:{n})"
            )
    for name, kind in sorted(class_dirs.items()):
        if name not in labels:
            rejects.append(
                {"path": f"train/{name}", "reason": f"not a class listed in wnids.txt ({kind} not converted)"}
            )


def _val_shards(
    root: Location,
    labels: dict[str, int],
    shard_size: int,
    rejects: list[dict],
    warnings: list[str],
    ignored: collections.Counter,
) -> list[Shard]:
    annotations, more_warnings = parse_val_annotations(root.child("val", "val_annotations.txt"), labels)
    warnings += more_warnings
    val_dir = root.child("val", "images")
    if not val_dir.isdir():
        raise MetadataError(f"{val_dir.url}: directory not found")
    listed_before = len(rejects)
    files = list_files(val_dir, root, "val/images", rejects, ignored, "val")
    ignored["val"] += ignored_in(root.child("val"), root)  # (.DS_Store beside images/)
    # an entry rejected while listing (a link leaving the dataset, a directory) is not also "missing"
    present = set(files) | {r["path"][len("val/images/") :] for r in rejects[listed_before:]}
    for name in sorted(set(annotations) - present, key=natural_key):
        rejects.append({"path": f"val/images/{name}", "reason": "listed in val_annotations.txt but missing"})
    found = boxes.parse_tinyimagenet_val(root.child("val", "val_annotations.txt"), labels)
    warnings += boxes.unknown_warnings(root.child("val", "val_annotations.txt"), found)
    sources = [
        Source(name, *annotations.get(name, (None, "no line in val_annotations.txt")), boxes=found.boxes.get(name, ()))
        for name in files
    ]
    return fixed_shards("val", "val/images", sources, files, shard_size)
