"""Which outputs are ours, and whether one is complete: the marker file ``imagenet-tfrecords.json``.

Every output this project writes holds, in its root (every format, every store), a small JSON
marker written before anything else::

    {"project": "imagenet-tfrecords", "state": "writing" | "complete", "format": "seed",
     "files": ["labels.txt", "train/train-00000-of-00100.tfrecord", ...]}

``files`` are the files (relative to the root) that runs of this project wrote or were about to
write there: the only files a later run removes. ``_work/`` (statistics, plan slices, logs) is ours too.

A run goes through four calls, each a single atomic write of the marker:

- ``claim(out)`` before any work: an output that is missing, empty (names starting with "." aside,
  as inputs ignore them), or ours is accepted; anything else is refused with ForeignOutput, naming
  one of its files, and nothing in it changes. Ours means: the marker; or, for an output made before
  markers existed, nothing in it but what this project writes (the shards its ``dataset_info.json``
  lists, all present, their indexes, its metadata files, ``_work/``). A marker that cannot be read
  (torn, empty) is ours in a folder that holds nothing else. A new output gets its marker
  ("writing") at once, created only if none is there (on local disks: a complete file linked into
  place, so two commands starting at once never both take a new folder), before anything else (a run
  lock, the plan's slices) is written there.
- ``mark_writing(out, files, fmt)`` before the first change: the state becomes "writing" and the files of
  earlier runs that this run does not write (another plan's shards, another format's shards and
  metadata) are removed, with the folders they leave empty; the marker then lists this run's files.
  Removal never follows a symbolic link: a recorded file is removed only when its folder really
  lies inside the output, and only when it is a regular file (a link is removed as a link).
- ``mark_complete(out)`` last, after sizes.txt, dataset_info.json and report.html: state "complete",
  or "rejected" when the run ended over its --max-reject-fraction (the marker says why).
- ``check_complete(out)``: what readers call; IncompleteOutput while the state is not "complete"
  (RejectedOutput for "rejected", unless the reader allows it).

``imagenet-tfrecords sample`` takes a new folder the same way, with a marker in state "sample" that
it removes once the dataset is written: a conversion never writes into a folder being sampled, nor a
sample into an output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat

from . import formats, stats
from .fs import BadOutput, Location, _remove_stale_temporaries, create_new, excerpt, is_ignored, outside_root, remove

MARKER = "imagenet-tfrecords.json"
PROJECT = "imagenet-tfrecords"
WRITING, COMPLETE = "writing", "complete"
# A run that ended over its --max-reject-fraction: the files are all there, but readers refuse them
# unless told otherwise (reader.load(allow_rejected=True)).
REJECTED = "rejected"
SAMPLE = "sample"  # a folder that ``imagenet-tfrecords sample`` is writing a dataset into
WORK_DIR = "_work"  # the run's own files: shard statistics, plan slices, logs
# What operating systems leave in a folder a user just made: such a folder is still empty.
SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class ForeignOutput(BadOutput):
    """The output folder holds files that this project did not write; nothing was changed."""


class DamagedMarker(BadOutput):
    """The marker's list of files holds something that is not the name of a file inside the output."""


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


def _marker_data(state: str, fmt: str, files, **extra) -> bytes:
    marker = {"project": PROJECT, "state": state, "format": fmt, "files": sorted(set(files)), **extra}
    return (json.dumps(marker, indent=1) + "\n").encode()


def _write_marker(out: Location, state: str, fmt: str, files, **extra) -> None:
    out.child(MARKER).write_bytes(_marker_data(state, fmt, files, **extra))  # (atomic: fs.publish)


def _first_file(loc: Location, skip: frozenset = frozenset()) -> str | None:
    """A file under ``loc`` (relative to it), looking down the first folders only; None if there is none.
    Names every layout ignores (a leading ".", Thumbs.db...) and the names in ``skip`` are not looked at."""
    entries = [e for e in loc.list_dir() if e.kind != "ignored" and e.name not in skip]
    for e in entries:
        if e.kind != "dir":
            return e.name
    for e in entries:
        below = _first_file(loc.child(e.name))
        if below is not None:
            return f"{e.name}/{below}"
    return None


