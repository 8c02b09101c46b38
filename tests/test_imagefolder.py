"""The imagefolder layout (<split>/<class>/<image>) and --layout auto, end to end on real images of
several formats, read back with TensorFlow."""

import hashlib
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from imagenet_tfrecords.layouts import build_plan, detect
from imagenet_tfrecords.plan import MetadataError, Plan

from .conftest import convert_small_shards, read_split, run_cli

CLASSES = ["bird", "cat", "dog"]  # sorted: the labels are 0, 1, 2
# path relative to the root -> (Pillow mode, format); sizes vary so shapes are checked too
IMAGES = {
    "train/bird/b1.jpg": ("RGB", "JPEG"),
    "train/cat/c1.jpg": ("RGB", "JPEG"),
    "train/cat/c2.PNG": ("RGB", "PNG"),
    "train/cat/c10.JPG": ("L", "JPEG"),  # grayscale
    "train/dog/d1.jpeg": ("CMYK", "JPEG"),
    "train/dog/d2.png": ("L", "PNG"),
    "train/dog/d3.webp": ("RGB", "WEBP"),
    "train/dog/d4.bmp": ("RGB", "BMP"),
    "validation/cat/v1.jpg": ("RGB", "JPEG"),
    "validation/dog/v2.png": ("RGBA", "PNG"),
    "validation/dog/v10.gif": ("P", "GIF"),
    "test/t1.jpg": ("RGB", "JPEG"),
    "test/t2.PNG": ("RGB", "PNG"),
    "test/t10.jpg": ("L", "JPEG"),
}
UNKNOWN_CLASS = "validation/zebra/z1.jpg"  # a class train/ does not have
NOT_IMAGES = {"train/cat/notes.txt": "not an image file (extension .txt)"}
LOOSE = "train/README.md"  # a file beside the class folders of a labelled split


def _image(mode: str, fmt: str, n: int) -> bytes:
    rng = np.random.default_rng(n)
    h, w = 12 + n, 20 + 2 * n
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB")
    img = img.convert("P") if mode == "P" else img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def write_imagefolder(root):
    for n, (rel, (mode, fmt)) in enumerate([*IMAGES.items(), (UNKNOWN_CLASS, ("RGB", "JPEG"))]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_image(mode, fmt, n))
    for rel in NOT_IMAGES:
        (root / rel).write_text("not pixels\n")
    (root / LOOSE).write_text("# about this dataset\n")
    return root


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"))


