"""Decode an image file's bytes to RGB pixels, judging the format by content, not by name.

JPEGs go through libjpeg-turbo (simplejpeg), which decodes TinyImageNet's 64x64 files about
three times faster than Pillow; CMYK JPEGs, PNGs and other formats Pillow knows fall back to
Pillow. Every image comes out as a uint8 H x W x 3 array. The size in a file's header is
checked before any pixel memory is allocated.

``Resize`` says what size an image becomes (``--resize WxH`` squashed or centre-cropped, or
``--shorter-side N``); ``decode(data, resize=...)`` makes it. A JPEG is decoded by libjpeg-turbo's
DCT scaling at the smallest 1/2, 1/4 or 1/8 scale that still leaves at least twice the target on
each side (``MIN_REDUCTION``: fewer pixels to transform and convert; the entropy decoding, most of a
photo's decode, remains), then resized over the exact window of the source (fractional edges
included) by Pillow's Hamming filter, an antialiased filter twice a box's width. Each output pixel
then averages two or more of the scaled decode's pixels a side: at a smaller reduction (the smallest
scale that merely covered the target, as before) an output pixel straddles one or two DCT blocks'
averages and the filter cannot place the detail inside them. Measured against an exact area average
of the fully decoded image on detailed mosaics of photos at ImageNet's sizes (JPEG quality 90): at
32x32, PSNR median 39.0 dB, 5th percentile 37.1 (the smallest covering scale: 34.2 and 31.5); at
64x64, 41.3 and 39.6 (35.6 and 32.9). Pillow's box filter takes the pixels whose centres fall in an
output pixel, whole, which at these small factors is close to point sampling (35-36 dB at twice the
target). An image already at its target size is not touched.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

# numpy, simplejpeg and Pillow are imported where pixels are decoded, resized or encoded: the steps
# that only plan or check parameters use this module's sizes and headers without them.
if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAX_PIXELS = 4096 * 4096

JPEG_MAGIC = b"\xff\xd8\xff"


class BadImage(ValueError):
    """The file is not an image this converter can turn into a record; str() is the reason."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8, H x W x 3
    source: str  # "rgb", "grayscale", "cmyk", or another description of what was converted
    read: tuple[int, int] | None = None  # (height, width) of the file when the pixels were resized


SQUASH, CENTER_CROP = RESIZE_MODES = ("squash", "center-crop")
SHORTER_SIDE = "shorter-side"  # the mode dataset_info.json records for --shorter-side
DCT_SCALES = (8, 4, 2)  # libjpeg-turbo's scaled decodes used: 1/8, 1/4, 1/2 (each an average of its blocks)
MIN_SCALED_SIDE = 16  # a scaled decode smaller than this is mostly edge blocks, which padding skews: decode fully
MIN_REDUCTION = 2  # a scaled decode leaves at least this many times the target a side for the filter to average


@dataclass(frozen=True)
class Resize:
    """What size every image becomes: ``width`` x ``height`` (``mode`` squash: the whole image, aspect
    not kept; center-crop: the shorter side scaled to the target, then the centre), or, with
    ``shorter_side``, the aspect kept and the shorter side made ``shorter_side`` (never enlarged)."""

    width: int = 0
    height: int = 0
    mode: str = SQUASH
    shorter_side: int = 0

    def target(self, h: int, w: int) -> tuple[int, int] | None:
        """(height, width) an image of ``h`` x ``w`` becomes; None: it stays as it is."""
        if self.shorter_side:
            short = min(h, w)
            if short <= self.shorter_side:
                return None
            scale = self.shorter_side / short
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            return (self.shorter_side, size[1]) if h == short else (size[0], self.shorter_side)
        return None if (h, w) == (self.height, self.width) else (self.height, self.width)

    def window(self, h: int, w: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom): the part of an ``h`` x ``w`` image (in its pixels) that becomes
        the record's image: all of it, but the centre for center-crop."""
        if self.mode != CENTER_CROP or self.shorter_side:
            return 0.0, 0.0, float(w), float(h)
        scale = max(self.width / w, self.height / h)
        cw, ch = self.width / scale, self.height / scale
        left, top = (w - cw) / 2, (h - ch) / 2
        return left, top, left + cw, top + ch

    def record(self) -> dict:
        """What dataset_info.json says of it: {"mode", "width", "height"} or {"mode": "shorter-side",
        "shorter_side"}."""
        if self.shorter_side:
            return {"mode": SHORTER_SIDE, "shorter_side": self.shorter_side}
        return {"mode": self.mode, "width": self.width, "height": self.height}


def resize_of(options: dict) -> Resize | None:
    """The Resize of conversion options (``resize`` "WxH", ``resize_mode``, ``shorter_side``), or None."""
    if options.get("shorter_side"):
        return Resize(shorter_side=int(options["shorter_side"]))
    if options.get("resize"):
        w, h = (int(v) for v in options["resize"].lower().split("x"))  # WxH: the width first
        return Resize(w, h, options.get("resize_mode", SQUASH))
    return None


def _limit(max_pixels: int) -> str:
    side = math.isqrt(max_pixels)
    square = f": {side}x{side}" if side * side == max_pixels else ""
    return f"the limit every input image is held to ({max_pixels:,} pixels{square})"


