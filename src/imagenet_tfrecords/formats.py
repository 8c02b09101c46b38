"""The record formats: what a record holds, where a format's shards go, and how records read back.

- ``seed``: decoded pixels (``image_raw``) and the keys of ``records.SCHEMA``, under
  ``<split>/<split>-NNNNN-of-MMMMM.tfrecord``.
- ``tf-models``: the keys of tensorflow/models' ImageNet converters (``TF_MODELS_KEYS``): the image as
  JPEG bytes, label (plus ``label_offset``), synset, class text, size, filename; same paths as seed.
- ``tfds``: ``image`` (JPEG bytes), ``label``, ``file_name``, under TFDS's file names
  (``<name>-<split>.tfrecord-NNNNN-of-MMMMM`` in the output root) beside the metadata files
  ``tfds_meta`` writes, so ``tfds.builder_from_directory`` reads the output.

The two JPEG formats store a clean JPEG (``image.jpeg_coding`` "plain": 8-bit baseline or progressive
Huffman coding, 3 components) as its own bytes, after a DCT-scaled decode that still entropy-decodes
every block (``image.check_jpeg``): a truncated or corrupt file is a reject, and nothing is lost to a
re-encode. Any other image is decoded to RGB and encoded at ``jpeg_quality``; ``Stored.reencoded``
says why, and the statistics count it.

With a resize (``Options.resize`` / ``shorter_side``, see ``image.Resize``) every image not already at
its target size is decoded at that size: seed records hold the resized pixels, tf-models and tfds
records the resized image encoded at ``jpeg_quality`` (re-encoded: "resized"); ``Stored.read`` is the
size of the file. An image already at its target size is stored exactly as without a resize.

An encoder serves one conversion (``encoder(job)``): ``image(data)`` validates one file's bytes into
a ``Stored``; ``record(stored, label, path)`` returns the pieces of its ``tf.train.Example``. A
record's entries are the ones shared by every record of its label and size (built once) followed by
the per-image ones, then ``extra`` entries: the boxes (``records.box_entries``) where the layout has
them, in seed and tf-models (tfds records hold only what its features.json declares).
``decode_record`` reads any format's record back to pixels without TensorFlow.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # (numpy and simplejpeg: imported where records are decoded)
    import numpy as np

from . import recordio, records
from .image import (
    BadImage,
    Resize,
    check_jpeg,
    decode,
    encode_jpeg,
    fixed_size,
    jpeg_coding,
    peek_within,
    plain_jpeg_size,
)

SEED, TF_MODELS, TFDS = FORMATS = ("seed", "tf-models", "tfds")
DEFAULT_JPEG_QUALITY = 95
TFDS_VERSION = "1.0.0"
TFDS_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
TF_MODELS_KEYS = {  # key: (type, meaning), as tensorflow/models' build_imagenet_data.py writes them
    "image/encoded": ("bytes", "the image as JPEG: the source file itself when it is a clean JPEG, else re-encoded"),
    "image/format": ("bytes", "JPEG"),
    "image/class/label": ("int64", "label + label_offset (1: Model Garden's and slim's 1,001 classes); -1 for test"),
    "image/class/synset": ("bytes", "class id (wnid); empty for test"),
    "image/class/text": ("bytes", "the class's words; empty for test"),
    "image/height": ("int64", "image height in pixels"),
    "image/width": ("int64", "image width in pixels"),
    "image/channels": ("int64", "3"),
    "image/colorspace": ("bytes", "RGB"),
    "image/filename": ("bytes", "source path relative to the dataset root"),
}
TFDS_KEYS = {
    "image": ("bytes", "the image as JPEG (tfds.features.Image, encoding_format jpeg)"),
    "label": ("int64", "tfds.features.ClassLabel with the class ids as names; -1 for test"),
    "file_name": ("bytes", "source path relative to the dataset root (tfds.features.Text)"),
}


def schema(fmt: str, boxes: str = "") -> dict:
    """The record keys of a format: key -> (type, meaning); with the box keys for a layout with
    boxes (``boxes``: Plan.boxes) in the formats that carry them."""
    keys = {SEED: records.SCHEMA, TF_MODELS: TF_MODELS_KEYS, TFDS: TFDS_KEYS}[fmt]
    return keys | records.BOX_SCHEMA if boxes and fmt != TFDS else keys


def of_info(info: dict) -> str:
    """The format of a converted output from its dataset_info (outputs made before formats: seed)."""
    return info.get("format", SEED)


def tfds_features(num_classes: int, size: tuple[int, int] | None = None) -> dict:
    """TFDS's features.json of the tfds format: image (JPEG), label (ClassLabel), file_name (Text);
    the image's shape is [height, width, 3] when every image has ``size`` (height, width), else [-1, -1, 3]."""
    module = "tensorflow_datasets.core.features."
    dims = [str(size[0]), str(size[1]), "3"] if size else ["-1", "-1", "3"]
    image = {"dtype": "uint8", "encodingFormat": "jpeg", "shape": {"dimensions": dims}}
    features = {
        "file_name": {"pythonClassName": module + "text_feature.Text", "text": {}},
        "image": {"pythonClassName": module + "image_feature.Image", "image": image},
        "label": {
            "pythonClassName": module + "class_label_feature.ClassLabel",
            "classLabel": {"numClasses": str(num_classes)},
        },
    }
    return {"pythonClassName": module + "features_dict.FeaturesDict", "featuresDict": {"features": features}}


