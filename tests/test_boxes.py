"""Bounding boxes: the layouts' box files parsed (generated ones and TinyImageNet's real
val_annotations.txt), normalisation, and the box features read back by TensorFlow and by
recordio.parse_example."""

import math
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagenet_tfrecords import boxes, recordio, records
from imagenet_tfrecords.fs import Location
from imagenet_tfrecords.layouts.tinyimagenet import parse_val_annotations, parse_wnids
from imagenet_tfrecords.plan import MetadataError

LABELS = {"n01000000": 0, "n02000000": 1, "n03000000": 2}
HEADER = "ImageId,PredictionString"


def write(tmp_path, name: str, text: str, encoding: str = "utf-8") -> Location:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return Location.of(str(path))


def f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def error_at(loc: Location, line: int):
    """pytest.raises for a MetadataError naming ``loc`` and ``line``."""
    return pytest.raises(MetadataError, match=re.escape(f"{loc.url}:{line}: "))


# TinyImageNet train/<wnid>/<wnid>_boxes.txt


def test_tinyimagenet_train_boxes_with_bom_crlf_and_blank_lines(tmp_path):
    text = (
        "n02000000_0.JPEG\t0\t10\t63\t58\r\n"
        "\r\n"
        "n02000000_1.JPEG\t5\t6\t7\t8\r\n"
        "n02000000_1.JPEG\t1\t2\t3\t4\r\n"  # a second box of one image
        "n02000000_0.JPEG\t0\t10\t63\t58\r\n"  # a repeated line adds no box
        "  \r\n"
    )
    loc = write(tmp_path, "n02000000_boxes.txt", text, "utf-8-sig")
    parsed = boxes.parse_tinyimagenet_train(loc, "n02000000", LABELS)
    assert parsed.boxes == {
        "n02000000_0.JPEG": ((0.0, 10.0, 63.0, 58.0, 1),),
        "n02000000_1.JPEG": ((5.0, 6.0, 7.0, 8.0, 1), (1.0, 2.0, 3.0, 4.0, 1)),
    }
    assert parsed.unknown == {}


def test_tinyimagenet_train_boxes_of_a_class_not_in_the_dataset_are_counted(tmp_path):
    loc = write(tmp_path, "n09000000_boxes.txt", "a.JPEG\t0\t0\t5\t5\nb.JPEG\t1\t1\t2\t2\nb.JPEG\t1\t1\t3\t3\n")
    parsed = boxes.parse_tinyimagenet_train(loc, "n09000000", LABELS)
    assert parsed.boxes == {"a.JPEG": (), "b.JPEG": ()}
    assert parsed.unknown == {"a.JPEG": 1, "b.JPEG": 2}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("a.JPEG\t0\t0\t5", "expected 'file<TAB>x0<TAB>y0<TAB>x1<TAB>y1'"),
        ("a.JPEG\t0\t0\t5\t5\t9", "expected 'file<TAB>x0<TAB>y0<TAB>x1<TAB>y1'"),
        ("a.JPEG 0 0 5 5", "expected 'file<TAB>x0<TAB>y0<TAB>x1<TAB>y1'"),
        ("\t0\t0\t5\t5", "expected 'file<TAB>x0<TAB>y0<TAB>x1<TAB>y1'"),
        ("a.JPEG\t0\tten\t5\t5", "box coordinate 'ten' is not a number"),
        ("a.JPEG\t0\t1_0\t5\t5", "box coordinate '1_0' is not a number"),
        ("a.JPEG\t0\t\t5\t5", "box coordinate '' is not a number"),
    ],
)
def test_tinyimagenet_train_malformed_line_names_file_and_line(tmp_path, line, reason):
    loc = write(tmp_path, "n01000000_boxes.txt", f"b.JPEG\t1\t1\t2\t2\n\n{line}\n")
    with error_at(loc, 3) as e:
        boxes.parse_tinyimagenet_train(loc, "n01000000", LABELS)
    assert reason in str(e.value)


