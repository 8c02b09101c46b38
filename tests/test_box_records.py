"""Bounding boxes in the records, end to end: the layouts' box files through a conversion, read
back with TensorFlow's parser (the expected values are worked out here from the files, not by
the converter's own functions)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from .conftest import convert_small_shards
from .test_imagenet_layout import DATA, WNIDS, write_imagenet

BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def read_boxes(folder, *, name_key="filename", size_keys=("height", "width")) -> dict[str, dict]:
    """file name -> {"size": (h, w), "boxes": [(xmin, ymin, xmax, ymax, label), ...]} of every record."""
    spec = {f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32) for k in BOX_KEYS}
    spec["image/object/bbox/label"] = tf.io.VarLenFeature(tf.int64)
    spec[name_key] = tf.io.FixedLenFeature([], tf.string)
    spec |= {k: tf.io.FixedLenFeature([], tf.int64) for k in size_keys}
    out = {}
    for path in sorted(folder.glob("*/*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)):
            ex = tf.io.parse_single_example(raw, spec)
            columns = [tf.sparse.to_dense(ex[f"image/object/bbox/{k}"]).numpy().tolist() for k in (*BOX_KEYS, "label")]
            name = ex[name_key].numpy().decode()
            out[name] = {"size": tuple(int(ex[k]) for k in size_keys), "boxes": list(zip(*columns, strict=True))}
    return out


def f32(*values) -> tuple:
    return tuple(float(np.float32(v)) for v in values)


@pytest.mark.parametrize("fmt", ["seed", "tf-models"])
def test_tinyimagenet_boxes_are_normalised_clipped_and_dropped(sample_copy, tmp_path, fmt):
    wnid = sorted(p.name for p in (sample_copy / "train").iterdir())[0]  # label 0
    boxes_file = sample_copy / "train" / wnid / f"{wnid}_boxes.txt"
    lines = boxes_file.read_text().splitlines()
    names = [line.split("\t")[0] for line in lines]
    lines[0] = f"{names[0]}\t-5\t-5\t70\t30"  # partly outside: clipped
    lines[1] = f"{names[1]}\t40\t10\t20\t30"  # inverted: dropped
    lines[2] = f"{names[2]}\t10\t20\t29\t39"  # inside, inclusive pixel indices
    boxes_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    convert_small_shards(sample_copy, out, "--format", fmt)
    size_keys = ("height", "width") if fmt == "seed" else ("image/height", "image/width")
    name_key = "filename" if fmt == "seed" else "image/filename"
    records = read_boxes(out, name_key=name_key, size_keys=size_keys)
    at = f"train/{wnid}/images/"
    assert {records[at + n]["size"] for n in names[:3]} == {(64, 64)}
    assert records[at + names[0]]["boxes"] == [(*f32(0, 0, 1, 31 / 64), 0)]
    assert records[at + names[1]]["boxes"] == []
    assert records[at + names[2]]["boxes"] == [(*f32(10 / 64, 20 / 64, 30 / 64, 40 / 64), 0)]
    assert records[at + names[3]]["boxes"] == [(*f32(0, 0, 1, 1), 0)]  # the sample's whole-image boxes
    val = [r for name, r in records.items() if name.startswith("val/")]
    assert val and all(len(r["boxes"]) == 1 for r in val)
    assert all(r["boxes"] == [] for name, r in records.items() if name.startswith("test/"))
    info = json.loads((out / "dataset_info.json").read_text())
    train_boxes = sum(1 for name in records if name.startswith("train/"))
    assert info["splits"]["train"]["boxes"] == {"given": train_boxes, "clipped": 1, "dropped": 1}
    assert info["splits"]["test"]["boxes"] == {"given": 0, "clipped": 0, "dropped": 0}
    assert "image/object/bbox/xmin" in info["features"]


def test_imagenet_boxes_from_both_solution_files(tmp_path):
    data = write_imagenet(tmp_path / "data")
    (data / "LOC_train_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "n01000000_1,n01000000 1 2 10 8 n01000000 0 0 500 5 \n"  # the second box is clipped
        "n03000000_7,n09999999 1 1 3 3 n03000000 2 2 4 4\n"  # a box of no class: dropped at planning
    )
    out = tmp_path / "out"
    p = convert_small_shards(data, out)
    assert "train: 6 records in 1 shard; " in p.stdout and "1 box clipped, 0 dropped (outside or inverted)" in p.stdout
    assert "1 boxes of 1 images name a class id that is not a class (dropped)" in p.stdout + p.stderr
    records = read_boxes(out)
    first = records[f"{DATA}/train/n01000000/n01000000_1.JPEG"]
    h, w = first["size"]
    assert first["boxes"] == [(*f32(1 / w, 2 / h, 10 / w, 8 / h), 0), (*f32(0, 0, 1, 5 / h), 0)]
    seventh = records[f"{DATA}/train/n03000000/n03000000_7.JPEG"]
    h, w = seventh["size"]
    assert seventh["boxes"] == [(*f32(2 / w, 2 / h, 4 / w, 4 / h), WNIDS.index("n03000000"))]
    assert records[f"{DATA}/train/n01000000/n01000000_10.JPEG"]["boxes"] == []  # no line: no boxes
    val = records[f"{DATA}/val/ILSVRC2012_val_00000001.JPEG"]  # two boxes on its line
    h, w = val["size"]
    label = WNIDS.index("n03000000")
    assert val["boxes"] == [(*f32(0, 0, 5 / w, 5 / h), label), (*f32(3 / w, 3 / h, 9 / w, 9 / h), label)]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["splits"]["train"]["boxes"] == {"given": 3, "clipped": 1, "dropped": 0}


def test_tfds_records_and_box_free_layouts_carry_no_box_keys(sample_dir, tmp_path):
    out = tmp_path / "tfds"
    convert_small_shards(sample_dir, out, "--format", "tfds")
    shard = next(p for p in out.glob("*-train.tfrecord-*") if p.suffix != ".idx")
    raw = next(iter(tf.data.TFRecordDataset(str(shard))))
    assert set(tf.train.Example.FromString(raw.numpy()).features.feature) == {"image", "label", "file_name"}
    folder = tmp_path / "folder"
    for split, cls in (("train", "cat"), ("train", "dog"), ("val", "cat")):
        (folder / split / cls).mkdir(parents=True, exist_ok=True)
        (folder / split / cls / "a.jpg").hardlink_to(sample_dir / "val" / "images" / "val_0.JPEG")
    convert_small_shards(folder, tmp_path / "folder-out")
    info = json.loads((tmp_path / "folder-out" / "dataset_info.json").read_text())
    assert not any(k.startswith("image/object") for k in info["features"])
    raw = next(iter(tf.data.TFRecordDataset(str(next((tmp_path / "folder-out").glob("train/*.tfrecord"))))))
    assert not any(k.startswith("image/object") for k in tf.train.Example.FromString(raw.numpy()).features.feature)


def test_the_documented_box_table_is_the_schema():
    from imagenet_tfrecords.records import BOX_SCHEMA

    from .conftest import ROOT

    table = (ROOT / "docs" / "formats.md").read_text().split("## Bounding boxes", 1)[1].split("\n\n", 3)[2]
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert {key: (kind, meaning.replace("`", "")) for key, kind, meaning in rows} == {
        k: (kind, meaning) for k, (kind, meaning) in BOX_SCHEMA.items()
    }
