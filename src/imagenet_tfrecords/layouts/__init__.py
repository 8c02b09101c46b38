"""Dataset layouts. Each module reads one way of laying out a dataset into a Plan (see plan.py):

    NAME       the layout's name
    REQUIRED   metadata files that must exist, relative to the root (checked before any work)
    plan(root: Location, shard_size: int) -> Plan

A new layout is one more module here and one more line in LAYOUTS.
"""

from __future__ import annotations

import os

from ..fs import BadOutput, Location, check_output
from ..plan import DEFAULT_SHARD_SIZE, SPLITS, MetadataError, Plan
from . import tinyimagenet

LAYOUTS = {m.NAME: m for m in (tinyimagenet,)}


def check_dataset(data_url: str, layout: str = tinyimagenet.NAME) -> None:
    """Fail fast, naming the path, when the dataset folder or one of its metadata files is missing."""
    root = Location.of(data_url)
    if not root.isdir():
        raise MetadataError(f"{root.url}: dataset directory not found")
    for rel in LAYOUTS[layout].REQUIRED:
        if not root.child(rel).exists():
            raise MetadataError(f"{root.child(rel).url}: file not found")


def check_locations(data_url: str, output_url: str, layout: str = tinyimagenet.NAME) -> None:
    """Everything about the two URLs that can be checked before any work (MetadataError, BadOutput).

    The output must not be the dataset folder nor lie inside one of its split folders: shards
    written there would be read as images by the next run.
    """
    check_dataset(data_url, layout)
    check_output_for(data_url, output_url)


def check_output_for(data_url: str, output_url: str) -> None:
    """The output is not the dataset folder nor inside its split folders, and (local) can be written."""
    root, out = Location.of(data_url), Location.of(output_url)
    if out.url == root.url or (
        out.is_local and root.is_local and os.path.realpath(out.path) == os.path.realpath(root.path)
    ):
        raise BadOutput(f"{out.url}: the output must not be the dataset folder itself")
    check_output(out, [root.child(split) for split in SPLITS])


def build_plan(data_url: str, *, layout: str = tinyimagenet.NAME, shard_size: int = DEFAULT_SHARD_SIZE) -> Plan:
    """Read the metadata under ``data_url`` and plan every output shard."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    check_dataset(data_url, layout)
    return LAYOUTS[layout].plan(Location.of(data_url), shard_size)
