"""The records' encoding, written without importing TensorFlow: the schema, the feature entries
every format builds its records from (boxes included), and the TFRecord framing (recordio.py reads
them back).

Each record is a serialized ``tf.train.Example`` with the features of ``SCHEMA`` (the one
definition: dataset_info.json's "features" and docs/formats.md's table are checked against it).

The Example protobuf and the TFRecord framing (length, masked CRC32C of the length, data,
masked CRC32C of the data) are encoded by hand: the conversion workers never pay the
seconds and hundreds of megabytes that importing TensorFlow costs. Every shard still reads
back with ``tf.data.TFRecordDataset`` and ``tf.io.parse_single_example(feature_spec())``;
the tests check exactly that. ``recordio.iter_records`` and ``recordio.parse_example`` read both
layers back without TensorFlow (resumption checks and the report use them).

Formats (formats.py) build their records from the public entries: ``int64_entry``,
``bytes_entry``, ``float_list_entry``, ``int64_list_entry``, ``fixed_entries``, ``box_entries``.

Bounding boxes. Where a layout has boxes, each record carries them, next to its other features,
as the TensorFlow object detection API names them (``BOX_SCHEMA``):

| key | type | value |
|---|---|---|
| `image/object/bbox/xmin` | float list | left edge of each box, a fraction of the image width |
| `image/object/bbox/ymin` | float list | top edge of each box, a fraction of the image height |
| `image/object/bbox/xmax` | float list | right edge of each box, a fraction of the image width |
| `image/object/bbox/ymax` | float list | bottom edge of each box, a fraction of the image height |
| `image/object/bbox/label` | int64 list | index of each box's class id in the sorted class ids (as `label`) |

One value per box in each list, boxes in the metadata's order; an image without boxes has five
empty lists, so every record parses with ``tf.io.VarLenFeature`` (tf.float32, tf.int64). Values are
float32 in [0, 1] with xmin < xmax and ymin < ymax.

``normalise`` turns the metadata's pixels into those fractions by the layout's pixel convention
(boxes.py). Boxes that do not fit: a box partly outside the image is clipped to it and counted as
clipped; a box that is empty or inverted once clipped (xmin >= xmax or ymin >= ymax in float32: a box
wholly outside the image becomes empty) or has a NaN or infinite coordinate is dropped and
counted. Unlike ``process_bounding_boxes.py``, an inverted box is not swapped: which corner was
meant is a guess. Nothing raises: bad boxes never stop a conversion.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache

import google_crc32c

SCHEMA = {  # key: (type, meaning)
    "height": ("int64", "image height in pixels"),
    "width": ("int64", "image width in pixels"),
    "channel": ("int64", "3: every image is converted to RGB"),
    "label": ("int64", "index of the class id in the sorted list of training class ids; -1 for test"),
    "label_one_hot": ("bytes", "one byte per class, 1 at label; all zero for test"),
    "image_raw": ("bytes", "decoded uint8 pixels, row-major height x width x channel"),
    "filename": ("bytes", "source path relative to the dataset root"),
    "wnid": ("bytes", "class id; empty for test"),
}
INT_FEATURES = tuple(k for k, (kind, _) in SCHEMA.items() if kind == "int64")
BYTES_FEATURES = tuple(k for k, (kind, _) in SCHEMA.items() if kind == "bytes")
# A box: xmin, ymin, xmax, ymax, label; in pixels as the metadata give them (plan.Source.boxes),
# or as fractions of the image once normalised
Box = tuple[float, float, float, float, int]
FLOAT_KEYS = tuple(f"image/object/bbox/{k}" for k in ("xmin", "ymin", "xmax", "ymax"))
LABEL_KEY = "image/object/bbox/label"
BOX_SCHEMA = {  # key: (type, meaning), as records.SCHEMA
    FLOAT_KEYS[0]: ("float list", "left edge of each box, a fraction of the image width"),
    FLOAT_KEYS[1]: ("float list", "top edge of each box, a fraction of the image height"),
    FLOAT_KEYS[2]: ("float list", "right edge of each box, a fraction of the image width"),
    FLOAT_KEYS[3]: ("float list", "bottom edge of each box, a fraction of the image height"),
    LABEL_KEY: ("int64 list", "index of each box's class id in the sorted class ids (as label)"),
}
_F32X4 = struct.Struct("<4f")
_MASK_DELTA = 0xA282EAD8
_U64 = (1 << 64) - 1


def feature_spec() -> dict:
    """The ``tf.io.parse_single_example`` spec of the schema (imports TensorFlow)."""
    import tensorflow as tf

    spec = {k: tf.io.FixedLenFeature([], tf.int64) for k in INT_FEATURES}
    spec.update({k: tf.io.FixedLenFeature([], tf.string) for k in BYTES_FEATURES})
    return spec


_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:  # tags, keys' lengths, most int64 values: one byte, no loop
        return _SMALL_VARINTS[n]
    n &= _U64  # negative int64 values are sent as their 64-bit two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _header(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited protobuf field whose payload is ``length`` bytes."""
    return _varint(number << 3 | 2) + _varint(length)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _header(number, len(payload)) + payload


