"""Read a TinyImageNet-layout dataset's metadata and plan the conversion.

Layout::

    wnids.txt                     class ids, one per line (not sorted)
    words.txt                     wnid<TAB>words for (at least) every class id
    train/<wnid>/images/*         training images of one class
    val/images/*                  validation images
    val/val_annotations.txt       file<TAB>wnid[<TAB>x0<TAB>y0<TAB>x1<TAB>y1]
    test/images/*                 unlabelled test images (optional)

The plan is a JSON-serialisable dict: the classes (label = index in the sorted class ids)
and one entry per output shard. Train shards hold one class each and list their directory
when converted; val and test shards hold fixed, sorted file lists. Shard names depend only on
the dataset, never on how shards are grouped into tasks, so output is the same however the
work is spread.

Bad metadata raises MetadataError naming the file and line. Problems with single images
(an annotation naming an unknown class, an image with no annotation, an annotated file that
is missing) do not stop the run: they become rejects with a reason.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re

from .fs import BadOutput, Entry, Location, check_output

SPLITS = ("train", "val", "test")
PLAN_VERSION = 2
# Conversion tasks of one run. Vertex AI collects at most 100 artifacts in one dsl.Collected
# input, and every collected artifact lengthens the fan-in step's executor input, which the
# Kubeflow backend passes as one command-line argument (Linux: under 128 KiB).
MAX_TASKS = 100
DEFAULT_MAX_TASKS = 64
DEFAULT_SHARD_SIZE = 500  # images per val/test shard


class MetadataError(ValueError):
    """The dataset's metadata is missing or malformed; the message names file and line."""


def natural_key(name: str) -> list:
    """Sort key that orders val_2 before val_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


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


def parse_wnids(loc: Location) -> list[tuple[str, int]]:
    """(wnid, line) in file order; duplicates and malformed ids are errors."""
    seen: dict[str, int] = {}
    for n, line in read_lines(loc):
        if not re.fullmatch(r"[^\s/\\]+", line):
            raise MetadataError(f"{loc.url}:{n}: not a class id: {line!r}")
        if line in seen:
            raise MetadataError(f"{loc.url}:{n}: class id {line} repeats line {seen[line]}")
        seen[line] = n
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
    for n, line in read_lines(loc):
        fields = line.split("\t")
        if len(fields) not in (2, 6) or not fields[0] or not fields[1]:
            raise MetadataError(
                f"{loc.url}:{n}: expected 'file<TAB>wnid[<TAB>x0<TAB>y0<TAB>x1<TAB>y1]', got {line[:80]!r}"
            )
        file, wnid = fields[0], fields[1]
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


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


def inputs_digest(entries: list[Entry]) -> str:
    """A digest of the names, sizes and change stamps of a shard's input files."""
    return hashlib.sha256(json.dumps([e.identity for e in entries]).encode()).hexdigest()[:32]


def _image_files(loc: Location, root: Location, rejects: list[dict]) -> dict[str, Entry]:
    """The files of an images directory by name, in natural order; links leaving the dataset become rejects."""
    files = {}
    rel = loc.url[len(root.url) + 1 :]
    for e in loc.list_dir(root):
        if e.kind == "file":
            files[e.name] = e
        else:
            rejects.append({"path": f"{rel}/{e.name}", "reason": e.reason})
    return {name: files[name] for name in sorted(files, key=natural_key)}


def check_dataset(data_url: str) -> None:
    """Fail fast, naming the path, when the dataset folder or one of its metadata files is missing."""
    root = Location.of(data_url)
    if not root.isdir():
        raise MetadataError(f"{root.url}: dataset directory not found")
    for loc in (root.child("wnids.txt"), root.child("words.txt"), root.child("val", "val_annotations.txt")):
        if not loc.exists():
            raise MetadataError(f"{loc.url}: file not found")


def check_locations(data_url: str, output_url: str) -> None:
    """Everything about the two URLs that can be checked before any work (MetadataError, BadOutput).

    The output must not be the dataset folder nor lie inside one of its split folders: shards
    written there would be read as images by the next run.
    """
    check_dataset(data_url)
    root = Location.of(data_url)
    out = Location.of(output_url)
    if out.url == root.url or (
        out.is_local and root.is_local and os.path.realpath(out.path) == os.path.realpath(root.path)
    ):
        raise BadOutput(f"{out.url}: the output must not be the dataset folder itself")
    check_output(out, [root.child(split) for split in SPLITS])


