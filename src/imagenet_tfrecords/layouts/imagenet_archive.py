"""The imagenet layout's archive form: ILSVRC2012's original archives, read in place::

    ILSVRC2012_devkit_t12.tar.gz          data/meta.mat (the synsets: ILSVRC2012_ID, WNID, words,
                                          num_children) and data/ILSVRC2012_validation_ground_truth.txt
                                          (line i: the ILSVRC2012_ID of ILSVRC2012_val_<i:08d>.JPEG)
    ILSVRC2012_img_train.tar              a tar of <wnid>.tar, one tar of JPEGs per class
    ILSVRC2012_img_val.tar                ILSVRC2012_val_<i:08d>.JPEG
    ILSVRC2012_img_test_v10102019.tar     unlabelled test images (optional)

The classes are the 1,000 leaf synsets of meta.mat (num_children 0); labels index their sorted
wnids, as in the extracted form (the ILSVRC2012_ID order of the ground truth is another order).
Planning reads the devkit whole and only the tar headers of the image archives (archive.py); every
source is an archive member with its byte span, read as a range when converted. The class tars are
listed ``group()`` at a time (a sliding window on object stores, every walk with a range read in
flight) and each class goes on to listing.train_shards (which spills it) as soon as
its group is listed, so planning holds one group's sources, not the whole train set. Train shards
mix the classes or hold one class each (listing.train_shards), val and test shards ``shard_size``
members each, in natural name order. Bad metadata raises MetadataError naming the file and line
(meta.mat: the synsets entry); problems with single members become rejects.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import re
import tarfile
from collections.abc import Iterable, Iterator

from .. import boxes
from ..archive import Member, in_flight_reads, iter_inner, list_tar
from ..fs import Entry, Location, check_inside, file_entry, is_ignored
from ..listing import TrainShards, fixed_shards, listed_rows, natural_key, packed_classes
from ..listing import train_shards as plan_train_shards
from ..plan import MIXED, PER_CLASS, ClassInfo, Found, MetadataError, Plan, Shard, Source

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
TEST_TAR = "ILSVRC2012_img_test_v10102019.tar"
REQUIRED = (DEVKIT, TRAIN_TAR, VAL_TAR)
META = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
_WNID = re.compile(r"[^\s/\\,]+")
# class tars listed at a time (local files: one group after another; object stores: a sliding window
# of at least as many as the range reads in flight, archive.in_flight_reads, since each walk has one
# read in flight): memory holds that many classes' sources (~35 MiB a hundred for ImageNet's)
GROUP = 100


def group(root: Location) -> int:
    """How many class tars are listed at a time: GROUP, or on object stores the range reads in
    flight when more."""
    return GROUP if root.is_local else max(GROUP, in_flight_reads())


@dataclasses.dataclass(frozen=True)
class Synset:
    wnid: str
    words: str
    entry: int  # its 1-based index in meta.mat's synsets, named in errors


def plan(root: Location, shard_size: int, layout: str, train_order: str = MIXED, train_count: int = 0) -> Plan:
    """Read the devkit and the archives' headers under ``root`` and plan every output shard (train
    through listing.train_shards: ``train_order``, ``train_count`` mixed shards or 0 for the default)."""
    synsets, truth, truth_url = read_devkit(root.child(DEVKIT))
    by_wnid = {s.wnid: s for s in synsets.values()}
    labels = {w: i for i, w in enumerate(sorted(by_wnid))}
    found = Found()
    rejects, warnings, problems, ignored = found.rejects, found.warnings, found.problems, found.ignored
    per_class = train_sources(root, by_wnid, labels, rejects, group(root), ignored)
    train = train_shards(root, per_class, train_order, train_count, problems)
    shards = train.light()
    val_labels = {i: labels[synsets[sid].wnid] for i, sid in truth.items()}
    shards += _val_shards(root, val_labels, truth_url, shard_size, rejects, ignored)
    if root.child(TEST_TAR).exists():
        check_inside(root.child(TEST_TAR), root)
        members = _members(list_tar(root.child(TEST_TAR)), ignored, "test")
        shards += _fixed(root, "test", TEST_TAR, _sources(members, -1), shard_size)
    else:
        warnings.append(f"{root.child(TEST_TAR).url}: no test split (file not found)")
    classes = [ClassInfo(w, by_wnid[w].words) for w in labels]
    # The archives hold no boxes; the records still carry the box keys, empty, as the extracted
    # form's do for an image without boxes: both forms' records have the same keys.
    warnings.append(f"{root.url}: the archive form holds no bounding boxes (the records' box lists are empty)")
    return found.plan(root, layout, classes, shards, train_order, train, boxes.CONVENTIONS[layout])


def read_devkit(loc: Location) -> tuple[dict[int, Synset], dict[int, int], str]:
    """The leaf synsets by ILSVRC2012_ID, the val ground truth (image number -> ID) and its URL."""
    try:
        with tarfile.open(fileobj=io.BytesIO(loc.read_bytes()), mode="r:*") as tar:
            found = {_suffix(m.name): m for m in tar.getmembers() if m.isfile() and _suffix(m.name)}
            files = {key: (m.name, tar.extractfile(m).read()) for key, m in found.items()}
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MetadataError(f"{loc.url}: not a readable .tar.gz ({e})") from None
    for key in (META, GROUND_TRUTH):
        if key not in files:
            raise MetadataError(f"{loc.url}: no {key} in the devkit")
    meta_url, truth_url = (f"{loc.url}/{files[k][0]}" for k in (META, GROUND_TRUTH))
    synsets = parse_meta(meta_url, files[META][1])
    return synsets, parse_ground_truth(truth_url, files[GROUND_TRUTH][1], synsets), truth_url


def _suffix(name: str) -> str | None:
    return next((key for key in (META, GROUND_TRUTH) if name == key or name.endswith("/" + key)), None)


def parse_meta(url: str, data: bytes) -> dict[int, Synset]:
    """ILSVRC2012_ID -> Synset of the leaf synsets (num_children 0) of a devkit meta.mat."""
    import numpy as np
    import scipy.io  # only the archive form's plan step needs it

    try:
        synsets = np.atleast_1d(scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"])
    except Exception as e:  # scipy raises ValueError, TypeError, KeyError... on files it cannot read
        raise MetadataError(
            f"{url}: not a MATLAB file with a 'synsets' struct array ({type(e).__name__}: {e})"
        ) from None
    out: dict[int, Synset] = {}
    seen: dict[str, int] = {}
    for n, s in enumerate(synsets, 1):
        try:
            sid, wnid, words, children = (
                int(s["ILSVRC2012_ID"]),
                str(s["WNID"]),
                str(s["words"]),
                int(s["num_children"]),
            )
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise MetadataError(
                f"{url}: synsets({n}): expected ILSVRC2012_ID, WNID, words, num_children ({e})"
            ) from None
        if children:
            continue
        if not _WNID.fullmatch(wnid) or not words.strip():
            raise MetadataError(f"{url}: synsets({n}): expected a wnid and words, got {wnid!r}, {words[:80]!r}")
        if sid in out or wnid in seen:
            raise MetadataError(
                f"{url}: synsets({n}): {sid} {wnid} repeats synsets({seen.get(wnid) or out[sid].entry})"
            )
        out[sid], seen[wnid] = Synset(wnid, words.strip(), n), n
    if not out:
        raise MetadataError(f"{url}: no leaf synsets (num_children 0)")
    return out


def parse_ground_truth(url: str, data: bytes, synsets: dict[int, Synset]) -> dict[int, int]:
    """Image number -> ILSVRC2012_ID: line i holds the ID of ILSVRC2012_val_<i:08d>.JPEG."""
    lines = re.split(r"\r\n|\r|\n", data.decode("utf-8", "replace"))
    while lines and not lines[-1].strip():
        lines.pop()
    out = {}
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text.isdigit() or int(text) not in synsets:
            raise MetadataError(f"{url}:{n}: expected the ILSVRC2012_ID of a leaf synset of {META}, got {line[:80]!r}")
        out[n] = int(text)
    return out


def train_shards(
    root: Location, per_class: Iterable[tuple[str, list[Source]]], order: str, count: int, problems: list[dict]
) -> TrainShards:
    """The train shards (listing.train_shards) of the members of each ``<wnid>.tar`` in the train
    archive (``per_class``: (wnid, sources), one class at a time); a class tar without images is a
    problem of the plan."""
    archive = file_entry(root.child(TRAIN_TAR))
    outcome = "class gets an empty shard" if order == PER_CLASS else "class has no train records"

    def listings():
        for n, (wnid, sources) in enumerate(per_class):
            if not any(s.reason is None for s in sources):
                problems.append({"path": f"{TRAIN_TAR}/{wnid}.tar", "reason": f"class tar has no images ({outcome})"})
            yield listed_rows(TRAIN_TAR, [(s, _member_entry(s, archive)) for s in sources], order, n)

    return plan_train_shards(TRAIN_TAR, packed_classes(listings(), order), order, count)


def train_sources(
    root: Location,
    by_wnid: dict[str, Synset],
    labels: dict[str, int],
    rejects: list[dict],
    group: int = GROUP,
    ignored: collections.Counter | None = None,
) -> Iterator[tuple[str, list[Source]]]:
    """(wnid, the sources of its class: ``<wnid>.tar/<member>``, spans in the train archive) of
    each class, in the natural order of the tars' names, listed ``group`` class tars at a time
    (archive.iter_inner), so memory holds one group's sources. The archive's own members are
    listed now: those that are no class's tar are rejects; a class without a tar is an error.
    Members ignored by name (fs.is_ignored) are counted in ``ignored["train"]``."""
    loc = root.child(TRAIN_TAR)
    tars: dict[str, Member] = {}
    ignored = collections.Counter() if ignored is None else ignored
    # its members are tars: a window would find their headers
    for m in _members(list_tar(loc, segment=0), ignored, "train"):
        wnid = m.name.removesuffix(".tar")
        if m.kind == "file" and m.name.endswith(".tar") and wnid in labels and wnid not in tars:
            tars[wnid] = m
            continue
        reason = f"repeats {m.name}" if wnid in tars else f"not the tar of a class of {DEVKIT} ({META})"
        rejects.append({"path": f"{TRAIN_TAR}/{m.name}", "reason": reason})
    for wnid in labels:
        if wnid not in tars:
            meta = f"{root.child(DEVKIT).url}/{META} synsets({by_wnid[wnid].entry})"
            raise MetadataError(f"{loc.url}: no member {wnid}.tar (the class {wnid} of {meta})")
    return _class_sources(loc, list(tars.values()), labels, group, ignored)


def _class_sources(
    loc: Location, tars: list[Member], labels: dict[str, int], group: int, ignored: collections.Counter
) -> Iterator[tuple[str, list[Source]]]:
    """(wnid, sources) of each class tar in ``tars``, listed ``group`` at a time."""
    for tar, members in iter_inner(loc, tars, group):
        wnid = tar.name.removesuffix(".tar")
        named = [dataclasses.replace(x, name=f"{tar.name}/{x.name}") for x in _members(members, ignored, "train")]
        yield wnid, _sources(named, labels[wnid])


def _val_shards(
    root: Location, val_labels: dict[int, int], truth_url: str, shard_size: int, rejects, ignored: collections.Counter
) -> list[Shard]:
    """Val members labelled by the ground truth's line of their number; lines without a member are rejects."""
    sources = []
    numbers = set()
    for s in _sources(_members(list_tar(root.child(VAL_TAR)), ignored, "val"), None):
        m = _VAL_NAME.fullmatch(s.name)
        number = int(m.group(1)) if m else None
        if s.reason is None and number in val_labels:
            s = s._replace(label=val_labels[number])
        elif s.reason is None:
            what = f"no line {number} in" if m else "not named ILSVRC2012_val_<8 digits>.JPEG, so no line of"
            s = s._replace(reason=f"{what} {GROUND_TRUTH}")
        numbers.add(number)
        sources.append(s)
    for n in sorted(set(val_labels) - numbers):
        rejects.append(
            {"path": f"{VAL_TAR}/ILSVRC2012_val_{n:08d}.JPEG", "reason": f"{truth_url}:{n}: listed but missing"}
        )
    return _fixed(root, "val", VAL_TAR, sources, shard_size)


