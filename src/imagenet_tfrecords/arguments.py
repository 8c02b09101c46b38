"""The command line's options: value parsers that exit 2 naming the option, the conversion options
shared by ``convert`` and the Kubeflow commands (``run``, ``submit``), and the Options they make."""

from __future__ import annotations

import argparse
import math
import os
import sys

from .convert import GRAYSCALE_POLICIES, Options, parse_size
from .formats import FORMATS, check_file_names
from .image import DEFAULT_MAX_PIXELS, RESIZE_MODES
from .layouts import AUTO, LAYOUT_CHOICES, parse_layout
from .plan import DEFAULT_SHARD_SIZE, MAX_TASKS, MIXED, TRAIN_ORDERS
from .stats import DEFAULT_MAX_REJECT_FRACTION

_CAP = math.isqrt(DEFAULT_MAX_PIXELS)  # the side of the square the input pixel limit allows


def url_value(value: str) -> str:
    """Local paths become absolute (pipeline tasks may run elsewhere); URLs pass through."""
    return value if "://" in value else os.path.abspath(value)


def whole_number(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def size_of(form: str):
    """A parser of sizes written ``form`` ("HEIGHTxWIDTH" or "WIDTHxHEIGHT"); "" passes."""

    def parse(text: str) -> str:
        if text and not parse_size(text):
            raise argparse.ArgumentTypeError(f"expected {form} such as 64x64, got {text!r}")
        return text

    return parse


def new_file(value: str) -> str:
    """A file to write: its folder must exist (nothing is created where the user did not ask)."""
    path = url_value(value)
    if "://" not in path and not os.path.isdir(os.path.dirname(path)):
        raise argparse.ArgumentTypeError(f"folder {os.path.dirname(path)} does not exist")
    return path


def layout_value(text: str) -> str:
    """A --layout value: a layout's name, with its options after a colon (layouts.parse_layout)."""
    try:
        parse_layout(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_conversion_args(p: argparse.ArgumentParser, workers_help: str) -> None:
    p.add_argument(
        "--data",
        required=True,
        type=url_value,
        help="dataset root: a path, gs://, s3:// or another fsspec URL (WebDataset shards: or a brace pattern "
        "naming them, .../imagenet1k-train-{0000..1023}.tar)",
    )
    p.add_argument(
        "--output",
        required=True,
        type=url_value,
        help="where shards and reports go (not --data itself, nor inside one of its split folders)",
    )
    p.add_argument(
        "--layout",
        type=layout_value,
        default=AUTO,
        metavar="{" + ",".join(LAYOUT_CHOICES) + "}",
        help="how --data is laid out: tinyimagenet (wnids.txt, words.txt, train/<wnid>/images/, "
        "val/val_annotations.txt), imagenet (Kaggle's ILSVRC2012: LOC_synset_mapping.txt, LOC_val_solution.csv, "
        "ILSVRC/Data/CLS-LOC/; or the original ILSVRC2012_*.tar archives and devkit, read in place), "
        "imagefolder (<split>/<class>/<image>), parquet (a Hugging Face download: data/<split>-*.parquet; "
        "options parquet:config=NAME,image=COLUMN,label=COLUMN), webdataset (tar shards <name>-<split>-NNNN.tar; "
        "option webdataset:classes=FILE), or auto: detect it",
    )
    p.add_argument(
        "--grayscale",
        choices=GRAYSCALE_POLICIES,
        default=Options.grayscale,
        help="rgb: convert grayscale and CMYK images to RGB; skip: leave them out (counted)",
    )
    p.add_argument(
        "--image-size",
        type=size_of("HEIGHTxWIDTH"),
        default=Options.image_size,
        metavar="HxW",
        help="reject images (as read, before any --resize) of any other size: HEIGHTxWIDTH, e.g. 64x64",
    )
    p.add_argument(
        "--resize",
        type=size_of("WIDTHxHEIGHT"),
        default=Options.resize,
        metavar="WxH",
        help="make every image WIDTHxHEIGHT (width first, unlike --image-size; e.g. 64x64): an area "
        "average of the image, after libjpeg-turbo's DCT-scaled decode; images already that size are "
        "stored as without --resize. Seed records hold the resized pixels; tf-models and tfds the "
        "resized image encoded at --jpeg-quality. At most "
        f"{_CAP}x{_CAP} pixels in all, the limit every input image is held to",
    )
    p.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        default=Options.resize_mode,
        help="with --resize: squash (the whole image, aspect not kept) or center-crop (the shorter side "
        "to the target, then the centre; boxes are clipped to it)",
    )
    p.add_argument(
        "--shorter-side",
        type=whole_number(0),
        default=Options.shorter_side,
        metavar="N",
        help="scale every image whose shorter side is longer than N down to N, keeping its aspect ratio "
        "(never enlarged; 0: off). Not with --resize",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=Options.format,
        help="seed: decoded pixels (image_raw) and label_one_hot; tf-models: JPEG bytes under the keys of "
        "tensorflow/models' ImageNet converters (image/encoded, image/class/label, ...); tfds: a folder "
        "tfds.builder_from_directory reads (image, label, file_name)",
    )
    p.add_argument(
        "--label-offset",
        type=whole_number(0, 1000),
        default=Options.label_offset,
        help="tf-models: added to every label (1: the 1,001 classes of Model Garden and slim)",
    )
    p.add_argument(
        "--jpeg-quality",
        type=whole_number(1, 100),
        default=Options.jpeg_quality,
        help="tf-models and tfds: quality of the images encoded anew (all but clean RGB JPEGs, which are stored as is)",
    )
    p.add_argument("--shard-size", type=whole_number(1), default=DEFAULT_SHARD_SIZE, help="images per val/test shard")
    p.add_argument(
        "--train-order",
        choices=TRAIN_ORDERS,
        default=MIXED,
        help="mixed: every train shard mixes the classes (files ordered by a hash of their path); "
        "per-class: one shard per class, in file order",
    )
    p.add_argument(
        "--train-shards",
        type=whole_number(0),
        default=0,
        metavar="N",
        help="mixed train shards (0: about 1,000 images each)",
    )
    p.add_argument(
        "--max-reject-fraction",
        type=_fraction,
        default=DEFAULT_MAX_REJECT_FRACTION,
        help="fail, after writing rejects.tsv, when a larger share of inputs is rejected",
    )
    p.add_argument("--workers", type=whole_number(0), default=0, help=workers_help)
    p.add_argument(
        "--take-over-lease",
        action="store_true",
        help="gs://, s3:// outputs: take over the lease of another run that holds the output, when that run is "
        "known to be dead (an expired lease is taken over anyway)",
    )


class ParameterError(ValueError):
    """A pipeline parameter the command line would refuse: the plan step fails with the command line's message."""


def check_parameters(values: dict) -> dict:
    """``values`` (a pipeline's parameters by name: grayscale, image_size, resize, format, workers...)
    each checked and converted by the parser of its command-line option (add_conversion_args;
    max_tasks as ``run`` and ``submit`` take it), with the same message, then together as options_of
    checks them. Raises ParameterError naming the parameter; names without an option pass as they are."""
    parser = argparse.ArgumentParser(add_help=False)
    add_conversion_args(parser, "")
    parser.add_argument("--max-tasks", type=whole_number(1, MAX_TASKS))
    actions = {a.dest: a for a in parser._actions}
    out = dict(values)
    for name, value in values.items():
        action = actions.get(name)
        if action is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and value.is_integer() and action.type is not _fraction:
            value = int(value)  # (kfp.local hands whole numbers over as floats)
        if action.type is not None:
            try:
                value = action.type(str(value))
            except argparse.ArgumentTypeError as e:
                raise ParameterError(f"{name}: {e}") from None
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(repr(c) for c in action.choices)
            raise ParameterError(f"{name}: invalid choice: {value!r} (choose from {choices})")
        out[name] = value
    fields = {k: out[k] for k in Options.__dataclass_fields__ if k in out}
    try:
        Options(**fields)
    except ValueError as e:
        raise ParameterError(str(e)) from None
    return out


def options_of(args) -> Options:
    """The conversion options of a command line; a combination that does not go together exits 2."""
    try:
        options = Options(
            grayscale=args.grayscale,
            image_size=args.image_size,
            format=args.format,
            label_offset=args.label_offset,
            jpeg_quality=args.jpeg_quality,
            resize=args.resize,
            resize_mode=args.resize_mode,
            shorter_side=args.shorter_side,
        )
        check_file_names(args.format, args.data)  # (tfds: file names made of the dataset folder's)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return options