def check_sizes(
    resize: tuple[int, int] | None = None,
    image_size: tuple[int, int] | None = None,
    shorter_side: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """ValueError (its text names the option) for a target no image within ``max_pixels`` could
    have or need: a ``resize`` (width, height) or ``image_size`` (height, width) above it, a
    ``shorter_side`` longer than any image within it has (it would resize nothing)."""
    if resize and resize[0] * resize[1] > max_pixels:
        w, h = resize
        raise ValueError(f"resize {w}x{h} is {w * h:,} pixels, above {_limit(max_pixels)}")
    if image_size and image_size[0] * image_size[1] > max_pixels:
        h, w = image_size
        raise ValueError(
            f"image_size {h}x{w} is {w * h:,} pixels, above {_limit(max_pixels)}: every image would be rejected"
        )
    if shorter_side > math.isqrt(max_pixels):
        raise ValueError(
            f"shorter_side {shorter_side} is longer than the shorter side of any image within {_limit(max_pixels)}: "
            "nothing would be resized"
        )


def resize_text(resize: dict) -> str:
    """A resize as dataset_info.json records it (Resize.record), in words: "64x64 (width x height, squash)"."""
    if "width" in resize:
        return f"{resize['width']}x{resize['height']} (width x height, {resize['mode']})"
    return f"shorter side {resize['shorter_side']} (aspect kept, never enlarged)"


def fixed_size(resize: dict | None) -> tuple[int, int] | None:
    """(height, width) every image has after a resize as dataset_info.json records it (Resize.record), or None."""
    if resize and "width" in resize:
        return int(resize["height"]), int(resize["width"])
    return None


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
        import simplejpeg

        try:
            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as e:
            raise BadImage(f"corrupt or truncated JPEG header: {e}") from None
        return "jpeg", h, w, colorspace.lower()
    from PIL import Image

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


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, resize: Resize | None = None) -> Decoded:
    """Decode to RGB, resized as ``resize`` says (``Decoded.read``: the size before, when it was).
    Raises BadImage with a human-readable reason."""
    fmt, h, w, colour = peek_within(data, max_pixels)
    target = resize.target(h, w) if resize else None
    if fmt == "jpeg" and colour in ("ycbcr", "gray", "rgb"):
        source = "grayscale" if colour == "gray" else "rgb"
        if target:
            window = resize.window(h, w)
            scale = dct_scale(window, target)
            size = (-(-h // scale), -(-w // scale))  # libjpeg-turbo's output at 1/scale
            pixels = _decode_jpeg(data, min_height=size[0], min_width=size[1])
            if pixels.shape[:2] != size:  # (another scale came out: its pixels do not map by 1/scale)
                pixels, scale = _decode_jpeg(data), 1
            return Decoded(area_resize(pixels, [v / scale for v in window], target), source, (h, w))
        return Decoded(_decode_jpeg(data), source)
    img = _decode_pillow(data, fmt)
    if target:
        ih, iw, _ = img.pixels.shape
        return Decoded(area_resize(img.pixels, resize.window(ih, iw), target), img.source, (ih, iw))
    return img


def _decode_jpeg(data: bytes, **scaled) -> np.ndarray:
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **scaled)
    except ValueError as e:
        raise BadImage(f"corrupt or truncated JPEG: {e}") from None


def dct_scale(window: tuple[float, float, float, float], target: tuple[int, int]) -> int:
    """The largest k of DCT_SCALES (libjpeg-turbo decodes at 1/k) at which ``window`` (in the file's
    pixels) still holds at least MIN_REDUCTION times ``target`` (height, width) pixels a side, and
    MIN_SCALED_SIDE; 1 when none does."""
    left, top, right, bottom = window
    high_enough, wide_enough = (
        max(MIN_REDUCTION * target[0], MIN_SCALED_SIDE),
        max(MIN_REDUCTION * target[1], MIN_SCALED_SIDE),
    )
    for k in DCT_SCALES:
        if (right - left) / k >= wide_enough and (bottom - top) / k >= high_enough:
            return k
    return 1


def area_resize(pixels: np.ndarray, window, target: tuple[int, int]) -> np.ndarray:
    """``window`` (left, top, right, bottom, fractional in ``pixels``' coordinates) of ``pixels`` resized
    to ``target`` (height, width) by Pillow's Hamming filter (antialiased: its support grows with the
    reduction, to two output pixels) when both sides shrink, else a bilinear filter (antialiased on a
    side that shrinks). See the module docstring for why not Pillow's box filter."""
    import numpy as np
    from PIL import Image

    h, w = target
    left, top, right, bottom = window
    shrinks = right - left >= w and bottom - top >= h
    img = Image.fromarray(pixels).resize((w, h), Image.HAMMING if shrinks else Image.BILINEAR, box=tuple(window))
    return np.asarray(img, dtype=np.uint8)


def _decode_pillow(data: bytes, fmt: str) -> Decoded:
    import numpy as np
    from PIL import Image

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
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, min_height=1, min_width=1)
    except ValueError as e:
        raise BadImage(f"corrupt or truncated JPEG: {e}") from None


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """RGB pixels as a baseline JPEG (4:2:0 chroma, as libjpeg's cjpeg and TensorFlow encode)."""
    import simplejpeg

    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")
