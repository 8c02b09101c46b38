"""Converted records read back without TensorFlow: the TFRecord framing unframed with both CRC32C
checksums checked (``iter_records``), a ``tf.train.Example`` parsed from the protobuf wire format
(``parse_example``), and a shard's index parsed (``parse_index``). Resumption checks, the report,
``verify`` and the PyTorch reader use them; records.py writes what they read.
"""

from __future__ import annotations

import hashlib
import struct
from typing import BinaryIO

from .records import masked_crc


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of a protobuf message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf field")
        yield number, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _feature(buf: bytes) -> list:
    """Values of a tf.train.Feature: bytes_list = 1, float_list = 2, int64_list = 3."""
    values: list = []
    for kind, _, payload in _fields(buf):
        for number, wire, v in _fields(payload):
            if number != 1:
                continue
            if kind == 1:
                values.append(bytes(v))
            elif kind == 2:
                values.extend(struct.unpack(f"<{len(v) // 4}f", v))
            elif kind == 3 and wire == 0:
                values.append(_signed(v))
            elif kind == 3:  # packed
                pos = 0
                while pos < len(v):
                    n, pos = _read_varint(v, pos)
                    values.append(_signed(n))
    return values


def parse_example(data: bytes) -> dict[str, list]:
    """The features of a serialized tf.train.Example: name -> list of values."""
    features: dict[str, list] = {}
    for number, _, payload in _fields(data):
        if number != 1:  # Example.features
            continue
        for entry_no, _, entry in _fields(payload):
            if entry_no != 1:  # Features.feature (map entry: 1 key, 2 value)
                continue
            key, value = "", b""
            for n, _, v in _fields(entry):
                if n == 1:
                    key = bytes(v).decode()
                elif n == 2:
                    value = v
            features[key] = _feature(value)
    return features


class CorruptShard(ValueError):
    """A TFRecord file whose framing or checksums are wrong."""


def iter_records(f: BinaryIO, *, check_crc: bool = True):
    """Yield the records of a TFRecord stream, checking the framing (and both CRC32C checksums).

    Raises CorruptShard naming the record (numbered from 0) and its byte offset.
    """
    n = offset = 0
    while True:
        header = f.read(12)
        if not header:
            return
        if len(header) < 12:
            raise CorruptShard(
                f"ends inside record {n} at byte {offset} (truncated file: {len(header)} of 12 header bytes)"
            )
        (length,) = struct.unpack("<Q", header[:8])
        if check_crc and struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
            raise CorruptShard(f"record {n} at byte {offset}: length checksum (CRC32C) mismatch")
        body = f.read(length + 4)
        if len(body) < length + 4:
            raise CorruptShard(
                f"ends inside record {n} at byte {offset} (truncated file: {12 + len(body)} of {length + 16} bytes)"
            )
        data = body[:length]
        if check_crc and struct.unpack("<I", body[length:])[0] != masked_crc(data):
            raise CorruptShard(f"record {n} at byte {offset}: data checksum (CRC32C) mismatch")
        offset += 12 + length + 4
        n += 1
        yield data


class Hashing:
    """A binary file whose bytes are hashed (SHA-256) as they are read: a shard's checksum taken on the
    way as its records are checked, without reading it twice."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def count_records(f: BinaryIO) -> int:
    return sum(1 for _ in iter_records(f))


def parse_index(text: str) -> list[tuple[int, int]]:
    """(offset, size) of each line of an index; ValueError naming the line (numbered from 1)."""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline ending the last line (or an empty index: no records)
        lines.pop()
    out = []
    for n, line in enumerate(lines, 1):
        fields = line.split(" ")
        if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
            raise ValueError(f"line {n} is {line[:40]!r}, not 'offset length'")
        out.append((int(fields[0]), int(fields[1])))
    return out
