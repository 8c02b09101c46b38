"""Metadata parsing against the real TinyImageNet files, and bad metadata."""

import json
import shutil
from collections import Counter

import pytest

from imagenet_tfrecords import listing
from imagenet_tfrecords.fs import Location
from imagenet_tfrecords.layouts import build_plan
from imagenet_tfrecords.layouts.tinyimagenet import parse_val_annotations, parse_wnids, parse_words
from imagenet_tfrecords.listing import CLASSES_PER_TASK, source_hash
from imagenet_tfrecords.plan import (
    MAX_TASKS,
    MetadataError,
    Plan,
    PlanError,
    Shard,
    Source,
    group_tasks,
    read_slice,
    write_slices,
)
from imagenet_tfrecords.sample import write_sample


def test_real_metadata(meta_dir):
    wnids = [w for w, _ in parse_wnids(Location.of(str(meta_dir / "wnids.txt")))]
    assert len(wnids) == 200 and wnids != sorted(wnids)  # the real file is not sorted
    words = parse_words(Location.of(str(meta_dir / "words.txt")), set(wnids))
    assert set(words) == set(wnids)
    labels = {w: i for i, w in enumerate(sorted(wnids))}
    ann, warnings = parse_val_annotations(Location.of(str(meta_dir / "val" / "val_annotations.txt")), labels)
    assert len(ann) == 10_000 and warnings == []
    assert all(reason is None for _, reason in ann.values())
    assert Counter(label for label, _ in ann.values()) == {i: 50 for i in range(200)}


def _dataset_from_real_meta(meta_dir, root, per_class=1):
    """The real metadata with one tiny image per class and per val annotation."""
    import numpy as np

    from imagenet_tfrecords.sample import _jpeg

    shutil.copy(meta_dir / "wnids.txt", root / "wnids.txt")
    shutil.copy(meta_dir / "words.txt", root / "words.txt")
    (root / "val" / "images").mkdir(parents=True)
    shutil.copy(meta_dir / "val" / "val_annotations.txt", root / "val" / "val_annotations.txt")
    rng = np.random.default_rng(0)
    jpeg = _jpeg(rng, np.full((64, 64, 3), 100, np.int16), False)
    for w in (meta_dir / "wnids.txt").read_text().split():
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for n in range(per_class):
            (d / f"{w}_{n}.JPEG").write_bytes(jpeg)
    for line in (meta_dir / "val" / "val_annotations.txt").read_text().splitlines()[:300]:
        (root / "val" / "images" / line.split("\t")[0]).write_bytes(jpeg)


def test_plan_over_real_metadata(meta_dir, tmp_path):
    (tmp_path / "data").mkdir()
    _dataset_from_real_meta(meta_dir, tmp_path / "data", per_class=10)
    plan = build_plan(str(tmp_path / "data"), shard_size=100, train_order="per-class")
    assert len(plan.classes) == 200
    shards = list(plan.all_shards())
    train = [s for s in shards if s.split == "train"]
    wnids = [s.sources[0].name.split("/")[0] for s in train]
    assert wnids == sorted(wnids) == list(plan.wnids) and {len(s.sources) for s in train} == {10}
    val = [s for s in shards if s.split == "val"]
    assert [len(s.sources) for s in val] == [100, 100, 100]
    label = plan.wnids.index("n03444034")  # val_annotations.txt line 1: val_0.JPEG n03444034 0 32 44 62
    assert val[0].sources[0] == Source("val_0.JPEG", label, None, None, ((0.0, 32.0, 44.0, 62.0, label),))
    # annotated images that are not on disk are listed, not dropped
    assert len(plan.rejects) == 10_000 - 300
    assert plan.rejects[0]["reason"] == "listed in val_annotations.txt but missing"
    assert any("no test split" in w for w in plan.warnings)
    write_slices(plan, str(tmp_path / "out"), 64)
    assert Plan.from_json(plan.to_json()) == plan  # the JSON round trip of plan.json
    assert len(plan.tasks) == 64 and {len(t) for t in plan.tasks} == {4, 3}  # 203 shards
    assert [i for t in plan.tasks for i in t] == list(range(len(plan.shards)))
    sliced = [Shard.from_json(json.loads(s)) for t in range(64) for _, s in read_slice(plan, t)]
    assert sliced == shards and all(s.light() == p for s, p in zip(sliced, plan.shards, strict=True))
    assert "files" not in plan.to_json()  # plan.json holds no sources