@cache
def _key(key: str) -> bytes:
    return _field(1, key.encode())


def _entry(key: bytes, feature: bytes) -> bytes:
    # Features.feature is map<string, Feature>: each entry is {1: key, 2: value}.
    return _field(1, _field(1, key) + _field(2, feature))


@lru_cache(maxsize=4096)  # heights, widths, channels and labels repeat
def int64_entry(key: str, value: int) -> bytes:
    # Feature.int64_list = 3; Int64List.value = 1, packed.
    return _entry(key.encode(), _field(3, _field(1, _varint(value))))


@lru_cache(maxsize=4096)  # sizes repeat: every 64x64 image has 12,288 bytes of pixels
def _bytes_entry_head(key: str, size: int) -> bytes:
    """Everything of a bytes entry before its ``size``-byte value, so the value is never copied."""
    value_head = _header(1, size)  # BytesList.value = 1
    list_size = len(value_head) + size
    list_head = _header(1, list_size)  # Feature.bytes_list = 1
    feature_size = len(list_head) + list_size
    k = _key(key)
    feature_head = _header(2, feature_size)
    return _header(1, len(k) + len(feature_head) + feature_size) + k + feature_head + list_head + value_head


def fixed_entries(*, height: int, width: int, channel: int, label: int, label_one_hot: bytes, wnid: bytes) -> bytes:
    """The entries of a record that repeat from image to image: all but image_raw and filename.

    A converter builds them once per (size, label) and passes them to ``example_parts``.
    """
    return b"".join(
        (
            int64_entry("height", height),
            int64_entry("width", width),
            int64_entry("channel", channel),
            int64_entry("label", label),
            _bytes_entry_head("label_one_hot", len(label_one_hot)),
            label_one_hot,
            _bytes_entry_head("wnid", len(wnid)),
            wnid,
        )
    )


def example_parts(fixed: bytes, image_raw: bytes, filename: bytes) -> list[bytes]:
    """A serialized ``tf.train.Example`` as pieces whose concatenation is the record.

    Written piece by piece (see ``write_framed``), a large image's pixels are never copied into a record.
    """
    parts = [fixed, _bytes_entry_head("image_raw", len(image_raw)), image_raw]
    parts += (_bytes_entry_head("filename", len(filename)), filename)
    parts.insert(0, _header(1, sum(map(len, parts))))  # Example.features = 1
    return parts


def bytes_entry(key: str, value: bytes) -> list[bytes]:
    """A bytes feature entry as two pieces, its head and ``value`` (never copied)."""
    return [_bytes_entry_head(key, len(value)), value]


def example_of(pieces: list[bytes]) -> list[bytes]:
    """A serialized ``tf.train.Example`` of feature entries given as pieces (``int64_entry``,
    ``bytes_entry``'s, ...), as pieces whose concatenation is the record (see ``write_framed``)."""
    return [_header(1, sum(map(len, pieces))), *pieces]  # Example.features = 1


def encode_example(
    *,
    height: int,
    width: int,
    channel: int,
    label: int,
    label_one_hot: bytes,
    image_raw: bytes,
    filename: bytes = b"",
    wnid: bytes = b"",
) -> bytes:
    """Serialize one record of the schema as a ``tf.train.Example``."""
    fixed = fixed_entries(
        height=height, width=width, channel=channel, label=label, label_one_hot=label_one_hot, wnid=wnid
    )
    return b"".join(example_parts(fixed, image_raw, filename))


def one_hot(label: int, num_classes: int) -> bytes:
    """One byte per class; all zero when ``label`` is -1 (unlabelled)."""
    out = bytearray(num_classes)
    if label >= 0:
        out[label] = 1
    return bytes(out)