def test_missing_box_file_is_a_metadata_error(tmp_path):
    loc = Location.of(str(tmp_path / "n01000000_boxes.txt"))
    with pytest.raises(MetadataError, match=re.escape(f"{loc.url}: file not found")):
        boxes.parse_tinyimagenet_train(loc, "n01000000", LABELS)


# TinyImageNet val/val_annotations.txt


def test_tinyimagenet_val_boxes(tmp_path):
    text = (
        "val_0.JPEG\tn03000000\t0\t32\t44\t62\n"
        "val_1.JPEG\tn01000000\n"  # no box: the image has none
        "val_2.JPEG\tn07777777\t1\t1\t9\t9\n"  # unknown class: the box is dropped and counted
        "val_3.JPEG\tn02000000\t1.5\t2e1\t-3\tnan\n"  # numbers as float() reads them; normalise judges them
    )
    parsed = boxes.parse_tinyimagenet_val(write(tmp_path, "val_annotations.txt", text), LABELS)
    assert list(parsed.boxes) == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG", "val_3.JPEG"]
    assert parsed.boxes["val_0.JPEG"] == ((0.0, 32.0, 44.0, 62.0, 2),)
    assert parsed.boxes["val_1.JPEG"] == parsed.boxes["val_2.JPEG"] == ()
    (x0, y0, x1, y1, label), *_ = parsed.boxes["val_3.JPEG"]
    assert (x0, y0, x1, label) == (1.5, 20.0, -3.0, 1) and math.isnan(y1)
    assert parsed.unknown == {"val_2.JPEG": 1}


@pytest.mark.parametrize(
    "line",
    ["val_9.JPEG\tn01000000\t0\t0\t5", "val_9.JPEG", "\tn01000000\t0\t0\t5\t5", "val_9.JPEG\tn01000000\t0\tx\t5\t5"],
)
def test_tinyimagenet_val_malformed_line_names_file_and_line(tmp_path, line):
    loc = write(tmp_path, "val_annotations.txt", f"val_0.JPEG\tn01000000\t0\t0\t5\t5\r\n{line}\r\n")
    with error_at(loc, 2):
        boxes.parse_tinyimagenet_val(loc, LABELS)


def test_real_val_annotations(meta_dir):
    """The real file: 10,000 images, one box each, inclusive pixel indices 0..63 of 64x64 images."""
    wnids = sorted(w for w, _ in parse_wnids(Location.of(str(meta_dir / "wnids.txt"))))
    labels = {w: i for i, w in enumerate(wnids)}
    loc = Location.of(str(meta_dir / "val" / "val_annotations.txt"))
    parsed = boxes.parse_tinyimagenet_val(loc, labels)
    assert len(parsed.boxes) == 10_000 and parsed.unknown == {}
    assert all(len(b) == 1 for b in parsed.boxes.values())
    annotations, _ = parse_val_annotations(loc, labels)  # each box's label is its image's label
    assert {f: b[0][4] for f, b in parsed.boxes.items()} == {f: label for f, (label, _) in annotations.items()}
    coords = [c for (b,) in parsed.boxes.values() for c in b[:4]]
    assert min(coords) == 0 and max(coords) == 63
    counts = [records.normalise(b, 64, 64, inclusive=True)[1:] for b in parsed.boxes.values()]
    assert sum(c for c, _ in counts) == 0 and sum(d for _, d in counts) == 0
    # val_243.JPEG n02056570 63 48 63 54: a one-pixel column on the right border, kept
    (box,), _, _ = records.normalise(parsed.boxes["val_243.JPEG"], 64, 64, inclusive=True)
    assert box == (63 / 64, 48 / 64, 1.0, 55 / 64, labels["n02056570"])
    # read as edges, the 41 one-pixel boxes would be empty
    dropped_as_edges = sum(records.normalise(b, 64, 64, inclusive=False)[2] for b in parsed.boxes.values())
    assert dropped_as_edges == 41


# ImageNet LOC_*_solution.csv


