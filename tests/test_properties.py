"""Property-based tests: the metadata parsers and the record encoding round trip what was generated.

Metadata files are written with random line ends (LF, CRLF, CR), an optional UTF-8 BOM and
blank lines, and parsed back with layouts/tinyimagenet.py. Records are encoded with records.encode_example and
framed with records.frame, then read back with TensorFlow's own TFRecordDataset and
parse_single_example(feature_spec()), and compared with tf.train.Example built by TensorFlow.
"""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagenet_tfrecords import recordio, records
from imagenet_tfrecords.fs import Entry, Location
from imagenet_tfrecords.layouts.tinyimagenet import parse_val_annotations, parse_wnids, parse_words
from imagenet_tfrecords.listing import listed_rows, pack, train_shards
from imagenet_tfrecords.plan import MIXED, PER_CLASS, Source

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = st.integers(-(2**63), 2**63 - 1)

# Any text a UTF-8 file can hold, except line ends (\n, \r) and the BOM character.
_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\n\r\ufeff")
wnid = st.text(_chars, min_size=1, max_size=12).filter(lambda s: re.fullmatch(r"[^\s/\\]+", s))
words_text = st.text(_chars, min_size=1, max_size=40).filter(lambda s: s.strip())
file_name = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\t\n\r\ufeff"), min_size=1).filter(
    lambda s: s == s.strip()
)


@st.composite
def text_file(draw, lines: list[str]) -> tuple[bytes, list[int]]:
    """``lines`` joined with random line ends, blank lines, BOM; and each line's 1-based number."""
    out, numbers = [], []
    for line in lines:
        for _ in range(draw(st.integers(0, 2))):
            out.append(draw(st.sampled_from(["", " ", "\t", " \t "])))
        out.append(line)
        numbers.append(len(out))
    out += [""] * draw(st.integers(0, 3))  # trailing empty lines
    style = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))  # mixed: LF and CRLF
    ends = [draw(st.sampled_from(["\n", "\r\n"])) if style == "mixed" else style for _ in out]
    text = "".join(line + end for line, end in zip(out, ends, strict=True))
    if not draw(st.booleans()) and text.endswith(("\n", "\r")):
        text = text.rstrip("\r\n")  # no final line end, like the real words.txt
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + text.encode(), numbers


def _location(directory: str, name: str, data: bytes) -> Location:
    path = Path(directory) / name
    path.write_bytes(data)
    return Location.of(str(path))


@SETTINGS
@given(data=st.data(), ids=st.lists(wnid, min_size=1, max_size=20, unique=True))
def test_wnids_round_trip(data, ids):
    content, numbers = data.draw(text_file(ids))
    with tempfile.TemporaryDirectory() as d:
        assert parse_wnids(_location(d, "wnids.txt", content)) == list(zip(ids, numbers, strict=True))


@SETTINGS
@given(
    data=st.data(),
    entries=st.dictionaries(wnid, words_text, min_size=1, max_size=20),
    padding=st.sampled_from(["", " ", "\t", "  "]),
)
def test_words_round_trip(data, entries, padding):
    wanted = set(data.draw(st.lists(st.sampled_from(sorted(entries)), unique=True)))
    lines = [f"{w}\t{padding}{text}{padding}" for w, text in entries.items()]
    content, _ = data.draw(text_file(lines))
    with tempfile.TemporaryDirectory() as d:
        parsed = parse_words(_location(d, "words.txt", content), wanted)
    assert parsed == {w: entries[w].strip() for w in wanted}


@SETTINGS
@given(
    data=st.data(),
    known=st.lists(wnid, min_size=1, max_size=8, unique=True),
    unknown=st.lists(wnid, max_size=3, unique=True),
    files=st.lists(file_name, min_size=1, max_size=25, unique=True),
)
def test_val_annotations_round_trip(data, known, unknown, files):
    unknown = [w for w in unknown if w not in known]
    labels = {w: i for i, w in enumerate(sorted(known))}
    classes = st.sampled_from(known + unknown)
    box = st.lists(st.integers(0, 10_000).map(str), min_size=4, max_size=4)
    rows = [(f, data.draw(classes), data.draw(st.one_of(st.just([]), box))) for f in files]
    lines = ["\t".join([f, w, *b]) for f, w, b in rows]
    # some exact duplicates (harmless) and some contradictions (rejected) at the end
    dupes = data.draw(st.lists(st.sampled_from(range(len(rows))), unique=True, max_size=3))
    lines += [lines[i] for i in dupes]
    others = [i for i in range(len(rows)) if i not in dupes]
    conflicts = data.draw(st.lists(st.sampled_from(others), unique=True, max_size=3)) if others else []
    other_class = {i: next(w for w in ["n0", "n1"] if w != rows[i][1]) for i in conflicts}
    lines += [f"{rows[i][0]}\t{other_class[i]}" for i in conflicts]
    content, numbers = data.draw(text_file(lines))
    with tempfile.TemporaryDirectory() as d:
        loc = _location(d, "val_annotations.txt", content)
        parsed, warnings = parse_val_annotations(loc, labels)
    expected = {}
    for n, (f, w, _) in zip(numbers, rows, strict=False):
        if w in labels:
            expected[f] = (labels[w], None)
        else:
            expected[f] = (None, f"val_annotations.txt line {n} names unknown class {w}")
    for k, i in enumerate(conflicts):
        n = numbers[len(rows) + len(dupes) + k]
        expected[rows[i][0]] = (
            None,
            f"conflicting annotations in val_annotations.txt: line {numbers[i]} says {rows[i][1]}, "
            f"line {n} says {other_class[i]}",
        )
    assert parsed == expected
    assert len(warnings) == len(dupes)
    for k, i in enumerate(dupes):
        assert warnings[k] == (
            f"{loc.url}:{numbers[len(rows) + k]}: duplicate of line {numbers[i]} ({rows[i][0]} {rows[i][1]})"
        )


