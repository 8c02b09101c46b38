"""The tfds format read by tensorflow-datasets' own builder_from_directory, and the readers of the project
(load, verify, report, the PyTorch reader) on every format."""

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import imagenet_tfrecords
from imagenet_tfrecords.image import jpeg_coding
from imagenet_tfrecords.reader import VerificationError, verify

from .conftest import run_cli
from .test_formats import mixed  # noqa: F401  (the fixture: the sample with every kind of input)
from .test_object_stores import _url, bucket, download, upload  # noqa: F401  (bucket: gs:// and s3://)

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def outputs(mixed, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    out = {}
    for fmt in ("seed", "tf-models", "tfds"):
        out[fmt] = tmp_path_factory.mktemp(fmt) / "out"
        run_cli("convert", "--data", mixed, "--output", out[fmt], "--format", fmt, "--max-reject-fraction", "1")
    return out


def _source_pixels(data: bytes) -> np.ndarray:
    """An independent decode of a source file: Pillow, to RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_builder_from_directory_reads_every_image(mixed, outputs):  # noqa: F811
    out = outputs["tfds"]
    ours = json.loads((out / "conversion_info.json").read_text())
    builder = tfds.builder_from_directory(str(out))
    label = builder.info.features["label"]
    assert label.names == [line.split("\t")[0] for line in (out / "labels.txt").read_text().splitlines()]
    assert builder.info.supervised_keys is not None
    clean = 0
    for split in ("train", "val", "test"):
        n = 0
        for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            n += 1
            path = ex["file_name"].decode()
            source = (mixed / path).read_bytes()
            expected = _source_pixels(source)
            assert ex["image"].shape == expected.shape and ex["image"].dtype == np.uint8
            if source.startswith(b"\xff\xd8") and jpeg_coding(source) == "plain":
                # stored as read: TFDS decodes the very pixels TensorFlow decodes from the source file
                assert np.array_equal(ex["image"], tf.io.decode_image(source, channels=3).numpy()), path
                assert np.abs(ex["image"].astype(int) - expected).max() <= 4, path  # Pillow: another DCT
                clean += 1
            else:  # grayscale, CMYK, PNG: converted to RGB and re-encoded at quality 95
                assert np.abs(ex["image"].astype(int) - expected).mean() < 6, path
            if split == "test":
                assert ex["label"] == -1
            else:
                wnid = label.int2str(ex["label"])
                assert path.startswith(f"train/{wnid}/") or path.startswith("val/")
        assert n == builder.info.splits[split].num_examples == ours["splits"][split]["num_records"]
    assert clean > 100


def test_tfds_holds_clean_jpegs_as_read(mixed, outputs):  # noqa: F811
    builder = tfds.builder_from_directory(str(outputs["tfds"]))
    raw = builder.as_dataset(split="val", decoders={"image": tfds.decode.SkipDecoding()})
    for ex in tfds.as_numpy(raw):
        source = (mixed / ex["file_name"].decode()).read_bytes()
        assert (ex["image"] == source) == (jpeg_coding(source) == "plain")


def test_tfds_output_layout(outputs):
    out = outputs["tfds"]
    ours = json.loads((out / "conversion_info.json").read_text())
    assert ours["format"] == "tfds"
    shards = [s["file"] for s in ours["splits"]["train"]["shards"]]
    assert all("/" not in f and f.startswith("data-train.tfrecord-") for f in shards)
    assert sorted(p.name for p in out.glob("data-train.tfrecord-*") if not p.name.endswith(".idx")) == shards
    assert (out / (shards[0] + ".idx")).exists()
    assert sorted(p.name for p in (out / "_work").glob("*.json")) == sorted(
        s["file"] + ".json" for split in ours["splits"].values() for s in split["shards"]
    )


def test_verify_report_and_load_understand_tfds(outputs, tmp_path):
    out = outputs["tfds"]
    counts = verify(str(out))
    assert verify(str(out), use_tf=True) == counts
    run_cli("report", out, "--html", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "cannot read samples" not in html and html.count("<figure") >= 20
    seed = Counter(
        (img.numpy().tobytes(), int(label)) for img, label in imagenet_tfrecords.load(outputs["seed"], "val")
    )
    got = Counter((img.numpy().tobytes(), int(label)) for img, label in imagenet_tfrecords.load(out, "val"))
    assert sum((seed & got).values()) >= sum(seed.values()) - 3  # all but re-encoded grayscale images


def test_verify_finds_tfds_metadata_that_disagrees(outputs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(outputs["tfds"], out)
    meta = json.loads((out / "dataset_info.json").read_text())
    meta["splits"][0]["shardLengths"][0] = "999"
    (out / "dataset_info.json").write_text(json.dumps(meta))
    with pytest.raises(VerificationError, match="dataset_info.json \\(TFDS's\\): split train"):
        verify(str(out))
    assert run_cli("verify", out, check=False).returncode == 4


@pytest.mark.parametrize("fmt", ["tf-models", "tfds"])
def test_pytorch_reader_yields_every_record_once(outputs, fmt):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from imagenet_tfrecords.torch import TFRecordImages

    def keys(dataset, workers):
        items = []
        for image, label in DataLoader(dataset, batch_size=None, num_workers=workers):
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[2] == 3
            items.append((image.numpy().tobytes(), int(label)))
        return Counter(items)

    expected = Counter(
        (img.numpy().tobytes(), int(label))
        for img, label in imagenet_tfrecords.load(outputs[fmt], "train", shuffle=False)
    )
    assert keys(TFRecordImages(outputs[fmt], "train"), 2) == expected
    ranks = [keys(TFRecordImages(outputs[fmt], "train", rank=r, world_size=2), 2) for r in (0, 1)]
    assert ranks[0] + ranks[1] == expected  # each record once across the two ranks
    assert abs(ranks[0].total() - ranks[1].total()) <= 1


def test_tfds_bucket_to_bucket_equals_a_local_conversion(sample_dir, bucket, tmp_path):  # noqa: F811
    """gs:// and s3:// (emulator, moto): the same shards, indexes and TFDS metadata as a local
    conversion of a folder of the same name, and TFDS reads the downloaded copy."""
    local_data = tmp_path / "data"
    shutil.copytree(sample_dir, local_data)
    upload(local_data, bucket, "data")
    tfds_args = ("--format", "tfds", "--train-shards", "4", "--shard-size", "10")
    run_cli("convert", "--data", _url(bucket, "data"), "--output", _url(bucket, "out"), *tfds_args)
    run_cli("convert", "--data", local_data, "--output", tmp_path / "local", *tfds_args)
    assert verify(_url(bucket, "out")) == verify(str(tmp_path / "local"))
    got = tmp_path / "got"
    names = download(bucket, "out", got)
    tfds_files = [n for n in names if "/" not in n and n not in ("conversion_info.json", "report.html")]
    assert len(tfds_files) > 20
    for name in tfds_files:  # shards, indexes, TFDS's dataset_info.json, features.json, label names
        assert (got / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    builder = tfds.builder_from_directory(str(got))
    assert sum(1 for _ in builder.as_dataset(split="train")) == builder.info.splits["train"].num_examples > 0


@pytest.mark.slow
def test_local_pipeline_writes_the_same_tfds_folder_as_convert(mixed, outputs, tmp_path):  # noqa: F811
    """format reaches the convert and aggregate steps: kfp.local's run (4 tasks) writes the folder convert
    wrote, TFDS metadata included."""
    out = tmp_path / "run"
    args = ["--max-tasks", "4", "--format", "tfds", "--max-reject-fraction", "1"]
    run_cli("run", "--data", mixed, "--output", out, *args)
    expected = outputs["tfds"]
    files = sorted(p.name for p in expected.iterdir() if p.is_file() and p.name != "report.html")
    assert sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "report.html") == files
    for name in files:
        if name != "conversion_info.json":  # (timings, the run)
            assert (out / name).read_bytes() == (expected / name).read_bytes(), name
    assert tfds.builder_from_directory(str(out)).info.splits["val"].num_examples == 30