def test_imagenet_val_solution(tmp_path):
    text = (
        f"{HEADER}\r\n"
        "ILSVRC2012_val_00000001,n03000000 255 142 454 329 n03000000 44 21 322 295 \r\n"
        "\r\n"
        "ILSVRC2012_val_00000002,n01000000 0 0 5 5 n07777777 1 1 4 4 n07777777 1 1 4 4 n07777777 2 2 4 4\r\n"
        "ILSVRC2012_val_00000003,n01000000 0 0 5 5 n02000000 1 1 4 4\r\n"  # two classes: both boxes kept
        "ILSVRC2012_val_00000001,n03000000 44 21 322 295\r\n"  # a repeated box adds nothing
    )
    parsed = boxes.parse_imagenet_val(write(tmp_path, "LOC_val_solution.csv", text, "utf-8-sig"), LABELS)
    assert parsed.boxes == {
        "ILSVRC2012_val_00000001.JPEG": ((255.0, 142.0, 454.0, 329.0, 2), (44.0, 21.0, 322.0, 295.0, 2)),
        "ILSVRC2012_val_00000002.JPEG": ((0.0, 0.0, 5.0, 5.0, 0),),
        "ILSVRC2012_val_00000003.JPEG": ((0.0, 0.0, 5.0, 5.0, 0), (1.0, 1.0, 4.0, 4.0, 1)),
    }
    assert parsed.unknown == {"ILSVRC2012_val_00000002.JPEG": 2}


def test_imagenet_train_solution(tmp_path):
    text = (
        f"{HEADER}\n"
        "n01000000_10026,n01000000 10 20 30 40\n"
        "n09999999_1,n09999999 1 2 3 4\n"  # a class folder not in the dataset: not an input, skipped
        "n02000000_7,n02000000 1 2 3 4 n07777777 1 2 3 4\n"
    )
    parsed = boxes.parse_imagenet_train(write(tmp_path, "LOC_train_solution.csv", text), LABELS)
    assert parsed.boxes == {
        "n01000000_10026.JPEG": ((10.0, 20.0, 30.0, 40.0, 0),),
        "n02000000_7.JPEG": ((1.0, 2.0, 3.0, 4.0, 1),),
    }
    assert parsed.unknown == {"n02000000_7.JPEG": 1}


@pytest.mark.parametrize("batch", [1, 2, 50_000])
def test_the_train_solution_spilled_by_class_gives_the_whole_files_boxes(tmp_path, batch, monkeypatch):
    """TrainSolution (one class's boxes at a time, spilled in batches of ``batch`` lines) against
    parse_imagenet_train (the whole file at once), with CRLF, a BOM and a blank line."""
    rows = [f"n0{c}000000_{i},n0{c}000000 {i} {i + 1} {i + 9} {i + 9}" for i in range(5) for c in (1, 2, 3)]
    rows += ["n02000000_9,n02000000 1 2 3 4 n07777777 1 2 3 4", "n09999999_1,n09999999 1 2 3 4", ""]
    loc = write(tmp_path, "LOC_train_solution.csv", "\ufeff" + "\r\n".join([HEADER, *rows]))
    whole = boxes.parse_imagenet_train(loc, LABELS)
    monkeypatch.setattr(boxes.TrainSolution, "BATCH", batch)
    solution = boxes.TrainSolution(loc, LABELS)
    by_class, unknown = {}, {}
    for folder in [*LABELS, "n09999999"]:
        by_class |= solution.of(folder).boxes
        unknown |= solution.of(folder).unknown
    assert by_class == whole.boxes and len(by_class) == 16
    assert unknown == whole.unknown == {"n02000000_9.JPEG": 1}
    solution.close()
    bad = write(tmp_path, "bad.csv", f"{HEADER}\nn01000000_1,n01000000 1 2 3 4\nn09999999_3,n09999999 0 0 five 5\n")
    with pytest.raises(MetadataError, match=re.escape(f"{bad.url}:3: box coordinate 'five' is not a number")):
        boxes.TrainSolution(bad, LABELS)  # a line of a folder that is no class is still checked