def _members(members: list[Member], ignored: collections.Counter, split: str) -> list[Member]:
    """The members that are inputs (not folders), in natural name order; those with a path part
    ignored by name (fs.is_ignored: ._* AppleDouble files, .DS_Store...) are counted in ``ignored[split]``."""
    kept = []
    for m in members:
        if any(is_ignored(part) for part in m.name.split("/") if part):
            ignored[split] += m.kind != "dir"
        elif m.kind != "dir":
            kept.append(m)
    return sorted(kept, key=lambda m: natural_key(m.name))


def _sources(members: list[Member], label: int | None) -> list[Source]:
    """A source per member with its span; links and repeated names are rejects."""
    out, seen = [], set()
    for m in members:
        if m.kind != "file":
            reason = f"not a regular file in the archive ({m.kind})"
        elif m.name in seen:
            reason = "repeats the name of an earlier member of the archive (that one is converted)"
        else:
            reason = None
        seen.add(m.name)
        out.append(Source(m.name, label if reason is None else None, reason, m.span))
    return out


def _member_entry(source: Source, archive: Entry) -> Entry:
    """A member's identity: its name, size and offset and the archive's own size and change stamp,
    so a replaced archive re-converts its shards."""
    offset, size = source.span or (0, 0)
    return Entry(source.name, "member", size, f"{offset}@{archive.size}:{archive.stamp}")


def _fixed(root: Location, split: str, archive: str, sources: list[Source], size: int) -> list[Shard]:
    """listing.fixed_shards over archive members (identities: _member_entry)."""
    stamp = file_entry(root.child(archive))
    files: dict[str, Entry] = {}
    for s in sources:
        files.setdefault(s.name, _member_entry(s, stamp))
    return fixed_shards(split, archive, sources, files, size)