# The shard file names this project writes, by format (formats.shard_path).
_SPLIT = "(train|val|test)"
_SHARD_NAMES = {
    formats.TFDS: re.compile(rf"[a-z][a-z0-9_]*-{_SPLIT}\.tfrecord-[0-9]{{5}}-of-[0-9]{{5}}"),
    formats.SEED: re.compile(rf"{_SPLIT}/\1-[0-9]{{5}}-of-[0-9]{{5}}\.tfrecord"),
}


def _is_shard_name(fmt: str, name) -> bool:
    pattern = _SHARD_NAMES[formats.TFDS if fmt == formats.TFDS else formats.SEED]
    return isinstance(name, str) and pattern.fullmatch(name) is not None


def _walk(out: Location) -> list[tuple[str, str]]:
    """(path relative to ``out``, "file" or "other") of everything below ``out`` but ``_work/``, the
    marker and ignored names; links and special files are "other" (never followed)."""
    found: list[tuple[str, str]] = []
    if out.is_local:

        def scan(path: str, rel: str) -> None:
            with os.scandir(path) as it:
                for e in it:
                    name = f"{rel}{e.name}"
                    if is_ignored(e.name) or name in (WORK_DIR, MARKER):
                        continue
                    if e.is_symlink():
                        found.append((name, "other"))
                    elif e.is_dir(follow_symlinks=False):
                        scan(e.path, name + "/")
                    else:
                        found.append((name, "file" if e.is_file(follow_symlinks=False) else "other"))

        scan(out.path, "")
        return found
    for path in out.fs.find(out.path):
        rel = path[len(out.path) + 1 :]
        parts = rel.split("/")
        if rel and parts[0] != WORK_DIR and rel != MARKER and not any(is_ignored(p) for p in parts):
            found.append((rel, "file"))
    return found


def _legacy_files(out: Location) -> tuple[list[str] | None, str]:
    """(the files an output made before markers existed records as its own: its accounting file's
    shards, their indexes and the reports of its format; "") when ``out`` is such an output, else
    (None, what in it this project did not write).

    Such an output is adopted only when everything in it is what this project writes and every
    shard its accounting file lists is there."""
    info = stats.read_info(out)
    if info is None:
        return None, f"it holds {_first_file(out, frozenset({MARKER}))}, and no {MARKER}"
    fmt = info.get("format", formats.SEED)
    name = stats.info_file(fmt) if fmt in formats.FORMATS else stats.INFO_FILE
    if fmt not in formats.FORMATS:
        return None, f"its {name} names a format {excerpt(str(fmt))} this project does not write"
    shards = [shard for s in info["splits"].values() if isinstance(s, dict) for shard in s.get("shards", [])]
    listed = []
    for shard in shards:
        file = shard.get("file") if isinstance(shard, dict) else None
        index = shard.get("index", f"{file}.idx") if isinstance(shard, dict) else None
        if not _is_shard_name(fmt, file):
            what = excerpt(file if isinstance(file, str) else json.dumps(shard))
            return None, f"its {name} lists {what}, not a shard name this project writes"
        if index != f"{file}.idx":
            what = excerpt(index if isinstance(index, str) else json.dumps(index))
            return None, f"its {name} lists {what} as the index of {file}, not the name this project gives it"
        listed += [file, index]
    reports = stats.report_files(fmt)
    present = _walk(out)
    for rel, kind in present:
        if kind != "file" or (rel not in listed and rel not in reports):
            return None, f"it holds {rel}, which imagenet-tfrecords does not write, and no {MARKER}"
    files = {rel for rel, _ in present}
    missing = [f for f in listed[::2] if f not in files]
    if missing:
        return None, f"its {name} lists {missing[0]}, which is missing, and there is no {MARKER}"
    return listed + reports, ""


def _is_empty(out: Location) -> bool:
    if not out.exists():
        return True
    if not out.isdir():
        raise BadOutput(f"{out.url}: the output is a file, not a folder")
    return _first_file(out) is None


def _foreign(out: Location, why: str) -> ForeignOutput:
    return ForeignOutput(
        f"{out.url}: not empty and not an output of imagenet-tfrecords ({why}); nothing was changed: choose a "
        "new or empty folder"
    )


