"""Decode an image file's bytes to RGB pixels, judging the format by content, not by name.

JPEGs go through libjpeg-turbo (simplejpeg), which decodes TinyImageNet's 64x64 files about
three times faster than Pillow; CMYK JPEGs, PNGs and other formats Pillow knows fall back to
Pillow. Every image comes out as a uint8 H x W x 3 array. The size in a file's header is
checked before any pixel memory is allocated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

DEFAULT_MAX_PIXELS = 4096 * 4096

JPEG_MAGIC = b"\xff\xd8\xff"


class BadImage(ValueError):
    """The file is not an image this converter can turn into a record; str() is the reason."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8, H x W x 3
    source: str  # "rgb", "grayscale", "cmyk", or another description of what was converted


# Start-of-frame markers: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_COLOURS = {1: "gray", 3: "ycbcr", 4: "cmyk"}


def _jpeg_frame(data: bytes) -> tuple[int, int, str] | None:
    """(height, width, colour) from a JPEG's start-of-frame segment; None if not found simply."""
    sof = _jpeg_sof(data)
    if sof is None:
        return None
    _, _, h, w, components = sof
    return h, w, _JPEG_COLOURS.get(components, f"{components} components")


def _jpeg_sof(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(marker, precision, height, width, components) of a JPEG's start-of-frame segment; None if
    not found simply.

    Walking the segments in Python costs a few microseconds, less than asking libjpeg-turbo;
    anything unusual (no frame before the scan, a height deferred to a DNL marker) returns
    None and is left to libjpeg-turbo.
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
        elif marker in _SOF:
            if i + 10 > n:
                return None
            h, w, components = data[i + 5] << 8 | data[i + 6], data[i + 7] << 8 | data[i + 8], data[i + 9]
            return (marker, data[i + 4], h, w, components) if h and w else None
        elif marker == 0xDA:  # start of scan before any frame header
            return None
        else:
            i += 2 + (data[i + 2] << 8 | data[i + 3])
    return None


def peek(data: bytes) -> tuple[str, int, int, str]:
    """(format, height, width, colour) from the header alone, without decoding pixels."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    if data.startswith(JPEG_MAGIC):
        frame = _jpeg_frame(data)
        if frame:
            return ("jpeg", *frame)
        try:
            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as e:
            raise BadImage(f"corrupt or truncated JPEG header: {e}") from None
        return "jpeg", h, w, colorspace.lower()
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            return im.format.lower(), h, w, im.mode.lower()
    except Image.DecompressionBombError as e:  # Pillow's own limit, checked on opening
        raise BadImage(f"header declares too many pixels: {e}") from None
    except Exception:  # Pillow raises many types for non-images
        raise BadImage(f"not an image (starts with {data[:8]!r})") from None


def peek_within(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int, str]:
    """``peek``, and BadImage when the header declares more than ``max_pixels`` pixels."""
    fmt, h, w, colour = peek(data)
    if h * w > max_pixels:
        raise BadImage(f"header declares {w}x{h} pixels, above the limit of {max_pixels}")
    return fmt, h, w, colour


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode to RGB. Raises BadImage with a human-readable reason."""
    fmt, h, w, colour = peek_within(data, max_pixels)
    if fmt == "jpeg" and colour in ("ycbcr", "gray", "rgb"):
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError as e:
            raise BadImage(f"corrupt or truncated JPEG: {e}") from None
        return Decoded(pixels, "grayscale" if colour == "gray" else "rgb")
    return _decode_pillow(data, fmt)


def _decode_pillow(data: bytes, fmt: str) -> Decoded:
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            im.load()
            rgb = im.convert("RGB")
    except Exception as e:
        raise BadImage(f"corrupt or truncated {fmt.upper()}: {e}") from None
    if mode == "RGB" and fmt == "jpeg":
        source = "rgb"
    elif mode in ("L", "LA", "I", "I;16", "1") and fmt == "jpeg":
        source = "grayscale"
    elif mode == "CMYK":
        source = "cmyk"
    else:
        source = f"{fmt}-{mode.lower()}"
    return Decoded(np.asarray(rgb, dtype=np.uint8), source)


# Baseline, extended and progressive Huffman-coded frames: what every JPEG decoder reads.
_PLAIN_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
_OTHER_SOF = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical"}


def jpeg_coding(data: bytes) -> str:
    """How a JPEG is coded: "plain" for an 8-bit baseline, extended or progressive Huffman-coded
    frame of 3 components (YCbCr or RGB), which any decoder reads as RGB; else what it is
    ("grayscale", "cmyk", "arithmetic", "12-bit", ...), or "unusual" when its frame header is
    not found simply."""
    sof = _jpeg_sof(data)
    if sof is None:
        return "unusual"
    marker, precision, _, _, components = sof
    if components != 3:
        return _JPEG_COLOURS.get(components, f"{components} components").replace("gray", "grayscale")
    if precision != 8:
        return f"{precision}-bit"
    return "plain" if marker in _PLAIN_SOF else _OTHER_SOF.get(marker, "arithmetic")


def plain_jpeg_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """(height, width) of a "plain" JPEG (see jpeg_coding) from one walk of its segments, else None;
    BadImage when the header declares more than ``max_pixels`` pixels."""
    sof = _jpeg_sof(data) if data.startswith(JPEG_MAGIC) else None
    if sof is None or sof[0] not in _PLAIN_SOF or sof[1] != 8 or sof[4] != 3:
        return None
    h, w = sof[2], sof[3]
    if h * w > max_pixels:
        raise BadImage(f"header declares {w}x{h} pixels, above the limit of {max_pixels}")
    return h, w


def check_jpeg(data: bytes) -> None:
    """Raise BadImage unless libjpeg-turbo decodes the whole file without a warning.

    The decode is DCT-scaled to 1/8 (the smallest output libjpeg-turbo makes) and to gray (no
    upsampling or colour conversion): every block of every component is still entropy-decoded, so a
    truncated or corrupt file fails as in a full decode, at about half to three quarters of its cost.
    """
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, min_height=1, min_width=1)
    except ValueError as e:
        raise BadImage(f"corrupt or truncated JPEG: {e}") from None


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """RGB pixels as a baseline JPEG (4:2:0 chroma, as libjpeg's cjpeg and TensorFlow encode)."""
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")
