"""A folder per class, as torchvision's ImageFolder and Keras' image_dataset_from_directory read it::

    train/<class>/*               training images of one class; the sorted class names are the labels
    val/<class>/*                 validation images (the folder may be called validation/), labelled
                                  by the train class of the same name
    test/<class>/*                test images, labelled the same way
    <split>/*                     images directly in a split folder (no class folders): unlabelled (-1)

Any of the split folders may be missing, not all of them. No metadata file: class names are folder
names. Files are taken as images by their extension (jpg, jpeg, png, bmp, webp, gif, any case);
the format is still judged from the bytes when converting. Other files, entries that are not
regular files and images of a class that train/ does not have are rejects with their reason.

Every shard's sources are fixed here, a non-image file becoming a reject that names its extension.
Train shards are planned by listing.train_shards from the class folders' listings (mixed by path
hash, or one class each). Val and test hold ``shard_size`` sources each, class by class, each
class folder in natural file order.
"""

from __future__ import annotations

import os

from ..fs import Entry, Location
from ..listing import class_listings, fixed_shards, list_images, train_shards
from ..plan import MIXED, ClassInfo, Found, MetadataError, Plan, Shard, Source

NAME = "imagefolder"
REQUIRED = ()
# (split, folder): the folders a split may be in, in plan order
SPLIT_FOLDERS = (("train", "train"), ("val", "val"), ("val", "validation"), ("test", "test"))
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"})


def split_folders(root: Location) -> list[tuple[str, str]]:
    """The (split, folder) pairs present under ``root``; both val/ and validation/ is an error."""
    present = [(split, folder) for split, folder in SPLIT_FOLDERS if root.child(folder).isdir()]
    if {"val", "validation"} <= {folder for _, folder in present}:
        raise MetadataError(f"{root.url}: both val/ and validation/ exist; keep one (both would be the val split)")
    return present


def not_an_image(name: str) -> str | None:
    """Why a file is not taken as an image, judged by its extension; None when it is."""
    ext = os.path.splitext(name)[1]
    if ext.lower() in EXTENSIONS:
        return None
    return f"not an image file (extension {ext})" if ext else "not an image file (no extension)"


def plan(root: Location, shard_size: int, train_order: str = MIXED, train_count: int = 0) -> Plan:
    """List every split folder under ``root`` and plan every output shard (train: ``train_order``,
    ``train_count`` shards when mixed, 0 for the default)."""
    present = split_folders(root)
    if not present:
        raise MetadataError(
            f"{root.url}: no train/, val/, validation/ or test/ folder (imagefolder layout: <split>/<class>/<image>)"
        )
    found = Found()
    ignored = found.ignored
    listings = {}
    for split, folder in present:
        listed = root.child(folder).list_dir(root)
        listings[folder] = [e for e in listed if e.kind != "ignored"]
        ignored[split] += len(listed) - len(listings[folder])
    train = listings.get("train", [])
    classes = [e.name for e in train if e.kind == "dir"]  # list_dir sorts by name
    for name in classes:
        if any(c in name for c in "\t\r\n"):
            raise MetadataError(f"{root.child('train', name).url}: a class folder name may not hold a tab or newline")
    labels = {name: i for i, name in enumerate(classes)}
    rejects, warnings, problems = found.rejects, found.warnings, found.problems
    shards: list[Shard] = []
    train_plan = None
    for split, folder in present:
        entries = listings[folder]
        class_dirs = [e.name for e in entries if e.kind == "dir"]
        if not class_dirs:  # images directly in the split folder: unlabelled (what is ignored: counted above)
            files, others, _ = list_images(root.child(folder), root)
            sources = _sources(files, others, "", -1)
            shards += fixed_shards(split, folder, sources, files, shard_size)
            continue
        rejects += [
            {"path": f"{folder}/{e.name}", "reason": "not in a class folder" if e.kind == "file" else e.reason}
            for e in entries
            if e.kind != "dir"
        ]
        if split == "train":
            class_labels = list(labels.items())
            per_class = class_listings(
                root, folder, class_labels, problems, train_order, reason_of=not_an_image, ignored=ignored
            )
            train_plan = train_shards(folder, per_class, train_order, train_count)
            shards += train_plan.light()
            continue
        sources, digested = [], {}
        for name in class_dirs:
            files, others, skipped = list_images(root.child(folder, name), root)
            ignored[split] += skipped
            label = labels.get(name)
            unknown = None if label is not None else f"class {name} is not a class of the train split"
            sources += _sources(files, others, f"{name}/", label, unknown)
            digested |= {f"{name}/{n}": e for n, e in files.items()}
        shards += fixed_shards(split, folder, sources, digested, shard_size)
    for split in ("train", "val", "test"):
        if split not in {s for s, _ in present}:
            warnings.append(f"{root.url}: no {split} split (folder not found)")
    return found.plan(
        root, NAME, [ClassInfo(wnid=name, words=name) for name in classes], shards, train_order, train_plan
    )


def _sources(
    files: dict[str, Entry], others: list[Entry], prefix: str, label: int | None, reason: str | None = None
) -> list[Source]:
    """One folder's sources in natural file order (list_images' order), then its other entries by name.

    A file is converted with ``label`` unless its extension is not an image's or ``reason`` (the
    whole folder's) is given; other entries are rejects with their own reason.
    """
    out = []
    for name in files:
        why = not_an_image(name) or reason
        out.append(Source(prefix + name, None if why else label, why))
    out += [Source(prefix + e.name, None, e.reason) for e in others]
    return out