def normalise(boxes: Iterable[Box], height: int, width: int, *, inclusive: bool) -> tuple[tuple[Box, ...], int, int]:
    """The boxes as float32 edges in [0, 1] (see the module docstring and boxes.py), how many were clipped
    and how many dropped. ``inclusive``: x1, y1 are the last pixel inside the box
    (``CONVENTIONS[layout]`` is INCLUSIVE), else its far edge."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    end = 1 if inclusive else 0
    kept: list[Box] = []
    clipped = total = 0
    for x0, y0, x1, y1, label in boxes:
        total += 1
        edges = e0, e1, e2, e3 = (x0 / width, y0 / height, (x1 + end) / width, (y1 + end) / height)
        if 0.0 <= e0 <= 1.0 and 0.0 <= e1 <= 1.0 and 0.0 <= e2 <= 1.0 and 0.0 <= e3 <= 1.0:  # nothing to clip
            xmin, ymin, xmax, ymax = _F32X4.unpack(_F32X4.pack(e0 + 0.0, e1 + 0.0, e2 + 0.0, e3 + 0.0))  # no -0.0
            if xmin < xmax and ymin < ymax:
                kept.append((xmin, ymin, xmax, ymax, label))
            continue
        if not all(map(math.isfinite, edges)):
            continue
        xmin, ymin, xmax, ymax = _F32X4.unpack(_F32X4.pack(*[min(max(e, 0.0), 1.0) + 0.0 for e in edges]))  # no -0.0
        if xmin >= xmax or ymin >= ymax:
            continue
        clipped += not all(0.0 <= e <= 1.0 for e in edges)
        kept.append((xmin, ymin, xmax, ymax, label))
    return tuple(kept), clipped, total - len(kept)


def float_list_entry(key: str, values: Sequence[float]) -> bytes:
    """A ``Features.feature`` map entry holding a FloatList (packed float32), as protobuf writes it."""
    payload = _field(1, struct.pack(f"<{len(values)}f", *values)) if values else b""
    return _entry(key.encode(), _field(2, payload))  # Feature.float_list = 2; FloatList.value = 1


def int64_list_entry(key: str, values: Sequence[int]) -> bytes:
    """A ``Features.feature`` map entry holding an Int64List (packed varints), as protobuf writes it."""
    payload = _field(1, b"".join(map(_varint, values))) if values else b""
    return _entry(key.encode(), _field(3, payload))  # Feature.int64_list = 3; Int64List.value = 1


def box_entries(boxes: Iterable[Box], height: int, width: int, *, inclusive: bool) -> tuple[bytes, int, int]:
    """The serialized feature-map entries of ``BOX_SCHEMA`` for an image's boxes, to be joined
    with a record's other entries (e.g. after ``records.fixed_entries``, before
    ``records.example_parts``), and how many boxes were clipped and dropped (``normalise``)."""
    kept, clipped, dropped = normalise(boxes, height, width, inclusive=inclusive)
    if not kept:
        return _no_box_entries(), clipped, dropped
    columns = list(zip(*kept, strict=True))
    pack = _floats(len(kept)).pack
    entries = [head + pack(*c) for head, c in zip(_float_heads(len(kept)), columns, strict=False)]
    entries.append(_label_entry(columns[4]))
    return b"".join(entries), clipped, dropped


@cache
def _no_box_entries() -> bytes:
    return b"".join(float_list_entry(k, ()) for k in FLOAT_KEYS) + int64_list_entry(LABEL_KEY, ())


@lru_cache(maxsize=64)
def _floats(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}f")


@lru_cache(maxsize=64)
def _float_heads(n: int) -> tuple[bytes, ...]:
    """Everything of each float_list_entry of FLOAT_KEYS for ``n`` values before the packed values
    (whose length depends on ``n`` only), so that box_entries packs the values alone."""
    return tuple(float_list_entry(k, [0.0] * n)[: -4 * n] for k in FLOAT_KEYS)


@lru_cache(maxsize=4096)  # boxes' labels repeat: one per class, mostly one box an image
def _label_entry(labels: tuple[int, ...]) -> bytes:
    return int64_list_entry(LABEL_KEY, labels)


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    return _mask(google_crc32c.value(data))


def frame(record: bytes) -> bytes:
    """One record in TFRecord framing, as ``write_framed`` writes it."""
    out: list[bytes] = []
    write_framed(out.append, [record])
    return b"".join(out)


JOINED_RECORD = 1 << 16  # records up to this size are written in one call: copying them costs less than calls


@lru_cache(maxsize=65536)  # record lengths repeat: every 64x64 seed record has the same
def _length_framing(length: int) -> bytes:
    """The first 12 bytes of a record's framing: its length and the length's masked CRC32C."""
    header = struct.pack("<Q", length)
    return header + struct.pack("<I", masked_crc(header))


_CRC = struct.Struct("<I")


def write_framed(write, parts: list[bytes]) -> int:
    """Write the record made of ``parts`` in TFRecord framing with ``write``; return the bytes written.

    A part may be any flat buffer of bytes (a 1-D uint8 array: decoded pixels, never copied)."""
    if len(parts) == 1:  # (a record already joined: one CRC call, one copy)
        record = parts[0]
        length = len(record)
        write(b"".join((_length_framing(length), record, _CRC.pack(_mask(google_crc32c.value(record))))))
        return length + 16
    length = sum(map(len, parts))
    crc = 0
    for part in parts:
        try:
            crc = google_crc32c.extend(crc, part)
        except TypeError:  # a buffer it does not take (it takes bytes and numpy's arrays): copied
            crc = google_crc32c.extend(crc, bytes(part))
    framing = [_length_framing(length), *parts, _CRC.pack(_mask(crc))]
    if length <= JOINED_RECORD:
        write(b"".join(framing))
    else:  # a large image's pixels are not copied once more
        for piece in framing:
            write(piece)
    return length + 16


# The index beside each shard: one "offset length" line per record (byte offset of the record's
# framing in the shard, framed size in bytes), what DALI's tfrecord2idx and the tfrecord package's
# create_index write and what their readers take for random access and sharding.

INDEX_SUFFIX = ".idx"


def index_line(offset: int, size: int) -> str:
    """The index line of a record whose framing starts at byte ``offset`` and is ``size`` bytes."""
    return f"{offset} {size}\n"
