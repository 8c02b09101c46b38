"""The imagenet layout (ILSVRC2012 as extracted from Kaggle's object localization download), end to end
on a generated dataset of real JPEGs, read back with TensorFlow."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from imagenet_tfrecords.layouts import build_plan, detect
from imagenet_tfrecords.plan import MetadataError, Plan

from .conftest import convert_small_shards, read_split, run_cli

DATA = "ILSVRC/Data/CLS-LOC"
# the mapping's file order is not the sorted order: labels follow the sorted wnids
MAPPING = [
    ("n03000000", "zebra, Equus grevyi"),
    ("n01000000", "tench, Tinca tinca"),
    ("n04000000", "espresso maker"),
    ("n02000000", "goldfish, Carassius auratus"),
]
WNIDS = sorted(w for w, _ in MAPPING)  # labels 0..3
# path relative to DATA -> Pillow mode
TRAIN = {
    "train/n01000000/n01000000_1.JPEG": "RGB",
    "train/n01000000/n01000000_10.JPEG": "RGB",
    "train/n02000000/n02000000_3.JPEG": "L",  # grayscale
    "train/n03000000/n03000000_7.JPEG": "RGB",
    "train/n03000000/n03000000_8.JPEG": "RGB",
    "train/n04000000/n04000000_2.JPEG": "CMYK",
}
VAL_FILES = {f"val/ILSVRC2012_val_{i:08d}.JPEG": "RGB" for i in range(1, 8)}
VAL_FILES["val/ILSVRC2012_val_00000002.JPEG"] = "L"
VAL_FILES["val/ILSVRC2012_val_00000005.JPEG"] = "CMYK"
TEST = {f"test/ILSVRC2012_test_{i:08d}.JPEG": "RGB" for i in range(1, 4)}
# val lines in an order unlike the files'; line numbers count the header as line 1
VAL_LINES = [
    "ILSVRC2012_val_00000003,n04000000 1 2 10 12 ",  # line 2
    "ILSVRC2012_val_00000001,n03000000 0 0 5 5 n03000000 3 3 9 9",  # line 3: two boxes, one class
    "ILSVRC2012_val_00000009,n01000000 0 0 5 5",  # line 4: its image is missing
    "ILSVRC2012_val_00000005,n01000000 0 0 5 5",  # line 5: CMYK
    "ILSVRC2012_val_00000002,n02000000 0 0 5 5",  # line 6: grayscale
    "ILSVRC2012_val_00000006,n07777777 0 0 5 5",  # line 7: unknown class
    "ILSVRC2012_val_00000007,n01000000 0 0 5 5 n02000000 1 1 4 4",  # line 8: conflicting classes
]  # ILSVRC2012_val_00000004 has no line
VAL_LABELS = {"00000001": "n03000000", "00000002": "n02000000", "00000003": "n04000000", "00000005": "n01000000"}
STRAY = "train/n09999999"  # a folder of no class of the mapping
REJECTS = {
    f"{DATA}/{STRAY}": "not a class listed in LOC_synset_mapping.txt (dir not converted)",
    f"{DATA}/val/ILSVRC2012_val_00000009.JPEG": "listed in LOC_val_solution.csv but missing",
    f"{DATA}/val/ILSVRC2012_val_00000004.JPEG": "no line in LOC_val_solution.csv",
    f"{DATA}/val/ILSVRC2012_val_00000006.JPEG": "LOC_val_solution.csv line 7 names unknown class n07777777",
    f"{DATA}/val/ILSVRC2012_val_00000007.JPEG": (
        "conflicting classes in LOC_val_solution.csv line 8: n01000000, n02000000"
    ),
}


def _jpeg(mode: str, n: int) -> bytes:
    rng = np.random.default_rng(n)
    img = Image.fromarray(rng.integers(0, 256, size=(10 + n, 14 + n, 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_imagenet(root, *, test=True, val_lines=VAL_LINES):
    images = {**TRAIN, **VAL_FILES, f"{STRAY}/x.JPEG": "RGB", **(TEST if test else {})}
    for n, (rel, mode) in enumerate(images.items()):
        path = root / DATA / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(mode, n))
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {words}\n" for w, words in MAPPING))
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(f"{x}\n" for x in val_lines))
    return root


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    return write_imagenet(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def converted(imagenet_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "out"
    p = convert_small_shards(imagenet_dir, out, "--workers", "2")
    return imagenet_dir, out, p.stdout


def test_plan_of_an_imagenet(imagenet_dir):
    plan = build_plan(str(imagenet_dir), shard_size=2, train_order="per-class")
    assert plan.layout == "imagenet"
    assert [c.wnid for c in plan.classes] == WNIDS
    shards = list(plan.all_shards())
    train = [s for s in shards if s.split == "train"]
    assert [{(f.name.split("/")[0], f.label) for f in s.sources} for s in train] == [
        {(w, i)} for i, w in enumerate(WNIDS)
    ]
    assert {s.dir for s in train} == {f"{DATA}/train"}
    val = [s for s in shards if s.split == "val"]
    assert [len(s.sources) for s in val] == [2, 2, 2, 1] and {s.dir for s in val} == {f"{DATA}/val"}
    names = [f.name for s in val for f in s.sources]
    assert names == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 8)]  # file order, not the CSV's
    test = [f for s in shards if s.split == "test" for f in s.sources]
    assert [f.label for f in test] == [-1, -1, -1]
    assert Plan.from_json(plan.to_json()).shards == plan.shards


def test_records_are_labelled_by_sorted_wnid(converted):
    data, out, stdout = converted
    assert "layout: imagenet (detected)" in stdout.splitlines()
    assert (out / "labels.txt").read_text() == "".join(f"{w}\t{dict(MAPPING)[w]}\n" for w in WNIDS)
    seen = set()
    for split in ("train", "val", "test"):
        for r in read_split(out, split):
            path = r["filename"].decode()
            seen.add(path)
            rel = path.removeprefix(f"{DATA}/")
            expected = np.asarray(Image.open(data / path).convert("RGB"))
            h, w, c = int(r["height"]), int(r["width"]), int(r["channel"])
            assert (h, w, c) == expected.shape, path  # grayscale and CMYK converted to RGB
            if split == "test":
                assert r["label"] == -1 and r["wnid"] == b"", path
                continue
            wnid = rel.split("/")[1] if split == "train" else VAL_LABELS[re.search(r"_(\d{8})\.", rel)[1]]
            assert (r["label"], r["wnid"].decode()) == (WNIDS.index(wnid), wnid), path
    expected_paths = {*TRAIN, *(f"val/ILSVRC2012_val_{k}.JPEG" for k in VAL_LABELS), *TEST}
    assert seen == {f"{DATA}/{p}" for p in expected_paths}


def test_rejects_have_their_reasons_and_counts_reconcile(converted):
    _, out, stdout = converted
    rejects = dict(line.split("\t") for line in (out / "rejects.tsv").read_text().splitlines())
    assert rejects == REJECTS
    info = json.loads((out / "dataset_info.json").read_text())
    for split, s in info["splits"].items():
        assert s["found"] == s["num_records"] + s["rejected"] + s["skipped"], split
    assert {split: s["num_records"] for split, s in info["splits"].items()} == {"train": 6, "val": 4, "test": 3}
    assert info["splits"]["train"]["label_counts"] == {"0": 2, "1": 1, "2": 2, "3": 1}
    assert info["splits"]["val"]["label_counts"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert info["rejected"] == len(REJECTS)
    run_cli("verify", out)


def test_layout_auto_and_named(imagenet_dir, tmp_path):
    assert detect(str(imagenet_dir)) == "imagenet"
    p = convert_small_shards(imagenet_dir, tmp_path / "named", "--layout", "imagenet")
    assert "layout: imagenet" in p.stdout.splitlines()


def test_test_split_is_optional(tmp_path):
    data = write_imagenet(tmp_path / "data", test=False)
    plan = build_plan(str(data), shard_size=2)
    assert not [s for s in plan.shards if s.split == "test"]
    assert any("no test split" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("ILSVRC2012_val_00000004", "no comma"),
        ("ILSVRC2012_val_00000004,", "empty PredictionString"),
        ("ILSVRC2012_val_00000004,n01000000 1 2", "incomplete box"),
    ],
)
def test_a_malformed_csv_line_is_exit_3_naming_file_and_line(tmp_path, line, what):
    data = write_imagenet(tmp_path / "data", val_lines=[VAL_LINES[0], line])
    p = convert_small_shards(data, tmp_path / "out", check=False)
    assert p.returncode == 3, what
    assert f"{data / 'LOC_val_solution.csv'}:3:" in p.stderr, what


def test_metadata_errors_name_file_and_line(tmp_path):
    data = write_imagenet(tmp_path / "data")
    mapping = data / "LOC_synset_mapping.txt"
    mapping.write_text(mapping.read_text() + "n05000000\n")  # no words
    with pytest.raises(MetadataError, match=re.escape(f"{mapping}:5: expected 'wnid words'")):
        build_plan(str(data))
    mapping.write_text(mapping.read_text().replace("n05000000\n", "n05000000 a class without a folder\n"))
    with pytest.raises(MetadataError, match=re.escape(f"{data / DATA / 'train' / 'n05000000'}: class directory not")):
        build_plan(str(data))
    (data / "LOC_val_solution.csv").unlink()
    p = convert_small_shards(data, tmp_path / "out", check=False)
    assert p.returncode == 3 and f"{data / 'LOC_val_solution.csv'}: file not found" in p.stderr