def _recorded(out: Location, marker: dict) -> list[str]:
    """The files a marker records, each checked to be the name of a file inside the output
    (DamagedMarker, one line naming the marker, otherwise)."""
    files = marker.get("files")
    if not isinstance(files, list):
        files = [files]
    for f in files:
        parts = f.split("/") if isinstance(f, str) else []
        if not parts or "\x00" in f or "" in parts or ".." in parts or "." in parts:
            raise DamagedMarker(
                f'{out.child(MARKER).url}: damaged: its "files" hold {excerpt(json.dumps(f))}, not the name of a '
                f"file inside the output; nothing was changed: remove {MARKER} (an output is then recognised "
                "by its dataset_info.json) or choose another folder"
            )
    return files


def claim(out_url: str, *, write: bool = True) -> list[str]:
    """Accept ``out_url`` as this run's output, before any work; return the files earlier runs recorded there.

    A missing or empty folder gets a marker at once (unless ``write`` is false: a check only);
    a folder that is not ours raises ForeignOutput naming one of its files, and is left as it is.
    """
    out = Location.of(out_url)
    out.fs.invalidate_cache(out.path)  # (object stores: the listing as it is now)
    marker = read_marker(out)
    if marker is not None and marker.get("state") == SAMPLE:
        raise ForeignOutput(
            f"{out.url}: imagenet-tfrecords sample is writing a dataset there (or was stopped while it did: "
            f"{MARKER} says so); nothing was changed: choose another folder"
        )
    if marker is not None and marker.get("state") != "damaged":
        if "files" in marker:
            return _recorded(out, marker)
        legacy, _ = _legacy_files(out)
        return legacy or []
    if marker is not None:  # torn or empty: ours when it is all the folder holds, or an old output's
        legacy, why = _legacy_files(out)
        if legacy is not None:
            return legacy
        if _first_file(out, frozenset({MARKER, WORK_DIR})) is None:
            return []
        raise _foreign(out, why)
    if not _is_empty(out):
        legacy, why = _legacy_files(out)
        if legacy is None:
            raise _foreign(out, why)
        return legacy
    if write and not _create_marker(out, WRITING):
        return claim(out_url, write=write)  # another command created it meanwhile: look again
    return []


def _create_marker(out: Location, state: str) -> bool:
    """Write a new output's first marker, only if there is none yet (local disks: fs.create_new; object
    stores: an upload in one request); False when another command made one meanwhile."""
    if out.is_local:
        return create_new(out.child(MARKER), _marker_data(state, "", []))
    _write_marker(out, state, "", [])
    return True


def claim_new(out_url: str) -> None:
    """Take a new or empty local folder for ``imagenet-tfrecords sample``: its marker (state "sample")
    is created there, or BadOutput naming what the folder holds; release_new removes it."""
    out = Location.of(out_url)
    if os.path.lexists(out.path) and not os.path.isdir(out.path):
        raise BadOutput(f"{out.url}: the output is a file, not a folder")
    if os.path.isdir(out.path) and (names := sorted(n for n in os.listdir(out.path) if not is_ignored(n))):
        files = [n for n in names if not os.path.isdir(os.path.join(out.path, n))]
        raise BadOutput(
            f"{out.url}: not empty (it holds {(files or names)[0]}); nothing was changed: sample writes only "
            "into a new or empty folder"
        )
    if not _create_marker(out, SAMPLE):
        raise BadOutput(
            f"{out.url}: another command took this folder at the same moment (it holds {MARKER}); nothing was "
            "changed: sample writes only into a new or empty folder"
        )


def release_new(out_url: str) -> None:
    """Remove what claim_new and the lock left in a folder sample has written: the marker, then ``_work/``."""
    out = Location.of(out_url)
    os.remove(out.child(MARKER).path)
    for folder in (os.path.join(out.path, WORK_DIR, "writers"), os.path.join(out.path, WORK_DIR)):
        with contextlib.suppress(OSError):  # (not empty: another process of a run is there)
            os.rmdir(folder)


