"""A shard's sources read for conversion, whatever holds them: files, archive members, parquet rows.

``read_sources(root, folder, sources)`` yields, for each source in order, (name, content, label):
the image's bytes or the error reading them, and the label read with them (None: the source's own
planned label). Three kinds of source:

- a file under ``folder`` (no span), or a tar member read as one byte range (span (offset, size));
  archive.read_sources reads both;
- a WebDataset sample (layouts/webdataset.py): span (offset, size, label offset, label size, kind):
  its image member and its label member (kind LABEL_CLS: a ``.cls`` member, the label as text;
  LABEL_JSON: a ``.json`` member's ``label``), both read as ranges of the shard's tar;
- a parquet row (layouts/parquet.py): ``folder`` is the parquet file (``*.parquet``) and the span
  (row group, row in it, image column, label column; -1: no label column), the columns by their
  index in the file's schema. A row group's image and label columns are read in one go (pyarrow,
  through an fsspec file on object stores: the column chunks' byte ranges, never the whole file).
  An image stored by ``path`` alone (no bytes) is read from that path relative to the dataset
  folder.

A content a source cannot be converted from (a label outside the class names, an image stored by a
path that is not in the dataset folder) comes as an ``Unusable`` error: a reject with that reason,
unlike a read error, which a re-run tries again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from .archive import BATCH, RangeReader
from .archive import read_sources as read_files_or_members
from .fs import Location, outside_root
from .plan import Source

LABEL_CLS, LABEL_JSON = 1, 2
PARQUET_SUFFIX = ".parquet"


class Unusable(ValueError):
    """A source whose content cannot become a record (not an I/O error); str() is the reason."""


Read = tuple[str, "bytes | Exception", "int | None"]


def read_sources(root: Location, folder: str, sources: Sequence[Source], classes: int) -> Iterator[Read]:
    """(name, content or the error reading it, label read with it or None) of each source, in order
    (``folder``: the shard's, relative to the dataset ``root``; ``classes``: the number of classes,
    which a label read here must be below)."""
    directory = root.child(folder)
    if folder.endswith(PARQUET_SUFFIX):
        yield from _parquet_rows(root, directory, sources, classes)
    elif any(s.span and len(s.span) > 2 for s in sources):
        yield from _samples(directory, sources, classes)
    else:
        for name, data in read_files_or_members(directory, sources):
            yield name, data, None


def check_label(label: int, classes: int, where: str) -> int | Exception:
    """``label`` when it is -1 (unlabelled) or a class number, else Unusable naming ``where``."""
    if label == -1 or 0 <= label < classes:
        return label
    return Unusable(f"label {label} ({where}) is not one of the {classes} class numbers (0 to {classes - 1}) or -1")


def _samples(directory: Location, sources: Sequence[Source], classes: int) -> Iterator[Read]:
    """WebDataset samples: the image member and, where the span has one, the label member."""
    with RangeReader(directory) as reader:
        for i in range(0, len(sources), BATCH):
            chunk = sources[i : i + BATCH]
            spans = []
            for s in chunk:
                spans.append(s.span[:2])
                if len(s.span) > 2:
                    spans.append(s.span[2:4])
            got = iter(reader.read(spans))
            for s in chunk:
                data = _whole(next(got), s.span[1], directory)
                label = None
                if len(s.span) > 2:
                    raw = _whole(next(got), s.span[3], directory)
                    label = raw if isinstance(raw, Exception) else label_of(raw, s.span[4], classes)
                    if isinstance(label, Exception):
                        data, label = label, None
                yield s.name, data, label


def _whole(data: bytes | Exception, size: int, directory: Location) -> bytes | Exception:
    if isinstance(data, bytes) and len(data) != size:
        return EOFError(f"{directory.url} ends inside this member ({len(data)} of {size} bytes)")
    return data


def label_of(raw: bytes, kind: int, classes: int) -> int | Exception:
    """The label a sample's ``.cls`` (the number as text) or ``.json`` (its "label"; none: -1) holds."""
    what = "its .cls member" if kind == LABEL_CLS else "its .json member's label"
    try:
        if kind == LABEL_CLS:
            value = int(raw.decode("utf-8").strip())
        else:
            value = json.loads(raw.decode("utf-8")).get("label", -1)
            if isinstance(value, bool) or not isinstance(value, int):
                return Unusable(f"{what} is {str(value)[:40]!r}, not a whole number")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        return Unusable(f"{what} is not a label: {str(e)[:80]}")
    return check_label(value, classes, what)


def _parquet_rows(root: Location, file: Location, sources: Sequence[Source], classes: int) -> Iterator[Read]:
    """Parquet rows, read a row group at a time (its image and label columns only)."""
    from .parquet import open_parquet, row_group_columns

    with open_parquet(file) as pf:
        i = 0
        while i < len(sources):
            group = sources[i].span[0]
            j = i
            while j < len(sources) and sources[j].span[0] == group:
                j += 1
            rows = sources[i:j]
            i = j
            try:
                images, labels = row_group_columns(pf, group, rows[0].span[2], rows[0].span[3])
            except Exception as e:  # pyarrow raises OSError, ArrowInvalid... on a damaged or short file
                for s in rows:
                    yield s.name, OSError(f"cannot read row group {group} of {file.url}: {e}"), None
                continue
            for s in rows:
                row = s.span[1]
                image = images[row] if row < len(images) else None
                data: bytes | Exception
                if image is None:
                    data = Unusable(f"row {s.name}: no row {row} in row group {group}, or its image is null")
                elif image[0] is not None:
                    data = image[0]
                else:
                    data = _by_path(root, image[1])
                label = None
                if labels is not None and not isinstance(data, Exception):
                    value = labels[row]
                    label = check_label(-1 if value is None else int(value), classes, "the label column")
                    if isinstance(label, Exception):
                        data, label = label, None
                yield s.name, data, label


def _by_path(root: Location, path: str | None) -> bytes | Exception:
    """The bytes of an image the parquet row stores by path alone: a file relative to the dataset folder."""
    if not path:
        return Unusable("the image has neither bytes nor a path")
    if path.startswith("/") or "://" in path or ".." in path.split("/"):
        return Unusable(f"the image is stored by path only ({path[:200]}), not relative to the dataset folder")
    loc = root.child(path)
    if loc.is_local and outside_root(loc.path, root.path):
        return Unusable(f"the image is stored by path only ({path[:200]}), a link leaving the dataset folder")
    try:
        return loc.read_bytes()
    except FileNotFoundError:
        return Unusable(f"the image is stored by path only ({path[:200]}), not found in the dataset folder")
    except OSError as e:
        return e