@pytest.mark.parametrize(
    ("parse", "line", "reason"),
    [
        (boxes.parse_imagenet_val, "ILSVRC2012_val_00000009 n01000000 0 0 5 5", "expected 'ImageId,wnid x0 y0"),
        (boxes.parse_imagenet_val, "ILSVRC2012_val_00000009,", "expected 'ImageId,wnid x0 y0"),
        (boxes.parse_imagenet_val, "ILSVRC2012_val_00000009,n01000000 0 0 5", "expected 'ImageId,wnid x0 y0"),
        (boxes.parse_imagenet_val, "a/b,n01000000 0 0 5 5", "expected 'ImageId,wnid x0 y0"),
        (boxes.parse_imagenet_val, "ILSVRC2012_val_00000009,n01000000 0 0 5 n02000000", "'n02000000' is not a"),
        (boxes.parse_imagenet_train, "n01000000-3,n01000000 0 0 5 5", "expected a train ImageId '<wnid>_<number>'"),
        (boxes.parse_imagenet_train, "_3,n01000000 0 0 5 5", "expected a train ImageId '<wnid>_<number>'"),
        (boxes.parse_imagenet_train, "n09999999_3,n09999999 0 0 five 5", "'five' is not a number"),
    ],
)
def test_imagenet_malformed_line_names_file_and_line(tmp_path, parse, line, reason):
    good = "n01000000_1,n01000000 0 0 5 5"
    loc = write(tmp_path, "LOC_solution.csv", f"{HEADER}\n{good}\n\n{line}\n")
    with error_at(loc, 4) as e:
        parse(loc, LABELS)
    assert reason in str(e.value)


@pytest.mark.parametrize("text", ["", "ImageId,Prediction\n", "n01000000_1,n01000000 0 0 5 5\n"])
def test_imagenet_solution_needs_its_header(tmp_path, text):
    loc = write(tmp_path, "LOC_val_solution.csv", text)
    with error_at(loc, 1) as e:
        boxes.parse_imagenet_val(loc, LABELS)
    assert f"expected the header {HEADER!r}" in str(e.value)


# normalise


@pytest.mark.parametrize(
    ("box", "inclusive", "expected", "clipped"),
    [
        ((0, 0, 63, 63, 4), True, (0.0, 0.0, 1.0, 1.0, 4), 0),  # the whole image, inclusive indices
        ((0, 0, 64, 64, 4), False, (0.0, 0.0, 1.0, 1.0, 4), 0),  # the whole image, edges
        ((16, 8, 47, 31, 1), True, (0.25, 0.125, 0.75, 0.5, 1), 0),
        ((5, 5, 5, 5, 1), True, (5 / 64, 5 / 64, 6 / 64, 6 / 64, 1), 0),  # one pixel
        ((-8, 16, 31, 70, 2), True, (0.0, 0.25, 0.5, 1.0, 2), 1),  # partly outside: clipped
        ((-0.0, -0.0, 32, 32, 0), False, (0.0, 0.0, 0.5, 0.5, 0), 0),
        ((1, 2, 3, 4, 0), False, (f32(1 / 64), f32(2 / 64), f32(3 / 64), f32(4 / 64), 0), 0),
    ],
)
def test_normalise_keeps(box, inclusive, expected, clipped):
    assert records.normalise([box], 64, 64, inclusive=inclusive) == ((expected,), clipped, 0)


@pytest.mark.parametrize(
    ("box", "inclusive"),
    [
        ((5, 5, 5, 9, 0), False),  # empty: no width as edges
        ((9, 5, 5, 9, 0), True),  # inverted
        ((5, 9, 9, 5, 0), False),  # inverted
        ((70, 70, 90, 90, 0), True),  # wholly outside: empty once clipped
        ((-20, 5, -1, 9, 0), True),  # wholly outside on the left: the last pixel is at -1
        ((float("nan"), 5, 9, 9, 0), True),
        ((0, 0, float("inf"), 9, 0), False),
        ((0, float("-inf"), 9, 9, 0), False),
        ((32, 0, 32.000001, 64, 0), False),  # narrower than float32 can tell from 0.5
    ],
)
def test_normalise_drops(box, inclusive):
    assert records.normalise([box], 64, 64, inclusive=inclusive) == ((), 0, 1)