def test_default_mixed_train_shards_hold_about_a_thousand_files(meta_dir, tmp_path):
    _dataset_from_real_meta(meta_dir, tmp_path, per_class=10)
    plan = build_plan(str(tmp_path), shard_size=100)
    train = [s for s in plan.all_shards() if s.split == "train"]
    assert len(train) == 2  # max(1, round(2000 / 1000))
    assert sum(len(s.sources) for s in train) == 2000 and min(len(s.sources) for s in train) > 900
    assert len({f.label for f in train[0].sources}) > 150  # per class: 100
    for i, shard in enumerate(train):  # shard i: the i-th half of the hash range, in hash order
        keys = [source_hash(f"train/{f.name}") for f in shard.sources]
        assert keys == sorted(keys) and {int(k, 16) * 2 >> 64 for k in keys} == {i}


def test_an_explicit_train_shard_count_still_plans_every_train_image(sample_dir):
    default = build_plan(str(sample_dir))
    explicit = build_plan(str(sample_dir), train_shards=5)
    train = [s for s in explicit.all_shards() if s.split == "train"]
    names = sorted(f.name for s in train for f in s.sources)
    assert len(train) == 5 and len(names) == 72
    assert names == sorted(f.name for s in default.all_shards() if s.split == "train" for f in s.sources)


@pytest.mark.parametrize("order", ["mixed", "per-class"])
def test_listing_processes_plan_what_one_process_plans_across_their_tasks(tmp_path, monkeypatch, order):
    """Class folders listed by forked processes, CLASSES_PER_TASK a task, give the same shards as a
    listing in this process, and each problem and missing boxes file is named for its own class."""
    if listing._cpus() < 2:
        pytest.skip("one CPU: planning lists every class folder in this process")
    root = tmp_path / "data"
    write_sample(str(root), classes=2 * CLASSES_PER_TASK + 3, train_per_class=3, val=4, test=2)
    wnids = sorted((root / "wnids.txt").read_text().split())
    empty, unboxed = wnids[CLASSES_PER_TASK + 1], wnids[2 * CLASSES_PER_TASK + 1]
    for f in (root / "train" / empty / "images").iterdir():
        f.unlink()
    (root / "train" / unboxed / f"{unboxed}_boxes.txt").unlink()
    forked = build_plan(str(root), train_order=order)
    monkeypatch.setattr(listing, "_cpus", lambda: 1)
    alone = build_plan(str(root), train_order=order)
    assert list(forked.shard_texts()) == list(alone.shard_texts())
    outcome = "class has no train records" if order == "mixed" else "class gets an empty shard"
    problem = {"path": f"train/{empty}/images", "reason": f"class directory has no images ({outcome})"}
    assert forked.problems == alone.problems == [problem]
    boxes_file = Location.of(str(root)).child("train", unboxed, f"{unboxed}_boxes.txt").url
    assert forked.warnings == alone.warnings
    assert [w for w in forked.warnings if "boxes" in w] == [f"{boxes_file}: not found (their images get no boxes)"]


@pytest.mark.parametrize("missing", ["wnids.txt", "words.txt", "val/val_annotations.txt"])
def test_missing_metadata_fails_fast_naming_the_file(sample_copy, missing):
    (sample_copy / missing).unlink()
    with pytest.raises(MetadataError, match=f"{sample_copy / missing}: file not found"):
        build_plan(str(sample_copy))


def test_bad_lines_name_file_and_line(sample_copy):
    ann = sample_copy / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines[3] = "val_3.JPEG n000 broken"
    ann.write_text("\n".join(lines))
    with pytest.raises(MetadataError, match=rf"{ann}:4: expected 'file<TAB>wnid"):
        build_plan(str(sample_copy))
    wn = sample_copy / "wnids.txt"
    wn.write_text(wn.read_text() + wn.read_text().split()[0] + "\n")
    with pytest.raises(MetadataError, match=rf"{wn}:7: class id \S+ repeats line"):
        build_plan(str(sample_copy))