def build_plan(data_url: str, *, shard_size: int = DEFAULT_SHARD_SIZE) -> dict:
    """Read the metadata under ``data_url`` and plan every output shard."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    check_dataset(data_url)
    root = Location.of(data_url)
    wnids_loc, words_loc = root.child("wnids.txt"), root.child("words.txt")
    annotations_loc = root.child("val", "val_annotations.txt")

    wnid_lines = parse_wnids(wnids_loc)
    wnids = sorted(w for w, _ in wnid_lines)
    labels = {w: i for i, w in enumerate(wnids)}
    words = parse_words(words_loc, set(wnids))
    missing = [(w, n) for w, n in wnid_lines if w not in words]
    if missing:
        w, n = missing[0]
        raise MetadataError(
            f"{words_loc.url}: no entry for class {w} ({wnids_loc.url}:{n})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )

    rejects: list[dict] = []
    warnings: list[str] = []
    train = root.child("train")
    if not train.isdir():
        raise MetadataError(f"{train.url}: directory not found")
    class_dirs = {e.name: e.kind for e in train.list_dir(root)}
    for w, n in wnid_lines:
        if class_dirs.get(w) != "dir":
            raise MetadataError(f"{train.url}/{w}: class directory not found (class id from {wnids_loc.url}:{n})")
    for name, kind in sorted(class_dirs.items()):
        if name not in labels:
            rejects.append(
                {"path": f"train/{name}", "reason": f"not a class listed in wnids.txt ({kind} not converted)"}
            )

    shards: list[dict] = [
        {"split": "train", "index": i, "count": len(wnids), "dir": f"train/{w}/images", "label": i, "wnid": w}
        for i, w in enumerate(wnids)
    ]

    annotations, more_warnings = parse_val_annotations(annotations_loc, labels)
    warnings += more_warnings
    val_dir = root.child("val", "images")
    if not val_dir.isdir():
        raise MetadataError(f"{val_dir.url}: directory not found")
    val_files = _image_files(val_dir, root, rejects)
    # an entry rejected while listing (a link leaving the dataset, a directory) is not also "missing"
    present = set(val_files) | {r["path"][len("val/images/") :] for r in rejects if r["path"].startswith("val/images/")}
    for name in sorted(set(annotations) - present, key=natural_key):
        rejects.append({"path": f"val/images/{name}", "reason": "listed in val_annotations.txt but missing"})
    entries = []
    for name in val_files:
        label, reason = annotations.get(name, (None, "no line in val_annotations.txt"))
        entries.append([name, label, reason])
    _add_file_shards(shards, "val", "val/images", entries, val_files, shard_size)

    test_dir = root.child("test", "images")
    if test_dir.isdir():
        test_files = _image_files(test_dir, root, rejects)
    else:
        warnings.append(f"{test_dir.url}: no test split (directory not found)")
        test_files = {}
    _add_file_shards(shards, "test", "test/images", [[name, -1, None] for name in test_files], test_files, shard_size)

    return {
        "version": PLAN_VERSION,
        "data": root.url,
        "classes": [{"wnid": w, "words": words[w]} for w in wnids],
        "shards": shards,
        "rejects": rejects,
        "warnings": warnings,
    }


def _add_file_shards(
    shards: list[dict], split: str, directory: str, entries: list, files: dict[str, Entry], size: int
) -> None:
    if not entries:
        return
    chunks = _chunks(entries, size)
    for i, chunk in enumerate(chunks):
        inputs = inputs_digest([files[name] for name, _, _ in chunk])
        shards.append(
            {"split": split, "index": i, "count": len(chunks), "dir": directory, "files": chunk, "inputs": inputs}
        )


def shard_file(shard: dict) -> str:
    """Output path of a shard relative to the output root."""
    s = shard["split"]
    return f"{s}/{s}-{shard['index']:05d}-of-{shard['count']:05d}.tfrecord"


def plan_tasks(num_shards: int, max_tasks: int = DEFAULT_MAX_TASKS) -> list[list[int]]:
    """Group shard ids into ``min(max_tasks, num_shards)`` tasks: contiguous runs whose lengths differ by one at most.

    Train shards come first in the plan (one class each), then val and test; a task may hold
    shards of two splits. The grouping never changes what is written, only who writes it.
    """
    check_max_tasks(max_tasks)
    if num_shards == 0:
        return []
    per_task, longer = divmod(num_shards, min(max_tasks, num_shards))
    bounds = [0]
    for t in range(min(max_tasks, num_shards)):
        bounds.append(bounds[-1] + per_task + (t < longer))
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds)]


def check_max_tasks(max_tasks: int) -> None:
    if not 1 <= max_tasks <= MAX_TASKS:
        raise ValueError(f"max_tasks must be between 1 and {MAX_TASKS}, got {max_tasks}")


def labels_text(plan: dict) -> str:
    """labels.txt: one 'wnid<TAB>words' line per class; the line index is the label."""
    return "".join(f"{c['wnid']}\t{c['words']}\n" for c in plan["classes"])
