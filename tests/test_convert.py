"""Conversion end to end on real JPEGs, read back with TensorFlow's reader."""

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from imagenet_tfrecords.convert import Options
from imagenet_tfrecords.tasks import convert_dataset

from .conftest import read_split, run_cli


def _convert(data, out, workers=2, **options):
    return convert_dataset(str(data), str(out), Options(**options), shard_size=8, workers=workers, train_shards=6)


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.tfrecord"))
    }


@pytest.fixture(scope="module")
def converted(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    plan, info = _convert(sample_dir, out)
    return sample_dir, out, plan, info


def test_records_match_an_independent_decode_of_the_source(converted):
    data, out, plan, _ = converted
    wnids = list(plan.wnids)
    assert wnids == sorted(wnids)
    annotations = dict(line.split("\t")[:2] for line in (data / "val" / "val_annotations.txt").read_text().splitlines())
    seen = {"train": 0, "val": 0, "test": 0}
    for split in seen:
        for r in read_split(out, split):
            seen[split] += 1
            path = r["filename"].decode()
            expected = np.asarray(Image.open(data / path).convert("RGB"))
            h, w, c = (int(r["height"]), int(r["width"]), int(r["channel"]))
            assert (h, w, c) == expected.shape == (64, 64, 3)
            pixels = np.frombuffer(r["image_raw"], np.uint8).reshape(h, w, c)
            np.testing.assert_array_equal(pixels, expected, err_msg=path)
            one_hot = np.frombuffer(r["label_one_hot"], np.uint8)
            assert one_hot.shape == (len(wnids),)
            if split == "test":
                assert r["label"] == -1 and not one_hot.any() and r["wnid"] == b""
                continue
            wnid = path.split("/")[1] if split == "train" else annotations[path.rsplit("/", 1)[1]]
            assert r["wnid"].decode() == wnid
            assert r["label"] == wnids.index(wnid)
            assert one_hot.sum() == 1 and one_hot[r["label"]] == 1
    assert seen == {"train": 6 * 12, "val": 30, "test": 20}


def test_reports(converted):
    _, out, plan, info = converted
    assert (out / "sizes.txt").read_text() == "train,72\nval,30\ntest,20"
    labels = (out / "labels.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in labels] == list(plan.wnids)
    on_disk = json.loads((out / "dataset_info.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    for split, s in on_disk["splits"].items():
        assert s["found"] == s["num_records"] + s["rejected"] + s["skipped"]
        for shard in s["shards"]:
            assert (out / shard["file"]).stat().st_size == shard["bytes"]
            assert len(read_split(out, split)) == s["num_records"]
    # six mixed train shards, as asked
    train = on_disk["splits"]["train"]["shards"]
    assert [s["file"] for s in train] == [f"train/train-{i:05d}-of-00006.tfrecord" for i in range(6)]
    assert sum(s["converted"].get("grayscale", 0) for s in on_disk["splits"].values()) == (72 + 30 + 20) // 25
    assert (out / "rejects.tsv").read_text() == ""


def test_output_is_deterministic_whatever_the_workers(converted, tmp_path):
    data, out, _, _ = converted
    _convert(data, tmp_path / "one", workers=1)
    assert _digest(tmp_path / "one") == _digest(out)


def test_grayscale_skip_reproduces_the_notebook(sample_dir, tmp_path):
    _, info = _convert(sample_dir, tmp_path, grayscale="skip")
    skipped = sum(s["skipped"] for s in info["splits"].values())
    assert skipped == (72 + 30 + 20) // 25
    assert all(r["reason"].startswith("grayscale image") for r in info["skipped"])
    total = sum(s["num_records"] for s in info["splits"].values())
    assert total == 122 - skipped
    assert (tmp_path / "sizes.txt").read_text() == "\n".join(
        f"{k},{v['num_records']}" for k, v in info["splits"].items()
    )


def test_cmyk_and_png_named_jpeg_become_rgb_records(sample_copy, tmp_path):
    images = sample_copy / "train" / sorted(p.name for p in (sample_copy / "train").iterdir())[0] / "images"
    first = sorted(images.iterdir())
    rgb = np.asarray(Image.open(first[0]).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    first[0].write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    first[1].write_bytes(buf.getvalue())
    _, info = _convert(sample_copy, tmp_path / "out")  # (not tmp_path itself: it holds the data, not ours)
    assert info["splits"]["train"]["converted"]["cmyk"] == 1
    assert info["splits"]["train"]["converted"]["png-rgb"] == 1
    records = {r["filename"].decode(): r for r in read_split(tmp_path / "out", "train")}
    png = records[first[1].relative_to(sample_copy).as_posix()]
    np.testing.assert_array_equal(np.frombuffer(png["image_raw"], np.uint8).reshape(64, 64, 3), rgb)
    assert records[first[0].relative_to(sample_copy).as_posix()]["channel"] == 3


def test_cli_convert_and_verify(sample_dir, tmp_path):
    p = run_cli("convert", "--data", sample_dir, "--output", tmp_path, "--workers", "2", "--train-shards", "5")
    assert "train: 72 records in 5 shards" in p.stdout
    p = run_cli("verify", tmp_path)
    assert p.stdout.startswith("train,72\nval,30\ntest,20\n")
    (tmp_path / "sizes.txt").write_text("train,71\nval,30\ntest,20")
    p = run_cli("verify", tmp_path, check=False)
    assert p.returncode == 4
    assert "train: 72 records read, sizes.txt says 71" in p.stderr


def test_the_documented_schema_table_is_the_schema():
    import re

    from imagenet_tfrecords.records import SCHEMA

    from .conftest import ROOT

    text = (ROOT / "docs" / "formats.md").read_text().split("## The seed record schema", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.+?) \|$", text, re.M)
    assert {key: (kind, meaning) for key, kind, meaning in rows} == SCHEMA
    assert [key for key, _, _ in rows] == list(SCHEMA)