def mark_writing(out_url: str, files: list[str], fmt: str, replace=(), **made) -> list[str]:
    """Say the output is being written, then remove what earlier runs recorded and this run does not
    write (``files``: every file this run writes, relative to the root); return the files removed.

    ``replace``: files of earlier runs that this run writes anew and that go first (the same names,
    another format or size). ``made``: what else the marker records of this run (its resize). The
    marker lists both runs' files while they are removed, so an interrupted removal is finished by
    the next run.
    """
    out = Location.of(out_url)
    earlier = set(claim(out_url))
    files = set(files)
    gone = (earlier - files) | (earlier & set(replace))
    stale = sorted(rel for rel in gone if rel != MARKER and rel.split("/", 1)[0] != WORK_DIR)
    for rel in stale:  # (before any change)
        if _is_folder(out, rel):
            raise DamagedMarker(
                f'{out.child(MARKER).url}: damaged: its "files" name {excerpt(rel)}, a folder, not a file; '
                f"remove {MARKER} (an output is then recognised by its dataset_info.json) or choose another folder"
            )
    _write_marker(out, WRITING, fmt, earlier | files, **made)
    removed = []
    for rel in stale:
        if _remove(out, rel):
            removed.append(rel)
    if out.is_local:  # folders the removed files leave empty (object stores have none)
        for folder in sorted({os.path.dirname(rel) for rel in stale} - {""}, key=len, reverse=True):
            path = os.path.join(out.path, folder)
            if outside_root(path, out.path) or os.path.islink(path):
                continue  # (never through a link)
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
    _write_marker(out, WRITING, fmt, files, **made)
    return removed


def _is_folder(out: Location, rel: str) -> bool:
    """Whether the recorded file ``rel`` is a folder (links not followed)."""
    loc = out.child(rel)
    if not out.is_local:
        return loc.fs.isdir(loc.path)
    try:
        return stat.S_ISDIR(os.lstat(loc.path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _remove(out: Location, rel: str) -> bool:
    """Remove the recorded file ``rel``; False when it is not there. Never through a link: a file whose
    folder really lies outside the output is left alone, a link is removed as a link, and only
    regular files and links are removed."""
    loc = out.child(rel)
    if not out.is_local:
        if not loc.exists():
            return False
        remove(loc)  # (once the fence of the output passed)
        return True
    if outside_root(os.path.dirname(loc.path), out.path):
        return False  # reached through a link leaving the output
    _remove_stale_temporaries(loc.path)  # of a writer killed while writing it
    try:
        mode = os.lstat(loc.path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        return False  # (a folder, a FIFO, a device: not ours whatever the marker says)
    os.remove(loc.path)  # (a link: the link itself)
    return True


def mark_complete(out_url: str, rejected: str = "") -> None:
    """Say the output is complete: the last write of a run. ``rejected`` (why: too many inputs were
    rejected) marks it "rejected" instead, with the reason."""
    out = Location.of(out_url)
    marker = read_marker(out) or {}
    extra = {k: v for k, v in marker.items() if k not in ("project", "state", "format", "files", "rejected")}
    if rejected:
        extra["rejected"] = rejected
    _write_marker(out, REJECTED if rejected else COMPLETE, marker.get("format", ""), marker.get("files", []), **extra)


class RejectedOutput(IncompleteOutput):
    """The run that wrote the output ended with more inputs rejected than it allowed."""


def check_complete(out_url: str, allow_rejected: bool = False) -> None:
    """Raise IncompleteOutput when a run started changing the output and did not finish it, and
    RejectedOutput when it finished over its --max-reject-fraction (unless ``allow_rejected``).

    An output without a marker (made before markers existed) is taken as complete.
    """
    out = Location.of(out_url)
    marker = read_marker(out)
    if marker is None or marker.get("state") == COMPLETE:
        return
    if marker.get("state") == REJECTED:
        if not allow_rejected:
            raise RejectedOutput(
                f"{out.url} is rejected: {marker.get('rejected') or 'too many inputs rejected'} ({MARKER}: state "
                "'rejected'); convert again with a higher --max-reject-fraction to accept it, or read it anyway "
                "with load(..., allow_rejected=True)"
            )
        return
    raise IncompleteOutput(
        f"{out.url} is incomplete: a conversion started changing it and did not finish "
        f"({MARKER}: state {marker.get('state')!r}); run the conversion again to complete it"
    )