def test_normalise_keeps_order_and_counts():
    given_boxes = [(0, 0, 9, 9, 0), (9, 9, 0, 0, 1), (-5, 0, 9, 9, 2), (70, 0, 80, 9, 3), (0, 0, 9, 120, 4)]
    kept, clipped, dropped = records.normalise(given_boxes, 100, 50, inclusive=True)
    assert [b[4] for b in kept] == [0, 2, 4] and (clipped, dropped) == (2, 2)
    assert kept[0] == (0.0, 0.0, f32(10 / 50), f32(10 / 100), 0)  # x by the width, y by the height


@pytest.mark.parametrize(("height", "width"), [(0, 64), (64, 0), (-1, 64)])
def test_normalise_needs_an_image_size(height, width):
    with pytest.raises(ValueError, match="image size must be positive"):
        records.normalise([], height, width, inclusive=True)


COORD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-100, 300).map(float),
)
BOX = st.tuples(COORD, COORD, COORD, COORD, st.integers(0, 999))


@settings(max_examples=300, deadline=None)
@given(st.lists(BOX, max_size=6), st.integers(1, 256), st.integers(1, 256), st.booleans())
def test_normalise_invariants(drawn, height, width, inclusive):
    given_boxes = [(*b[:4], i) for i, b in enumerate(drawn)]  # labels number the boxes
    kept, clipped, dropped = records.normalise(given_boxes, height, width, inclusive=inclusive)
    assert len(kept) + dropped == len(given_boxes) and 0 <= clipped <= len(kept)
    for xmin, ymin, xmax, ymax, _ in kept:
        assert 0.0 <= xmin < xmax <= 1.0 and 0.0 <= ymin < ymax <= 1.0
        assert all(f32(v) == v and math.copysign(1.0, v) == 1.0 for v in (xmin, ymin, xmax, ymax))
    assert [b[4] for b in kept] == sorted({b[4] for b in kept})  # the given order, no box twice
    end = 1 if inclusive else 0
    if all(
        x0 >= 0 and x0 + 1 <= x1 + end <= width and y0 >= 0 and y0 + 1 <= y1 + end <= height
        for x0, y0, x1, y1, _ in given_boxes
    ):  # boxes of a pixel or more inside the image: all kept, none clipped
        assert (len(kept), clipped, dropped) == (len(given_boxes), 0, 0)
    assert records.normalise(given_boxes, height, width, inclusive=inclusive) == (kept, clipped, dropped)


@st.composite
def inside(draw):
    """An image size and integral pixel boxes inside it, as inclusive indices."""
    height, width = draw(st.integers(1, 512)), draw(st.integers(1, 512))
    xs, ys = st.integers(0, width - 1), st.integers(0, height - 1)
    drawn = draw(st.lists(st.tuples(xs, ys, xs, ys), max_size=5))
    return height, width, [(min(a, c), min(b, d), max(a, c), max(b, d), i) for i, (a, b, c, d) in enumerate(drawn)]


@settings(max_examples=200, deadline=None)
@given(inside())
def test_boxes_inside_the_image_are_kept_as_they_are(case):
    height, width, given_boxes = case
    kept, clipped, dropped = records.normalise(given_boxes, height, width, inclusive=True)
    assert (clipped, dropped) == (0, 0)
    assert kept == tuple(
        (f32(x0 / width), f32(y0 / height), f32((x1 + 1) / width), f32((y1 + 1) / height), label)
        for x0, y0, x1, y1, label in given_boxes
    )


# box_entries: the features as TensorFlow and recordio.parse_example read them