def tfds_name(data_url: str) -> str:
    """The TFDS dataset name of a dataset folder: its name in snake case (``tiny-imagenet-200`` ->
    ``tiny_imagenet_200``), a valid identifier as TFDS requires."""
    folder = data_url.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^0-9a-z]+", "_", folder.lower()).strip("_") or "dataset"
    return name if name[0].isalpha() else f"d_{name}"


# The longest file name a shard of a split may need: its index's temporary file (fs.publish),
# ".<shard file>.idx.XXXXXXXX.tmp"; most file systems allow 255 bytes in a name.
NAME_MAX = 255
_LONGEST_SUFFIX = len("-train.tfrecord-00000-of-00000") + len("..idx.XXXXXXXX.tmp")


def check_file_names(fmt: str, data_url: str) -> None:
    """ValueError, before any work, when the tfds format's file names (which start with the dataset
    folder's name, tfds_name) would be too long for a file system."""
    if fmt != TFDS:
        return
    name = tfds_name(data_url)
    if len(name.encode()) + _LONGEST_SUFFIX > NAME_MAX:
        raise ValueError(
            f"--format tfds names its files after the dataset folder ({len(name)} characters: "
            f"{name[:40]}...); at most {NAME_MAX - _LONGEST_SUFFIX} fit a file name of {NAME_MAX} bytes: "
            "rename the folder or link to it under a shorter name"
        )


def shard_path(fmt: str, shard, name: str) -> str:
    """Where a shard goes, relative to the output root; ``name`` is the TFDS dataset name."""
    if fmt == TFDS:
        return f"{name}-{shard.split}.tfrecord-{shard.index:05d}-of-{shard.count:05d}"
    return shard.file


def shard_file(shard, fmt: str, data_url: str) -> str:
    """Where a shard of the dataset at ``data_url`` goes in a format, relative to the output root."""
    return shard_path(fmt, shard, tfds_name(data_url))


class Stored(NamedTuple):
    """One image as a record will hold it: pixels (seed) or JPEG bytes, and what became of it."""

    payload: np.ndarray | bytes
    height: int
    width: int
    source: str  # "rgb", or what was converted to RGB ("grayscale", "cmyk", "png-rgba", ...)
    reencoded: str | None = None  # why the JPEG was made anew; None: stored as read
    read: tuple[int, int] | None = None  # (height, width) of the file when the image was resized


class SeedEncoder:
    """Decoded pixels and the keys of records.SCHEMA (byte for byte as before formats existed)."""

    boxes = True  # records take the image/object/bbox/* entries of layouts with boxes

    def __init__(self, job):
        self.wnids, self.max_pixels = job.wnids, job.options.max_pixels
        self.resize: Resize | None = job.options.resizing()
        self.fixed: dict[tuple, bytes] = {}  # the entries every record of one label and size shares

    def image(self, data: bytes) -> Stored:
        img = decode(data, max_pixels=self.max_pixels, resize=self.resize)
        h, w, _ = img.pixels.shape
        return Stored(img.pixels, h, w, img.source, read=img.read)

    def record(self, stored: Stored, label: int, path: str, extra: bytes = b"") -> list[bytes]:
        """The record's pieces; ``extra``: more serialized entries (the boxes')."""
        h, w, c = stored.payload.shape
        key = (label, h, w, c)
        if key not in self.fixed:
            self.fixed[key] = records.fixed_entries(
                height=h,
                width=w,
                channel=c,
                label=label,
                label_one_hot=records.one_hot(label, len(self.wnids)),
                wnid=self.wnids[label].encode() if label >= 0 else b"",
            )
        fixed = self.fixed[key] + extra if extra else self.fixed[key]
        # the pixels as a flat view (a copy only if the decoder's array is not contiguous)
        return records.example_parts(fixed, stored.payload.reshape(-1), path.encode())


class JpegEncoder:
    """The image as JPEG bytes: a clean JPEG as read (fully checked), anything else re-encoded."""

    def __init__(self, job):
        self.job, self.options = job, job.options
        self.resize: Resize | None = job.options.resizing()
        self.fixed: dict[tuple, bytes] = {}

    def image(self, data: bytes) -> Stored:
        size = plain_jpeg_size(data, self.options.max_pixels)
        if size and not (self.resize and self.resize.target(*size)):
            check_jpeg(data)
            return Stored(data, *size, "rgb")
        fmt, *_ = peek_within(data, self.options.max_pixels)
        coding = jpeg_coding(data) if fmt == "jpeg" else fmt
        img = decode(data, max_pixels=self.options.max_pixels, resize=self.resize)
        h, w, _ = img.pixels.shape
        why = "resized" if img.read else img.source if img.source != "rgb" else f"{coding} jpeg"
        return Stored(encode_jpeg(img.pixels, self.options.jpeg_quality), h, w, img.source, why, img.read)

    def record(self, stored: Stored, label: int, path: str, extra: bytes = b"") -> list[bytes]:
        """The record as one piece: a few KB joined cost less than framing many pieces."""
        key = (label, stored.height, stored.width)
        fixed = self.fixed.get(key)
        if fixed is None:
            fixed = self.fixed[key] = self.fixed_entries(*key)
        pieces = [fixed, *self.entries(stored, path), extra]
        return [b"".join(records.example_of(pieces))]