def _files(root):
    """Every output file but the report and the run's own bookkeeping, by path, as its SHA-256."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "report.html" and "_work" not in p.parts and p.name != "dataset_info.json"
    }


@pytest.mark.parametrize("order", ["mixed", "per-class"])
def test_a_train_class_without_images_is_a_problem_listed_with_its_reason(folder_dir, tmp_path, order):
    root = tmp_path / "data"
    shutil.copytree(folder_dir, root)
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("no pixels\n")  # a file, but not an image
    plan = build_plan(str(root), train_order=order)
    outcome = "class has no train records" if order == "mixed" else "class gets an empty shard"
    assert plan.problems == [{"path": "train/empty", "reason": f"class directory has no images ({outcome})"}]
    train = [f for s in plan.all_shards() if s.split == "train" for f in s.sources]
    assert ("empty/notes.txt", None, "not an image file (extension .txt)") in [f[:3] for f in train]
    assert plan.problems == Plan.from_json(plan.to_json()).problems


@pytest.fixture(scope="module")
def converted(folder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    p = convert_small_shards(folder_dir, out, "--workers", "2")
    return folder_dir, out, p.stdout


def test_plan_of_an_imagefolder(folder_dir):
    plan = build_plan(str(folder_dir), shard_size=2, train_order="per-class")
    assert plan.layout == "imagefolder"
    assert [(c.wnid, c.words) for c in plan.classes] == [(c, c) for c in CLASSES]
    shards = list(plan.all_shards())
    train = [s for s in shards if s.split == "train"]
    assert {s.dir for s in train} == {"train"}
    assert [s.file for s in train] == [f"train/train-{i:05d}-of-00003.tfrecord" for i in range(3)]  # one per class
    cat = train[1].sources
    assert [s.name for s in cat] == [f"{CLASSES[1]}/{n}" for n in ("c1.jpg", "c2.PNG", "c10.JPG", "notes.txt")]
    assert cat[3][:3] == (f"{CLASSES[1]}/notes.txt", None, "not an image file (extension .txt)")
    val = [f for s in shards if s.split == "val" for f in s.sources]
    assert [f.name for f in val] == ["cat/v1.jpg", "dog/v2.png", "dog/v10.gif", "zebra/z1.jpg"]
    assert val[3][:3] == ("zebra/z1.jpg", None, "class zebra is not a class of the train split")
    assert {s.dir for s in shards if s.split == "val"} == {"validation"}
    assert [f.label for s in shards if s.split == "test" for f in s.sources] == [-1, -1, -1]
    assert plan.rejects == [{"path": LOOSE, "reason": "not in a class folder"}]
    assert Plan.from_json(plan.to_json()).shards == plan.shards  # plan.json round trip


def test_records_are_labelled_by_class_folder_and_match_an_independent_decode(converted):
    data, out, stdout = converted
    assert "layout: imagefolder (detected)" in stdout.splitlines()
    assert (out / "labels.txt").read_text() == "".join(f"{c}\t{c}\n" for c in CLASSES)
    seen = set()
    for split in ("train", "val", "test"):
        for r in read_split(out, split):
            path = r["filename"].decode()
            seen.add(path)
            expected = np.asarray(Image.open(data / path).convert("RGB"))
            h, w, c = int(r["height"]), int(r["width"]), int(r["channel"])
            assert (h, w, c) == expected.shape, path
            np.testing.assert_array_equal(np.frombuffer(r["image_raw"], np.uint8).reshape(h, w, c), expected, path)
            one_hot = np.frombuffer(r["label_one_hot"], np.uint8)
            assert one_hot.shape == (len(CLASSES),)
            if split == "test":
                assert r["label"] == -1 and r["wnid"] == b"" and not one_hot.any(), path
            else:
                cls = path.split("/")[1]
                assert (r["label"], r["wnid"].decode()) == (CLASSES.index(cls), cls), path
                assert one_hot.sum() == 1 and one_hot[r["label"]] == 1
    assert seen == set(IMAGES)


def test_non_images_and_unknown_classes_are_rejects_and_counts_reconcile(converted):
    _, out, stdout = converted
    rejects = dict(line.split("\t") for line in (out / "rejects.tsv").read_text().splitlines())
    assert rejects == {
        **NOT_IMAGES,
        UNKNOWN_CLASS: "class zebra is not a class of the train split",
        LOOSE: "not in a class folder",
    }
    info = json.loads((out / "dataset_info.json").read_text())
    for split, s in info["splits"].items():
        assert s["found"] == s["num_records"] + s["rejected"] + s["skipped"], split
    records = {split: s["num_records"] for split, s in info["splits"].items()}
    assert records == {"train": 8, "val": 3, "test": 3}
    assert {split: s["rejected"] for split, s in info["splits"].items()} == {"train": 1, "val": 1, "test": 0}
    assert info["found"] == len(IMAGES) + 3 and info["rejected"] == 3
    assert info["splits"]["train"]["label_counts"] == {"0": 1, "1": 3, "2": 4}
    assert (out / "sizes.txt").read_text() == "train,8\nval,3\ntest,3"
    assert "3 rejects listed in rejects.tsv" in stdout
    run_cli("verify", out)


def test_output_is_byte_identical_whatever_the_workers(converted, tmp_path):
    data, out, _ = converted
    convert_small_shards(data, tmp_path / "one", "--workers", "1")
    mine = _files(out)
    assert any(name.endswith(".tfrecord") for name in mine)
    assert _files(tmp_path / "one") == mine


def test_layout_auto_detects_tinyimagenet_and_imagefolder(folder_dir, sample_dir, tmp_path):
    assert detect(str(folder_dir)) == "imagefolder"
    assert detect(str(sample_dir)) == "tinyimagenet"
    p = run_cli("convert", "--data", sample_dir, "--output", tmp_path / "tiny", "--layout", "auto")
    assert "layout: tinyimagenet (detected)" in p.stdout.splitlines()
    assert "train: 72 records in 1 shard" in p.stdout  # mixed: about 1,000 records a shard
    p = convert_small_shards(folder_dir, tmp_path / "named", "--layout", "imagefolder")
    assert "layout: imagefolder" in p.stdout.splitlines()  # asked for, not detected
    # the layout named is the layout read: an imagefolder has no wnids.txt
    p = convert_small_shards(folder_dir, tmp_path / "wrong", "--layout", "tinyimagenet", check=False)
    assert p.returncode == 3 and f"{folder_dir / 'wnids.txt'}: file not found" in p.stderr


def test_a_root_without_a_layout_is_an_error_naming_it(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(_image("RGB", "JPEG", 0))
    with pytest.raises(MetadataError, match=re.escape(f"{tmp_path}: no known dataset layout")):
        detect(str(tmp_path))
    with pytest.raises(MetadataError, match=re.escape(f"{tmp_path}: no train/, val/, validation/ or test/ folder")):
        build_plan(str(tmp_path), layout="imagefolder")
    p = run_cli("convert", "--data", tmp_path, "--output", tmp_path.parent / "out-none", check=False)
    assert p.returncode == 3 and "no known dataset layout" in p.stderr


def test_local_pipeline_run_matchesconvert_small_shards(converted, tmp_path):
    data, out, _ = converted
    run_out = tmp_path / "run"
    p = run_cli("run", "--data", data, "--output", run_out, "--shard-size", "2", "--max-reject-fraction", "1")
    lines = p.stdout.splitlines()
    assert "layout: imagefolder (detected)" in lines and len(lines) <= 15, p.stdout
    assert {k: v for k, v in _files(run_out).items() if k.endswith(".tfrecord")} == {
        k: v for k, v in _files(out).items() if k.endswith(".tfrecord")
    }
    assert (run_out / "rejects.tsv").read_text() == (out / "rejects.tsv").read_text()