def record_with(entries: bytes, *, label: int = 1) -> bytes:
    fixed = records.fixed_entries(
        height=4, width=6, channel=3, label=label, label_one_hot=records.one_hot(label, 3), wnid=b"n02000000"
    )
    return b"".join(records.example_parts(fixed + entries, bytes(range(72)), b"val/images/val_0.JPEG"))


def parse_with_tensorflow(record: bytes) -> dict:
    import tensorflow as tf

    spec = records.feature_spec() | {k: tf.io.VarLenFeature(tf.float32) for k in records.FLOAT_KEYS}
    spec[records.LABEL_KEY] = tf.io.VarLenFeature(tf.int64)
    ex = tf.io.parse_single_example(record, spec)
    return {k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy() for k, v in ex.items()}


def test_box_entries_read_back_by_tensorflow_and_parse_example(tmp_path):
    import numpy as np
    import tensorflow as tf

    given_boxes = [(0, 0, 5, 3, 2), (1, 1, 2, 1, 0), (-3, 2, 9, 3, 1), (5, 3, 2, 1, 0), (7, 0, 9, 2, 1)]
    entries, clipped, dropped = records.box_entries(given_boxes, 4, 6, inclusive=True)
    assert (clipped, dropped) == (1, 2)  # (-3..9) clipped; (5,3,2,1) inverted and (7..9) outside dropped
    kept, _, _ = records.normalise(given_boxes, 4, 6, inclusive=True)
    expected = {k: [b[i] for b in kept] for i, k in enumerate((*records.FLOAT_KEYS, records.LABEL_KEY))}
    assert expected[records.LABEL_KEY] == [2, 0, 1]
    record = record_with(entries)
    path = tmp_path / "boxes.tfrecord"
    path.write_bytes(records.frame(record))
    (raw,) = list(tf.data.TFRecordDataset(str(path)))
    ex = parse_with_tensorflow(raw.numpy())
    for key in records.FLOAT_KEYS:
        assert ex[key].dtype == np.float32 and ex[key].tolist() == expected[key]
    assert ex[records.LABEL_KEY].dtype == np.int64 and ex[records.LABEL_KEY].tolist() == expected[records.LABEL_KEY]
    assert ex["label"] == 1 and ex["filename"] == b"val/images/val_0.JPEG"  # the other features intact
    parsed = recordio.parse_example(record)
    assert {k: parsed[k] for k in expected} == expected


def test_no_boxes_give_empty_lists(tmp_path):
    for given_boxes in ([], [(9, 9, 1, 1, 0)]):
        entries, clipped, dropped = records.box_entries(given_boxes, 4, 6, inclusive=False)
        assert (clipped, dropped) == (0, len(given_boxes))
        ex = parse_with_tensorflow(record_with(entries, label=-1))
        assert all(ex[k].size == 0 for k in records.BOX_SCHEMA) and ex["label"] == -1
        parsed = recordio.parse_example(record_with(entries))
        assert all(parsed[k] == [] for k in records.BOX_SCHEMA)


@pytest.mark.parametrize("values", [[], [0.0], [0.25, 1.0, f32(0.1)], [f32(1 / 3)] * 40])
def test_list_entries_are_what_protobuf_writes(values):
    """Our entries, byte for byte, as protobuf serializes a one-feature tf.train.Features."""
    import tensorflow as tf

    def serialized(**feature):
        return tf.train.Features(feature={"k": tf.train.Feature(**feature)}).SerializeToString()

    assert records.float_list_entry("k", values) == serialized(float_list=tf.train.FloatList(value=values))
    labels = [int(v * 1000) for v in values] + ([-1, 2**40] if values else [])
    assert records.int64_list_entry("k", labels) == serialized(int64_list=tf.train.Int64List(value=labels))


def test_box_schema_documented_in_module_docstring():
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `([^`]+)` \| ([^|]+) \| (.+) \|$", records.__doc__, re.MULTILINE)
    }
    assert {k: (kind, text.replace("`", "")) for k, (kind, text) in rows.items()} == records.BOX_SCHEMA
