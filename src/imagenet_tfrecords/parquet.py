"""Parquet files read in place: footers for the plan, one row group's columns at a time for conversion.

pyarrow reads a local file by path and a file on an object store through an fsspec file opened
without a read cache: the footer is a read at the file's end, a row group's columns are the byte
ranges of their column chunks, so a file is never read whole (nor held in memory whole).
The Hugging Face ``datasets`` library records a dataset's features as JSON under the ``huggingface``
key of the schema's metadata: ``{"info": {"features": {column: {"_type": "Image"} | {"_type":
"ClassLabel", "names": [...]}, ...}}}`` (older releases: the features at the top level).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from .fs import Location, MetadataError


class ParquetError(MetadataError):
    """A parquet file whose footer cannot be read; the message names the file."""


@dataclass(frozen=True)
class Footer:
    """What the plan needs of a parquet file: its rows by row group, its columns' names and types,
    and the features ``datasets`` recorded (column -> feature dict; empty when none)."""

    url: str
    row_groups: tuple[int, ...]  # rows of each row group
    columns: tuple[str, ...]  # top-level column names, in schema order
    kinds: tuple[str, ...]  # each column's kind: "image" (struct bytes/path), "binary", "int", "other"
    features: dict

    @property
    def rows(self) -> int:
        return sum(self.row_groups)


@contextlib.contextmanager
def open_parquet(loc: Location) -> Iterator:
    """A pyarrow ParquetFile of the file at ``loc`` (closed after): by path on local disks, else
    through an uncached fsspec file (each read a range request)."""
    import pyarrow.parquet as pq

    if loc.is_local:
        pf = pq.ParquetFile(loc.path, pre_buffer=True)
        try:
            yield pf
        finally:
            pf.close()
        return
    with loc.fs.open(loc.path, "rb", cache_type="none") as f:
        pf = pq.ParquetFile(f, pre_buffer=True)
        yield pf


def read_footer(loc: Location) -> Footer:
    """The Footer of the parquet file at ``loc``; ParquetError naming it when it is not one."""
    try:
        with open_parquet(loc) as pf:
            meta = pf.metadata
            schema = pf.schema_arrow
            groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    except MetadataError:
        raise
    except Exception as e:  # pyarrow: ArrowInvalid (bad magic, footer), OSError...
        raise ParquetError(f"{loc.url}: not a readable parquet file ({_short(e)})") from None
    columns = tuple(schema.names)
    kinds = tuple(_kind(schema.field(i).type) for i in range(len(columns)))
    return Footer(loc.url, groups, columns, kinds, _features(loc.url, schema.metadata or {}))


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


def _kind(t) -> str:
    import pyarrow as pa

    if pa.types.is_struct(t):
        names = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
        if "bytes" in names and (pa.types.is_binary(names["bytes"]) or pa.types.is_large_binary(names["bytes"])):
            return "image"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_integer(t):
        return "int"
    return "other"


def _features(url: str, metadata: dict) -> dict:
    raw = metadata.get(b"huggingface")
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
        features = doc["info"]["features"] if "info" in doc else doc.get("features", {})
        if not isinstance(features, dict):
            raise TypeError("features is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise ParquetError(f"{url}: the schema's huggingface metadata is not the datasets library's ({e})") from None
    return features


def image_columns(footer: Footer) -> list[str]:
    """The columns holding images: those ``datasets`` records as an Image feature, else (no such
    record) those whose type is a struct with a binary ``bytes`` field."""
    typed = [c for c, f in footer.features.items() if isinstance(f, dict) and f.get("_type") == "Image"]
    if typed:
        return [c for c in typed if c in footer.columns]
    return [c for c, k in zip(footer.columns, footer.kinds, strict=True) if k == "image"]


def class_labels(footer: Footer) -> dict[str, list[str]]:
    """Each ClassLabel column with its class names, in order."""
    out = {}
    for c, f in footer.features.items():
        if isinstance(f, dict) and f.get("_type") == "ClassLabel" and c in footer.columns:
            names = f.get("names")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ParquetError(f"{footer.url}: the ClassLabel column {c} has no list of names")
            out[c] = names
    return out


def row_group_columns(pf, group: int, image: int, label: int) -> tuple[list, list | None]:
    """One row group's image column as (bytes or None, path or None) per row (a plain binary
    column: (bytes, None)), and its label column's values (None: ``label`` is -1)."""
    names = pf.schema_arrow.names
    wanted = [names[image]] + ([names[label]] if label >= 0 else [])
    import pyarrow as pa

    table = pf.read_row_group(group, columns=wanted)
    col = table.column(0)
    if pa.types.is_struct(col.type):
        chunks = col.combine_chunks()
        data = chunks.field("bytes").to_pylist()
        has_path = col.type.get_field_index("path") >= 0
        paths = chunks.field("path").to_pylist() if has_path else [None] * len(data)
        valid = chunks.is_valid().to_pylist()
        images = [(d, p) if ok else None for d, p, ok in zip(data, paths, valid, strict=True)]
    else:
        images = [None if d is None else (d, None) for d in col.to_pylist()]
    labels = table.column(1).to_pylist() if label >= 0 else None
    return images, labels
