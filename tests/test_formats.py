"""The tf-models and tfds formats on a sample with every kind of input, read back with TensorFlow's parser
(tf-models, the Model Garden feature spec), load(), verify and the report; the JPEG checks themselves."""

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import tensorflow as tf
from PIL import Image

import imagenet_tfrecords
from imagenet_tfrecords.image import BadImage, check_jpeg, jpeg_coding
from imagenet_tfrecords.reader import verify

from .conftest import run_cli

CLEAN, CONVERTED = "clean", "converted"
# The feature spec of tensorflow/models' ImageNet input (official/vision classification decoder and slim).
MODEL_GARDEN_SPEC = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/channels": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/colorspace": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def _jpeg(pixels: np.ndarray, mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _smooth(h: int, w: int) -> np.ndarray:
    """Smooth RGB gradients, which JPEG keeps well (noise would lose most of its chroma at 4:2:0)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w) + 64]).astype(np.uint8)


def _segment(data: bytes, marker: int) -> int:
    """The offset of the first segment with ``marker`` in a JPEG."""
    i = 2
    while data[i + 1] != marker:
        i += 2 + (data[i + 2] << 8 | data[i + 3])
    return i


def damaged(good: bytes) -> dict[str, bytes]:
    """Files that must be rejects in every format: truncated, a bit flipped in a header, garbage."""
    sof, dht = _segment(good, 0xC0), _segment(good, 0xC4)
    precision = bytearray(good)
    precision[sof + 4] ^= 0x01  # 8-bit samples become 9-bit
    table = bytearray(good)
    table[dht + 5] ^= 0x80  # the count of 1-bit Huffman codes
    return {
        "truncated.JPEG": good[: len(good) * 6 // 10],
        "flipped-precision.JPEG": bytes(precision),
        "flipped-huffman.JPEG": bytes(table),
        "garbage.JPEG": bytes(range(256)) * 4,
    }


@pytest.fixture(scope="module")
def mixed(sample_dir, tmp_path_factory) -> Path:
    """The sample dataset plus, in its first class, a progressive and a CMYK JPEG, an RGBA PNG named
    .JPEG and the damaged files (the sample's own grayscale JPEGs are there already)."""
    d = tmp_path_factory.mktemp("mixed") / "data"
    shutil.copytree(sample_dir, d)
    images = sorted((d / "train").iterdir())[0] / "images"
    pixels = _smooth(48, 40)
    (images / "extra_progressive.JPEG").write_bytes(_jpeg(pixels, progressive=True))
    (images / "extra_cmyk.JPEG").write_bytes(_jpeg(pixels, "CMYK"))
    buf = io.BytesIO()
    Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(buf, format="PNG")
    (images / "extra_png.JPEG").write_bytes(buf.getvalue())
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)  # cut at 60%: in the scan
    for name, data in damaged(_jpeg(noise)).items():
        (images / f"bad_{name}").write_bytes(data)
    return d


def _convert(data: Path, out: Path, *args) -> Path:
    run_cli("convert", "--data", data, "--output", out, "--workers", "2", "--max-reject-fraction", "1", *args)
    return out


@pytest.fixture(scope="module")
def seed(mixed, tmp_path_factory) -> Path:
    return _convert(mixed, tmp_path_factory.mktemp("seed") / "out")


@pytest.fixture(scope="module")
def tf_models(mixed, tmp_path_factory) -> Path:
    return _convert(mixed, tmp_path_factory.mktemp("tf-models") / "out", "--format", "tf-models", "--label-offset", "1")


def _info(out: Path, name="dataset_info.json") -> dict:
    return json.loads((out / name).read_text())


def _model_garden_records(out: Path) -> list[dict]:
    files = sorted(str(f) for f in out.glob("*/*.tfrecord"))
    return [
        {k: v.numpy() for k, v in tf.io.parse_single_example(raw, MODEL_GARDEN_SPEC).items()}
        for raw in tf.data.TFRecordDataset(files)
    ]


def _kind(data: bytes) -> str:
    return CLEAN if data.startswith(b"\xff\xd8") and jpeg_coding(data) == "plain" else CONVERTED


def test_tf_models_records_read_with_the_model_garden_spec(mixed, tf_models):
    labels = [line.split("\t") for line in (tf_models / "labels.txt").read_text().splitlines()]
    records = _model_garden_records(tf_models)
    kinds = Counter()
    for r in records:
        path = r["image/filename"].decode()
        source = (mixed / path).read_bytes()
        image = tf.io.decode_jpeg(r["image/encoded"], channels=3).numpy()
        assert (r["image/height"], r["image/width"], r["image/channels"]) == image.shape
        assert (r["image/format"], r["image/colorspace"]) == (b"JPEG", b"RGB")
        kind = _kind(source)
        kinds[kind] += 1
        if kind == CLEAN:  # stored as read: the very file, so the very pixels
            assert r["image/encoded"] == source
        else:  # decoded to RGB and JPEG-encoded anew (quality 95): close to the source's RGB pixels
            original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"), dtype=np.int16)
            assert original.shape == image.shape
            assert np.abs(original - image).mean() < 6, path
        label = int(r["image/class/label"])
        if path.startswith("test/"):
            assert (label, r["image/class/synset"], r["image/class/text"]) == (-1, b"", b"")
        else:  # --label-offset 1: label 0 is Model Garden's background class
            wnid, words = labels[label - 1]
            assert (r["image/class/synset"].decode(), r["image/class/text"].decode()) == (wnid, words)
            assert path.startswith(f"train/{wnid}/") or path.startswith("val/")
    info = _info(tf_models)
    reencoded = sum(sum(s["reencoded"].values()) for s in info["splits"].values())
    assert kinds[CONVERTED] == reencoded >= 4  # the grayscale JPEGs, CMYK and the PNG
    assert kinds[CLEAN] > 100
    assert info["splits"]["train"]["reencoded"]["cmyk"] == 1
    assert info["format"] == "tf-models" and "image/encoded" in info["features"]


def test_every_input_is_a_record_or_a_reject_in_each_format(mixed, seed, tf_models):
    for out in (seed, tf_models):
        rejects = dict(line.split("\t") for line in (out / "rejects.tsv").read_text().splitlines())
        bad = {p.rsplit("/", 1)[-1].removeprefix("bad_"): r for p, r in rejects.items()}
        assert set(bad) == {"truncated.JPEG", "flipped-precision.JPEG", "flipped-huffman.JPEG", "garbage.JPEG"}
        assert "Premature end" in bad["truncated.JPEG"] and "not an image" in bad["garbage.JPEG"]
        info = _info(out)
        for s in info["splits"].values():
            assert s["found"] == s["num_records"] + s["rejected"] + s["skipped"]
    seed_info, tf_info = _info(seed), _info(tf_models)
    for split in ("train", "val", "test"):
        assert seed_info["splits"][split]["num_records"] == tf_info["splits"][split]["num_records"]
        assert seed_info["splits"][split]["converted"] == tf_info["splits"][split]["converted"]


def test_tf_models_holds_at_most_a_quarter_of_the_seed_bytes(seed, tf_models):
    seed_bytes = sum(s["num_bytes"] for s in _info(seed)["splits"].values())
    tf_bytes = sum(s["num_bytes"] for s in _info(tf_models)["splits"].values())
    assert tf_bytes <= 0.25 * seed_bytes


def test_load_decodes_the_same_pixels_as_the_seed_format(seed, tf_models):
    """Clean JPEGs decode to the pixels the seed format stores (libjpeg-turbo's accurate DCT in both)."""
    for split in ("val", "test"):
        plain = Counter(
            (img.numpy().tobytes(), int(label)) for img, label in imagenet_tfrecords.load(seed, split, shuffle=False)
        )
        shifted = Counter(
            (img.numpy().tobytes(), int(label) - 1 if label >= 0 else -1)
            for img, label in imagenet_tfrecords.load(tf_models, split, shuffle=False)
        )
        same = sum((plain & shifted).values())
        assert same >= sum(plain.values()) - 3  # all but the few re-encoded grayscale images
    ds = imagenet_tfrecords.load(tf_models, "train", one_hot=True, seed=0)
    image_spec, label_spec = ds.element_spec
    assert image_spec.dtype == tf.uint8 and label_spec.shape.as_list() == [_info(tf_models)["num_classes"] + 1]
    for _, one_hot in ds.take(5):
        assert int(tf.reduce_sum(one_hot)) == 1 and int(tf.argmax(one_hot)) >= 1


def test_verify_and_report_understand_tf_models(tf_models, tmp_path):
    counts = verify(str(tf_models))
    assert counts == {k: v["num_records"] for k, v in _info(tf_models)["splits"].items()}
    assert verify(str(tf_models), use_tf=True) == counts
    run_cli("report", tf_models, "--html", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "cannot read samples" not in html and html.count("<figure") >= 20


def test_a_format_change_reconverts_and_a_rerun_keeps(mixed, seed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(seed, out)
    p = _convert(mixed, out, "--format", "tf-models")
    assert _model_garden_records(p)[0]["image/encoded"].startswith(b"\xff\xd8")
    again = run_cli("convert", "--data", mixed, "--output", out, "--format", "tf-models", "--max-reject-fraction", "1")
    assert "nothing to convert" in again.stdout
    verify(str(out), use_tf=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--label-offset", "1"], "label_offset applies to the tf-models format only"),
        (["--format", "tfds", "--label-offset", "1"], "label_offset applies to the tf-models format only"),
        (["--format", "tf-models", "--jpeg-quality", "0"], "--jpeg-quality"),
        (["--format", "tf-record"], "--format"),
    ],
)
def test_bad_format_options_exit_2(sample_dir, tmp_path, args, message):
    p = run_cli("convert", "--data", sample_dir, "--output", tmp_path / "out", *args, check=False)
    assert p.returncode == 2 and message in p.stderr
    assert not (tmp_path / "out").exists()


def test_the_cheap_check_rejects_what_a_full_decode_rejects():
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    good = _jpeg(pixels)
    check_jpeg(good)
    for data in damaged(good).values():
        with pytest.raises(ValueError):
            simplejpeg.decode_jpeg(data, strict=True)  # the full decode rejects it ...
        with pytest.raises(BadImage):  # ... and so does the scaled one
            check_jpeg(data)


def test_jpeg_coding():
    pixels = np.zeros((16, 16, 3), np.uint8)
    assert jpeg_coding(_jpeg(pixels)) == "plain"
    assert jpeg_coding(_jpeg(pixels, progressive=True)) == "plain"
    assert jpeg_coding(_jpeg(pixels, "L")) == "grayscale"
    assert jpeg_coding(_jpeg(pixels, "CMYK")) == "cmyk"
    arithmetic = bytearray(_jpeg(pixels))
    arithmetic[_segment(bytes(arithmetic), 0xC0) + 1] = 0xC9  # SOF9: arithmetic coding
    assert jpeg_coding(bytes(arithmetic)) == "arithmetic"


@pytest.mark.parametrize("progressive", [False, True])
def test_the_cheap_check_rejects_every_bit_flip_a_full_decode_rejects(progressive):
    """Bits flipped all over the entropy-coded data: whatever the full RGB decode rejects, the
    scaled gray check rejects too (it still entropy-decodes every block of every component)."""
    noise = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    good = _jpeg(noise, progressive=progressive)
    rejected = 0
    for pos in range(good.index(b"\xff\xda") + 14, len(good) - 2, 5):
        flipped = bytearray(good)
        flipped[pos] ^= 0x10
        try:
            simplejpeg.decode_jpeg(bytes(flipped), colorspace="RGB", strict=True)
        except ValueError:
            rejected += 1
            with pytest.raises(BadImage):
                check_jpeg(bytes(flipped))
    assert rejected > 50