class TfModelsEncoder(JpegEncoder):
    boxes = True

    def fixed_entries(self, label: int, height: int, width: int) -> bytes:
        labelled = label >= 0
        return b"".join(
            [
                records.int64_entry("image/channels", 3),
                records.int64_entry("image/class/label", label + self.options.label_offset if labelled else -1),
                *records.bytes_entry("image/class/synset", self.job.wnids[label].encode() if labelled else b""),
                *records.bytes_entry("image/class/text", self.job.words[label].encode() if labelled else b""),
                *records.bytes_entry("image/colorspace", b"RGB"),
                *records.bytes_entry("image/format", b"JPEG"),
                records.int64_entry("image/height", height),
                records.int64_entry("image/width", width),
            ]
        )

    def entries(self, stored: Stored, path: str) -> list[bytes]:
        encoded, filename = (
            records.bytes_entry("image/encoded", stored.payload),
            records.bytes_entry("image/filename", path.encode()),
        )
        return [*encoded, *filename]


class TfdsEncoder(JpegEncoder):
    boxes = False  # TFDS reads the features of its features.json: image, label, file_name

    def fixed_entries(self, label: int, height: int, width: int) -> bytes:
        return records.int64_entry("label", label)

    def entries(self, stored: Stored, path: str) -> list[bytes]:
        return [*records.bytes_entry("file_name", path.encode()), *records.bytes_entry("image", stored.payload)]


def encoder(job) -> SeedEncoder | JpegEncoder:
    """The encoder of ``job.options.format`` for the shards of one conversion job."""
    return {SEED: SeedEncoder, TF_MODELS: TfModelsEncoder, TFDS: TfdsEncoder}[job.options.format](job)


class Record(NamedTuple):
    """A record read back: uint8 pixels [H, W, 3], the label as stored and the source's path."""

    pixels: np.ndarray
    label: int
    filename: str


_KEYS = {  # format: (image, label, file name) keys; seed's image is image_raw with its size
    SEED: ("image_raw", "label", "filename"),
    TF_MODELS: ("image/encoded", "image/class/label", "image/filename"),
    TFDS: ("image", "label", "file_name"),
}


def keys(fmt: str) -> tuple[str, str, str]:
    """The (image, label, file name) keys of a format's records."""
    return _KEYS[fmt]


def record_size(fmt: str, record: bytes) -> tuple[int, int]:
    """(height, width) of a serialized record's image, without decoding its pixels: seed's height and
    width, the JPEG header of tf-models and tfds (ValueError when it has none; KeyError, IndexError
    naming a missing feature)."""
    ex = recordio.parse_example(record)
    if fmt == SEED:
        return ex["height"][0], ex["width"][0]
    try:
        _, h, w, _ = peek_within(ex[_KEYS[fmt][0]][0])
    except BadImage as e:
        raise ValueError(f"{_KEYS[fmt][0]}: {e}") from None
    return h, w


def size_problem(resize: dict, height: int, width: int) -> str | None:
    """What is wrong with an image of ``height`` x ``width`` in an output resized as ``resize`` says
    (dataset_info.json's record, image.Resize.record), or None."""
    fixed = fixed_size(resize)
    if fixed and (height, width) != fixed:
        return f"image is {width}x{height} (width x height), the resize made every image {fixed[1]}x{fixed[0]}"
    if not fixed and min(height, width) > resize["shorter_side"]:
        return f"image is {width}x{height}, its shorter side is above the resize's {resize['shorter_side']}"
    return None


def decode_record(fmt: str, record: bytes) -> Record:
    """A serialized record of a format back to pixels, label and file name, without TensorFlow.

    Raises KeyError or IndexError naming a missing feature, ValueError for pixels that do not fit
    (seed) or a JPEG that does not decode.
    """
    ex = recordio.parse_example(record)
    image_key, label_key, name_key = _KEYS[fmt]
    label, name = ex[label_key][0], ex[name_key][0].decode(errors="replace") if ex.get(name_key) else ""
    import numpy as np
    import simplejpeg

    if fmt == SEED:
        h, w, c = ex["height"][0], ex["width"][0], ex["channel"][0]
        pixels = ex[image_key][0]
        if len(pixels) != h * w * c:
            raise ValueError(f"image_raw holds {len(pixels)} bytes, not height*width*channel = {h}*{w}*{c}")
        return Record(np.frombuffer(pixels, dtype=np.uint8).reshape(h, w, c), label, name)
    try:
        return Record(simplejpeg.decode_jpeg(ex[image_key][0], colorspace="RGB"), label, name)
    except ValueError as e:
        raise ValueError(f"{image_key} does not decode as a JPEG: {e}") from None
