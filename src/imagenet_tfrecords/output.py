"""Which outputs are ours, and whether one is complete: the marker file ``imagenet-tfrecords.json``.

Every output this project writes holds, in its root (every format, every store), a small JSON
marker written before anything else::

    {"project": "imagenet-tfrecords", "state": "writing" | "complete", "format": "seed",
     "files": ["labels.txt", "train/train-00000-of-00100.tfrecord", ...]}

``files`` are the files (relative to the root) that runs of this project wrote or were about to
write there: the only files a later run removes. ``_work/`` (statistics, plan slices, logs) is ours too.

A run goes through four calls, each a single atomic write of the marker:

- ``claim(out)`` before any work: an output that is missing, empty, or ours (the marker, or an
  older output's own ``dataset_info.json``) is accepted; anything else is refused with ForeignOutput,
  naming one of its files, and nothing in it changes. A new output gets its marker ("writing") at
  once, before anything else (a run lock, the plan's slices) is written there.
- ``mark_writing(out, files, fmt)`` before the first change: the state becomes "writing" and the files of
  earlier runs that this run does not write (another plan's shards, another format's shards and
  metadata) are removed, with the folders they leave empty; the marker then lists this run's files.
- ``mark_complete(out)`` last, after sizes.txt, dataset_info.json and report.html.
- ``check_complete(out)``: what readers call; IncompleteOutput while the state is not "complete".
"""

from __future__ import annotations

import json
import os

from . import stats
from .fs import BadOutput, Location, _remove_stale_temporaries, remove

MARKER = "imagenet-tfrecords.json"
PROJECT = "imagenet-tfrecords"
WRITING, COMPLETE = "writing", "complete"
WORK_DIR = "_work"  # the run's own files: shard statistics, plan slices, logs
# What operating systems leave in a folder a user just made: such a folder is still empty.
SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class ForeignOutput(BadOutput):
    """The output folder holds files that this project did not write; nothing was changed."""


class IncompleteOutput(RuntimeError):
    """A conversion started changing the output and has not finished."""


def read_marker(out: Location) -> dict | None:
    """The marker of the output at ``out``, or None when there is none (or it is not ours)."""
    loc = out.child(MARKER)
    try:
        marker = json.loads(loc.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # a damaged marker: ours, state unknown, files unknown
        return {"project": PROJECT, "state": "damaged"}
    return marker if isinstance(marker, dict) and marker.get("project") == PROJECT else None


def _write_marker(out: Location, state: str, fmt: str, files) -> None:
    marker = {"project": PROJECT, "state": state, "format": fmt, "files": sorted(set(files))}
    out.child(MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def _first_file(loc: Location) -> str | None:
    """A file under ``loc`` (relative to it), looking down the first folders only; None if there is none."""
    entries = [e for e in loc.list_dir() if e.name not in SYSTEM_FILES]
    for e in entries:
        if e.kind != "dir":
            return e.name
    for e in entries:
        below = _first_file(loc.child(e.name))
        if below is not None:
            return f"{e.name}/{below}"
    return None


def _legacy_files(out: Location) -> list[str] | None:
    """The files an output made before markers existed records as its own (its accounting file's
    shard lists, their indexes and the reports of its format), or None when ``out`` is no such output."""
    info = stats.read_info(out)
    if info is None:
        return None
    listed = [
        f for s in info["splits"].values() for shard in s.get("shards", []) for f in (shard["file"], shard.get("index"))
    ]
    return [f for f in listed if f] + stats.report_files(info.get("format", "seed"))


def _is_empty(out: Location) -> bool:
    if not out.exists():
        return True
    if not out.isdir():
        raise BadOutput(f"{out.url}: the output is a file, not a folder")
    return _first_file(out) is None


def claim(out_url: str, *, write: bool = True) -> list[str]:
    """Accept ``out_url`` as this run's output, before any work; return the files earlier runs recorded there.

    A missing or empty folder gets a marker at once (unless ``write`` is false: a check only);
    a folder that is not ours raises ForeignOutput naming one of its files, and is left as it is.
    """
    out = Location.of(out_url)
    out.fs.invalidate_cache(out.path)  # (object stores: the listing as it is now)
    marker = read_marker(out)
    if marker is not None:
        files = marker.get("files")
        return list(files) if isinstance(files, list) else _legacy_files(out) or []
    if not _is_empty(out):
        legacy = _legacy_files(out)
        if legacy is None:
            raise ForeignOutput(
                f"{out.url}: not empty and not an output of imagenet-tfrecords (it holds {_first_file(out)}, and no "
                f"{MARKER}); nothing was changed: choose a new or empty folder"
            )
        return legacy
    if write:
        _write_marker(out, WRITING, "", [])
    return []


def mark_writing(out_url: str, files: list[str], fmt: str) -> list[str]:
    """Say the output is being written, then remove what earlier runs recorded and this run does not
    write (``files``: every file this run writes, relative to the root); return the files removed.

    The marker lists both runs' files while they are removed, so an interrupted removal is finished
    by the next run.
    """
    out = Location.of(out_url)
    earlier = set(claim(out_url))
    files = set(files)
    stale = sorted(earlier - files)
    _write_marker(out, WRITING, fmt, earlier | files)
    removed = []
    for rel in stale:
        if rel == MARKER or rel.split("/", 1)[0] == WORK_DIR or ".." in rel.split("/"):
            continue  # (a damaged record never reaches outside what is ours)
        loc = out.child(rel)
        if out.is_local:
            _remove_stale_temporaries(loc.path)  # of a writer killed while writing it
        if loc.exists():
            remove(loc)
            removed.append(rel)
    if out.is_local:  # folders the removed files leave empty (object stores have none)
        for folder in sorted({os.path.dirname(rel) for rel in stale} - {""}, key=len, reverse=True):
            path = os.path.join(out.path, folder)
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
    _write_marker(out, WRITING, fmt, files)
    return removed


def mark_complete(out_url: str) -> None:
    """Say the output is complete: the last write of a run."""
    out = Location.of(out_url)
    marker = read_marker(out) or {}
    _write_marker(out, COMPLETE, marker.get("format", ""), marker.get("files", []))


def check_complete(out_url: str) -> None:
    """Raise IncompleteOutput when a run started changing the output and did not finish it.

    An output without a marker (made before markers existed) is taken as complete.
    """
    out = Location.of(out_url)
    marker = read_marker(out)
    if marker is not None and marker.get("state") != COMPLETE:
        raise IncompleteOutput(
            f"{out.url} is incomplete: a conversion started changing it and did not finish "
            f"({MARKER}: state {marker.get('state')!r}); run the conversion again to complete it"
        )