def test_class_without_words_or_directory(sample_copy):
    wn = sample_copy / "wnids.txt"
    wn.write_text(wn.read_text() + "n99999999\n")
    with pytest.raises(MetadataError, match=rf"words.txt: no entry for class n99999999 \({wn}:7\)"):
        build_plan(str(sample_copy))
    words = sample_copy / "words.txt"
    words.write_text(words.read_text() + "\nn99999999\tghost")
    with pytest.raises(
        MetadataError, match=r"train/n99999999: class directory not found \(class id from .*wnids.txt:7\)"
    ):
        build_plan(str(sample_copy))


def test_crlf_bom_and_trailing_blank_lines_are_tolerated(sample_copy):
    before = build_plan(str(sample_copy))
    for name in ("wnids.txt", "words.txt", "val/val_annotations.txt"):
        p = sample_copy / name
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    after = build_plan(str(sample_copy))
    assert after.shards == before.shards and after.classes == before.classes


def test_val_annotation_problems_become_rejects_with_reasons(sample_copy):
    ann = sample_copy / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    wnid0 = lines[0].split("\t")[1]
    other = next(line.split("\t")[1] for line in lines if line.split("\t")[1] != wnid0)
    lines[1] = "val_1.JPEG\tn12345678\t0\t0\t1\t1"  # unknown class
    lines.append(lines[0])  # exact duplicate: harmless, but reported
    lines.append(lines[0].replace(wnid0, other))  # conflicting duplicate
    del lines[2]  # val_2.JPEG has no annotation
    lines.append("val_999.JPEG\t" + wnid0)  # annotated, but no such file
    ann.write_text("\n".join(lines) + "\n")
    plan = build_plan(str(sample_copy))
    files = {f.name: f for s in plan.shards if s.split == "val" for f in s.sources}
    assert files["val_1.JPEG"][2] == "val_annotations.txt line 2 names unknown class n12345678"
    assert files["val_2.JPEG"][2] == "no line in val_annotations.txt"
    assert files["val_0.JPEG"][2].startswith("conflicting annotations in val_annotations.txt: line 1 says")
    assert any("duplicate of line 1" in w for w in plan.warnings)
    assert {"path": "val/images/val_999.JPEG", "reason": "listed in val_annotations.txt but missing"} in plan.rejects


@pytest.mark.parametrize("shards", [0, 1, 13, 240, 1_003, 20_003])
@pytest.mark.parametrize("max_tasks", [1, 7, MAX_TASKS - 1, MAX_TASKS])
def test_tasks_are_bounded_whatever_the_dataset_size(shards, max_tasks):
    """Vertex AI collects at most 100 artifacts in a dsl.Collected input; each task adds one."""
    tasks = group_tasks(shards, max_tasks)
    assert len(tasks) == min(shards, max_tasks) <= MAX_TASKS <= 100
    assert [i for t in tasks for i in t] == list(range(shards))  # every shard once, in order
    if tasks:
        assert max(map(len, tasks)) - min(map(len, tasks)) <= 1


@pytest.mark.parametrize("bad", [0, -1, MAX_TASKS + 1])
def test_max_tasks_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=f"max_tasks must be between 1 and {MAX_TASKS}"):
        group_tasks(10, bad)


def test_a_plan_of_another_version_is_refused(sample_dir):
    text = build_plan(str(sample_dir)).to_json().replace('"version": 4', '"version": 3')
    with pytest.raises(PlanError, match="plan version 3, this is version 4"):
        Plan.from_json(text)


def test_shard_file_names_and_the_fixed_sources_round_trip(sample_dir):
    plan = build_plan(str(sample_dir), shard_size=8, train_order="per-class")
    assert [s.file for s in plan.shards][:1] == ["train/train-00000-of-00006.tfrecord"]
    assert plan.shards[-1].file == "test/test-00002-of-00003.tfrecord" and plan.shards[-1].sources[0].label == -1