# Byte strings of every size class of a protobuf length varint: 1 byte (< 128), 2 bytes
# (< 16384) and 3 bytes; large ones come from a seeded generator (hypothesis draws stay small).
def _sized_bytes(max_small: int = 300):
    large = st.tuples(st.integers(16_384, 100_000), st.integers(0, 2**32 - 1)).map(
        lambda t: np.random.default_rng(t[1]).bytes(t[0])
    )
    medium = st.tuples(st.integers(128, 16_383), st.integers(0, 2**32 - 1)).map(
        lambda t: np.random.default_rng(t[1]).bytes(t[0])
    )
    return st.one_of(st.binary(max_size=max_small), medium, large)


@st.composite
def example(draw) -> dict:
    num_classes = draw(st.integers(0, 1100))
    label = draw(st.one_of(st.just(-1), st.integers(0, max(num_classes - 1, 0)), INT64))
    one_hot = records.one_hot(label, num_classes) if 0 <= label < num_classes or label == -1 else b"\x01" * num_classes
    dims = st.one_of(st.integers(0, 4096), INT64)
    return {
        "height": draw(dims),
        "width": draw(dims),
        "channel": draw(st.one_of(st.sampled_from([0, 1, 3, 4]), INT64)),
        "label": label,
        "label_one_hot": one_hot,
        "image_raw": draw(_sized_bytes()),
        "filename": draw(st.one_of(st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")))),
        "wnid": draw(st.binary(max_size=20)),
    }


def _tf_example(r: dict):
    import tensorflow as tf

    feature = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[r[k]])) for k in records.INT_FEATURES}
    feature.update({k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[r[k]])) for k in records.BYTES_FEATURES})
    return tf.train.Example(features=tf.train.Features(feature=feature))


@SETTINGS
@given(batch=st.lists(example(), min_size=1, max_size=4))
def test_records_read_back_with_tensorflow(batch):
    import tensorflow as tf

    encoded = [records.encode_example(**r) for r in batch]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "shard.tfrecord"
        path.write_bytes(b"".join(records.frame(e) for e in encoded))
        with open(path, "rb") as f:
            assert list(recordio.iter_records(f)) == encoded
        spec = records.feature_spec()
        read = list(tf.data.TFRecordDataset(str(path)))
    assert len(read) == len(batch)
    for raw, r, e in zip(read, batch, encoded, strict=True):
        assert raw.numpy() == e
        parsed = {k: v.numpy() for k, v in tf.io.parse_single_example(raw, spec).items()}
        assert parsed == r
        assert tf.train.Example.FromString(e) == _tf_example(r)  # the same message TensorFlow would build


@SETTINGS
@given(label=st.integers(-1, 999), num_classes=st.integers(1, 1000))
def test_one_hot(label, num_classes):
    label = min(label, num_classes - 1)
    v = np.frombuffer(records.one_hot(label, num_classes), np.uint8)
    assert v.shape == (num_classes,)
    assert v.sum() == (0 if label == -1 else 1)
    if label >= 0:
        assert v[label] == 1


box = st.tuples(*[st.floats(0, 500, allow_nan=False)] * 4, st.integers(0, 999))
source = st.builds(
    Source,
    name=file_name,
    label=st.none() | st.integers(-1, 999),
    reason=st.none() | st.text(max_size=20),
    span=st.none() | st.tuples(st.integers(0, 2**40), st.integers(0, 2**30)),
    boxes=st.lists(box, max_size=3).map(tuple),
)


@SETTINGS
@given(st.lists(source, max_size=20, unique_by=lambda s: s.name), st.sampled_from([MIXED, PER_CLASS]))
def test_train_shards_made_from_rows_hold_the_sources_as_listed(sources, order):
    """listing.train_shards writes each shard's JSON from plain rows, not from Source objects: every
    kind of source (rejected, archive member, with boxes) reads back as it was listed."""
    entries = [Entry(s.name, "file", len(s.name), 7) for s in sources]
    rows = listed_rows("train", list(zip(sources, entries, strict=True)), order, 0)
    count = min(3, len(sources)) if order == MIXED else 0  # (more shards than sources is refused)
    train = train_shards("train", [pack([rows], order)], order, count)
    read = [Source.from_json(f) for _, text in train.texts() for f in json.loads(text)["files"]]
    train.close()
    assert sorted(read) == sorted(sources) and len(read) == len(sources)
