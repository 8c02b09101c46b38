"""Dataset layouts. Each module reads one way of laying out a dataset into a Plan (see plan.py):

    NAME       the layout's name
    REQUIRED   metadata files that must exist, relative to the root (checked before any work);
               a layout of several forms has ``required(root)`` giving those of the form found
    plan(root: Location, shard_size: int, train_order: str, train_count: int) -> Plan
                   train shards through listing.train_shards (train_order: mixed or per-class;
                   train_count: mixed shards, 0 for the default)

    OPTIONS    (optional) the names of the layout's own options, given after its name:
               ``--layout parquet:config=NAME,image=COLUMN`` calls plan(..., config="NAME", image="COLUMN")

A new layout is one more module here and one more line in LAYOUTS (and, for "auto", in detect).
"""

from __future__ import annotations

import os

from ..credentials import check_access
from ..fs import BadOutput, Location, check_inside, check_output
from ..plan import DEFAULT_SHARD_SIZE, MIXED, SPLITS, TRAIN_ORDERS, MetadataError, Plan
from . import imagefolder, imagenet, parquet, tinyimagenet, webdataset

LAYOUTS = {m.NAME: m for m in (tinyimagenet, imagenet, imagefolder, parquet, webdataset)}
AUTO = "auto"  # detect the layout (see detect)
LAYOUT_CHOICES = (AUTO, *LAYOUTS)


def detect(data_url: str) -> str:
    """The layout of the dataset under ``data_url``: imagenet when LOC_synset_mapping.txt or one of
    ILSVRC2012's archives (devkit, train or val tar) exists;
    else tinyimagenet when any of its metadata files (wnids.txt, words.txt,
    val/val_annotations.txt) exists, so that a missing one is named rather than the dataset read
    another way; else parquet when parquet split files exist (data/<split>-*.parquet,
    <split>/*.parquet...); else webdataset when tar shards named <name>-<split>-NNNN.tar exist;
    else imagefolder when a split folder exists."""
    url, pattern = dataset_root(data_url)
    if pattern is not None:
        return webdataset.NAME
    root = Location.of(url)
    if not root.isdir():
        raise MetadataError(f"{root.url}: dataset directory not found")
    if root.child(imagenet.MAPPING).exists() or imagenet.archive_form(root):
        return imagenet.NAME
    if any(root.child(rel).exists() for rel in tinyimagenet.REQUIRED):
        return tinyimagenet.NAME
    if parquet.detected(root):
        return parquet.NAME
    if webdataset.detected(root):
        return webdataset.NAME
    if imagefolder.split_folders(root):
        return imagefolder.NAME
    raise MetadataError(
        f"{root.url}: no known dataset layout: neither ImageNet's LOC_synset_mapping.txt, TinyImageNet's "
        "wnids.txt and words.txt, parquet split files (data/<split>-*.parquet), WebDataset shards "
        "(<name>-<split>-NNNN.tar) nor a train/, val/, validation/ or test/ folder of images"
    )


def dataset_root(data_url: str) -> tuple[str, str | None]:
    """The dataset folder's URL and, when ``data_url`` ends in a brace pattern of WebDataset shard
    names (``.../imagenet1k-train-{0000..1023}.tar``), that pattern (else None)."""
    head, sep, last = str(data_url).rstrip("/").rpartition("/")
    if sep and "{" in last and "}" in last:
        return head, last
    return data_url, None


def parse_layout(text: str) -> tuple[str, dict[str, str]]:
    """A --layout value's name and options: "parquet:config=a,image=img" -> ("parquet", {"config": "a",
    "image": "img"}); ValueError naming what is wrong."""
    name, _, rest = text.partition(":")
    if name != AUTO and name not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_CHOICES)}, got {name!r}")
    allowed = getattr(LAYOUTS.get(name), "OPTIONS", ())
    options: dict[str, str] = {}
    for item in rest.split(",") if rest else ():
        key, eq, value = item.partition("=")
        if key not in allowed or not eq or not value:
            what = f"options {', '.join(k + '=...' for k in allowed)}" if allowed else "no options"
            raise ValueError(f"layout {name} takes {what}, got {item!r}")
        options[key] = value
    if name == AUTO and rest:
        raise ValueError("layout auto takes no options: name the layout (e.g. parquet:config=NAME)")
    return name, options


