"""Bounding boxes as the layouts' metadata give them: the box files parsed, and their pixel conventions.

Each record carries its image's boxes where the layout has them: ``records.box_entries`` encodes
them (``records.BOX_SCHEMA``), normalised by ``records.normalise`` by the convention below.

Pixel conventions. The metadata give each box's corners in pixels of the image
(``plan.Box``, kept as written); ``records.normalise`` turns them into edges divided by the image size:

- TinyImageNet (``train/<wnid>/<wnid>_boxes.txt``, ``val/val_annotations.txt``): the 0-based
  indices of the box's first and last pixel, both inside the box (``INCLUSIVE``): edges
  ``(x0 / W, y0 / H, (x1 + 1) / W, (y1 + 1) / H)``. The real files say so: on its 64 x 64 images
  the coordinates run from 0 to 63 and never reach 64, x1 is 63 in 45% of the val boxes, and 41
  val boxes have x0 == x1 or y0 == y1 (one-pixel strips along a border), which read as edges
  would be empty.
- ImageNet (``LOC_train_solution.csv``, ``LOC_val_solution.csv``): as tensorflow/models'
  ``process_bounding_boxes.py`` reads ImageNet's boxes, the coordinates divided by the width
  and height: ``(x0 / W, y0 / H, x1 / W, y1 / H)``.

Class ids. A box whose class id is not a class of the dataset cannot have a label; it is dropped
and counted per image (``Parsed.unknown``), and the image itself is kept: its own label comes
from its folder or annotation line, which the layout checks (a val image whose line names an
unknown class is rejected there). ImageNet train lines of images whose class folder is not a
class of the dataset (a subset of the 1000 classes with Kaggle's full CSV) are skipped: those
images are not inputs.

Malformed metadata lines raise ``plan.MetadataError`` naming the file and line; the files are
read with the layouts' tolerance (BOM, CRLF, blank lines). A file's boxes are the distinct boxes
of all its lines, in line order: a repeated line adds no box.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from .fs import Location, excerpt
from .listing import pickled_batches, read_lines, stream_lines
from .plan import Box, MetadataError

# How a layout's boxes count pixels (Plan.boxes): the last pixel inside the box, or the far edge.
INCLUSIVE, EDGES = "inclusive", "edges"
CONVENTIONS = {"tinyimagenet": INCLUSIVE, "imagenet": EDGES}

# LOC_*_solution.csv: its header line, and what makes a val ImageId a file name (ImageId + EXTENSION)
CSV_HEADER = "ImageId,PredictionString"
EXTENSION = ".JPEG"

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_ID = re.compile(r"[^\s/\\,]+")
_PLAIN = re.compile(r"[0-9]+")  # the common case of a coordinate, a number by _NUMBER too
_PLAIN_TRAIN_LINE = re.compile(r"([^\t]+)\t([0-9]+)\t([0-9]+)\t([0-9]+)\t([0-9]+)")


class Parsed(NamedTuple):
    """A box file read: file name -> its boxes (pixels, as written), and file name -> how many of
    its boxes were dropped for naming a class id that is not a class of the dataset."""

    boxes: dict[str, tuple[Box, ...]]
    unknown: dict[str, int]


class _Table:
    """Boxes per file as lines add them: distinct boxes in line order, unknown classes counted."""

    def __init__(self, labels: dict[str, int]):
        self.labels = labels
        self.boxes: dict[str, dict[Box, None]] = {}
        self.unknown: dict[str, set[tuple]] = {}

    def add(self, file: str, wnid: str, coords: tuple[float, float, float, float]) -> None:
        known = self.boxes.setdefault(file, {})
        if wnid in self.labels:
            known[(*coords, self.labels[wnid])] = None
        else:
            self.unknown.setdefault(file, set()).add((*coords, wnid))

    def parsed(self) -> Parsed:
        boxes = {f: tuple(b) for f, b in self.boxes.items()}
        return Parsed(boxes, {f: len(u) for f, u in self.unknown.items()})


def _coords(fields: Sequence[str], loc: Location, n: int) -> tuple[float, float, float, float]:
    if all(map(_PLAIN.fullmatch, fields)):  # (quicker than _NUMBER on each field)
        x0, y0, x1, y1 = map(float, fields)
        return x0, y0, x1, y1
    for f in fields:
        if not _NUMBER.fullmatch(f.strip()):
            raise MetadataError(f"{loc.url}:{n}: box coordinate {f[:40]!r} is not a number")
    x0, y0, x1, y1 = (float(f) for f in fields)
    return x0, y0, x1, y1


def parse_tinyimagenet_train(loc: Location, wnid: str, labels: dict[str, int]) -> Parsed:
    """``train/<wnid>/<wnid>_boxes.txt``: 'file<TAB>x0<TAB>y0<TAB>x1<TAB>y1' per line, every box
    of class ``wnid``."""
    table = _Table(labels)
    for n, line in read_lines(loc):
        plain = _PLAIN_TRAIN_LINE.fullmatch(line)  # the common case, in one match
        if plain:
            file, x0, y0, x1, y1 = plain.groups()
            table.add(file, wnid, (float(x0), float(y0), float(x1), float(y1)))
            continue
        fields = line.split("\t")
        if len(fields) != 5 or not fields[0]:
            raise MetadataError(f"{loc.url}:{n}: expected 'file<TAB>x0<TAB>y0<TAB>x1<TAB>y1', got {line[:80]!r}")
        table.add(fields[0], wnid, _coords(fields[1:], loc, n))
    return table.parsed()


def tinyimagenet_val_lines(loc: Location) -> Iterator[tuple[int, str, str, tuple[float, ...] | None]]:
    """(line number, file, wnid, box coordinates or None) of each line of ``val/val_annotations.txt``:
    'file<TAB>wnid[<TAB>x0<TAB>y0<TAB>x1<TAB>y1]' (the grammar the layout's labels and the boxes share)."""
    for n, line in read_lines(loc):
        fields = line.split("\t")
        if len(fields) not in (2, 6) or not fields[0] or not fields[1]:
            raise MetadataError(
                f"{loc.url}:{n}: expected 'file<TAB>wnid[<TAB>x0<TAB>y0<TAB>x1<TAB>y1]', got {line[:80]!r}"
            )
        yield n, fields[0], fields[1], _coords(fields[2:], loc, n) if len(fields) == 6 else None


def parse_tinyimagenet_val(loc: Location, labels: dict[str, int]) -> Parsed:
    """``val/val_annotations.txt`` (tinyimagenet_val_lines): a line without coordinates gives its
    file no box."""
    table = _Table(labels)
    for _, file, wnid, coords in tinyimagenet_val_lines(loc):
        if coords is None:
            table.boxes.setdefault(file, {})
        else:
            table.add(file, wnid, coords)
    return table.parsed()


def parse_imagenet_train(loc: Location, labels: dict[str, int]) -> Parsed:
    """``LOC_train_solution.csv``: ImageId '<wnid>_<number>', file '<ImageId>.JPEG' in the class
    folder '<wnid>'. Lines of images whose class folder is not in ``labels`` are skipped."""
    return _parse_solution(loc, labels, train=True)


def parse_imagenet_val(loc: Location, labels: dict[str, int]) -> Parsed:
    """``LOC_val_solution.csv``: file '<ImageId>.JPEG' in the val folder."""
    return _parse_solution(loc, labels, train=False)


def _parse_solution(loc: Location, labels: dict[str, int], *, train: bool) -> Parsed:
    """'ImageId,PredictionString' lines, the string repeating 'wnid x0 y0 x1 y1', after the header."""
    table = _Table(labels)
    for _, folder, file, boxes in solution_rows(loc, iter(read_lines(loc)), train=train):
        if not train or folder in labels:
            for wnid, coords in boxes:
                table.add(file, wnid, coords)
    return table.parsed()


class TrainSolution:
    """``LOC_train_solution.csv`` read once, line by line, and spilled to local files by class
    folder, so that planning holds one class's boxes at a time rather than the whole file's
    (560 MiB for Kaggle's 544,546 lines): ``of(folder)`` parses that class's (it may be called in
    another process forked after this object was made). Every line is checked on the way
    (errors name file and line); lines of folders that are not classes are left out."""

    BATCH = 50_000  # rows held before they are appended to their classes' files

    def __init__(self, loc: Location, labels: dict[str, int]):
        self.loc, self.labels = loc, labels
        self.spill = tempfile.mkdtemp(prefix="imagenet-tfrecords-boxes-")
        self.close = weakref.finalize(self, shutil.rmtree, self.spill, ignore_errors=True)
        held: dict[str, list] = {}
        for n, (_, folder, file, boxes) in enumerate(solution_rows(loc, stream_lines(loc), train=True)):
            if folder in labels:
                held.setdefault(folder, []).append((file, boxes))
            if n % self.BATCH == self.BATCH - 1:
                self._flush(held)
        self._flush(held)

    def _flush(self, held: dict[str, list]) -> None:
        for folder, rows in held.items():
            with open(os.path.join(self.spill, folder), "ab") as f:
                pickle.dump(rows, f, pickle.HIGHEST_PROTOCOL)
        held.clear()

    def of(self, folder: str) -> Parsed:
        """The boxes of the images of class folder ``folder`` by file name, and those dropped for
        naming a class id that is not a class."""
        table = _Table(self.labels)
        path = os.path.join(self.spill, folder)
        for rows in pickled_batches(path):
            for file, boxes in rows:
                for wnid, coords in boxes:
                    table.add(file, wnid, coords)
        return table.parsed()


def solution_rows(loc: Location, lines: Iterator[tuple[int, str]], *, train: bool) -> Iterator[tuple]:
    """(line number, class folder, file name, [(wnid, coords)...]) of each line after the header
    (the folder: a train ImageId's '<wnid>' prefix, else ""): the grammar of ``LOC_*_solution.csv``,
    which the layout's val labels and the boxes share."""
    n, got = next(lines, (1, ""))
    if got.replace(" ", "") != CSV_HEADER:
        raise MetadataError(f"{loc.url}:{n}: expected the header {CSV_HEADER!r}, got {got[:80]!r}")
    for n, line in lines:
        image_id, comma, prediction = line.partition(",")
        image_id, tokens = image_id.strip(), prediction.split()
        if not comma or not _ID.fullmatch(image_id) or not tokens or len(tokens) % 5:
            raise MetadataError(
                f"{loc.url}:{n}: expected 'ImageId,wnid x0 y0 x1 y1[ wnid x0 y0 x1 y1...]', got {line[:80]!r}"
            )
        folder, underscore, _ = image_id.partition("_")
        if train and not (folder and underscore):
            raise MetadataError(f"{loc.url}:{n}: expected a train ImageId '<wnid>_<number>', got {excerpt(image_id)}")
        boxes = [(tokens[i], _coords(tokens[i + 1 : i + 5], loc, n)) for i in range(0, len(tokens), 5)]
        yield n, folder if train else "", image_id + EXTENSION, boxes


def unknown_warnings(loc: Location, parsed: Parsed) -> list[str]:
    """A warning for the boxes of ``loc`` dropped for naming a class id the dataset does not have."""
    dropped = sum(parsed.unknown.values())
    if not dropped:
        return []
    return [f"{loc.url}: {dropped} boxes of {len(parsed.unknown)} images name a class id that is not a class (dropped)"]