def resolve(data_url: str, layout: str) -> str:
    """The layout's name (with the options given after it), detected for "auto"."""
    if layout == AUTO:
        return detect(data_url)
    name, _ = parse_layout(layout)
    if dataset_root(data_url)[1] is not None and name != webdataset.NAME:
        raise MetadataError(f"{data_url}: a brace pattern of shard names is read by the webdataset layout only")
    return layout


def check_dataset(data_url: str, layout: str = AUTO) -> str:
    """Fail fast, naming the path, when the dataset folder or one of its metadata files is missing;
    return the layout's name (detected for "auto")."""
    check_access(data_url)
    root = Location.of(dataset_root(data_url)[0])
    if not root.isdir():
        raise MetadataError(f"{root.url}: dataset directory not found")
    name = resolve(data_url, layout)
    module = LAYOUTS[parse_layout(name)[0]]
    for rel in module.required(root) if hasattr(module, "required") else module.REQUIRED:
        if not root.child(rel).exists():
            raise MetadataError(f"{root.child(rel).url}: file not found")
        check_inside(root.child(rel), root)  # (a link to /etc/passwd is no metadata of the dataset)
    return name


def check_locations(data_url: str, output_url: str, layout: str = AUTO) -> str:
    """Everything about the two URLs that can be checked before any work (MetadataError, BadOutput);
    return the layout's name (detected for "auto").

    The output must not be the dataset folder nor lie inside one of its split folders: shards
    written there would be read as images by the next run.
    """
    name = check_dataset(data_url, layout)
    check_access(output_url)
    check_output_for(data_url, output_url)
    return name


def check_output_for(data_url: str, output_url: str) -> None:
    """The output is not the dataset folder nor inside its split folders, and (local) can be written."""
    root, out = Location.of(dataset_root(data_url)[0]), Location.of(output_url)
    if out.url == root.url or (
        out.is_local and root.is_local and os.path.realpath(out.path) == os.path.realpath(root.path)
    ):
        raise BadOutput(f"{out.url}: the output must not be the dataset folder itself")
    folders = [root.child(split) for split in (*SPLITS, "validation")]
    check_output(out, folders + [root.child(imagenet.DATA, split) for split in SPLITS])


def build_plan(
    data_url: str,
    *,
    layout: str = AUTO,
    shard_size: int = DEFAULT_SHARD_SIZE,
    output_url: str | None = None,
    train_order: str = MIXED,
    train_shards: int = 0,
) -> Plan:
    """Read the metadata under ``data_url`` and plan every output shard (``layout``: a name of
    LAYOUTS, or "auto" to detect it; the plan's ``layout`` says which). Train shards are mixed by
    path hash (``train_shards`` of them, 0: about 1,000 records each) or one per class
    (``train_order`` "per-class"). With ``output_url``, the checks of check_locations run first,
    each once, before any folder is listed."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    if train_order not in TRAIN_ORDERS:
        raise ValueError(f"train_order must be one of {', '.join(TRAIN_ORDERS)}, got {train_order!r}")
    if train_shards < 0:
        raise ValueError("train_shards must be 0 (about 1,000 records a shard) or more")
    if train_shards and train_order != MIXED:
        raise ValueError("train_shards sets the number of mixed train shards; per-class makes one per class")
    name = check_dataset(data_url, layout)
    if output_url is not None:
        check_access(output_url)
        check_output_for(data_url, output_url)
    base, options = parse_layout(name)
    url, pattern = dataset_root(data_url)
    if pattern is not None:
        options["pattern"] = pattern
    return LAYOUTS[base].plan(Location.of(url), shard_size, train_order, train_shards, **options)
