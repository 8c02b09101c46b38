"""Mixed train shards: each train file goes to the shard its path's hash falls in, records in hash
order; the same bytes however the work is split (workers, tasks, kfp.local or not); per-class
keeps one class a shard. Everything is read back with TensorFlow."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from imagenet_tfrecords import tasks
from imagenet_tfrecords.listing import source_hash
from imagenet_tfrecords.plan import PlanError

from .conftest import read_records, read_split, run_cli
from .test_imagefolder import write_imagefolder
from .test_imagenet_layout import write_imagenet

SHARDS = 4


def _digests(out: Path) -> dict[str, str]:
    """Every shard and index file of an output, by path, as its SHA-256."""
    files = sorted(p for split in ("train", "val", "test") for p in (out / split).glob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _train_shards(out: Path) -> list[list[dict]]:
    return [read_records(f) for f in sorted((out / "train").glob("*.tfrecord"))]


def _check_mixed(out: Path, count: int) -> list[list[dict]]:
    """Shard i holds the files whose path hash falls in the i-th of ``count`` hash ranges, in hash order."""
    shards = _train_shards(out)
    assert len(shards) == count
    for i, records in enumerate(shards):
        keys = [source_hash(r["filename"].decode()) for r in records]
        assert keys == sorted(keys)
        assert {int(k, 16) * count >> 64 for k in keys} <= {i}
    return shards


def _steps(data: Path, out: Path, work: Path, max_tasks: int, workers: int = 1) -> None:
    """The pipeline's steps as plain functions: plan, every task's conversion, aggregation."""
    plan, labels = str(work / "plan.json"), str(work / "labels.txt")
    numbers, summary = tasks.plan_step(
        str(data), str(out), 500, max_tasks, plan, labels, train_shards=SHARDS, workers=workers, max_reject_fraction=1
    )
    assert summary["train_order"] == "mixed" and summary["train_shards"] == SHARDS
    runs = [tasks.convert_step(plan, n, str(work / f"m{n}.json")) for n in numbers]
    tasks.aggregate_step(plan, runs, str(work / "ds"), str(work / "sizes"), str(work / "r"))


@pytest.fixture(scope="module")
def mixed(sample_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "out"
    run_cli("convert", "--data", sample_dir, "--output", out, "--workers", "1", "--train-shards", SHARDS)
    return out


def test_shards_mix_the_classes_in_hash_order_and_hold_every_train_file_once(sample_dir, mixed):
    shards = _check_mixed(mixed, SHARDS)
    assert all(len({int(r["label"]) for r in records}) >= 3 for records in shards)  # of 6 classes
    names = Counter(r["filename"].decode() for records in shards for r in records)
    on_disk = {p.relative_to(sample_dir).as_posix() for p in (sample_dir / "train").rglob("*.JPEG")}
    assert set(names) == on_disk and set(names.values()) == {1}
    for r in (r for records in shards for r in records):  # each record still carries its class
        assert r["wnid"].decode() == r["filename"].decode().split("/")[1]
    info = json.loads((mixed / "dataset_info.json").read_text())
    assert (info["train_order"], info["train_shards"]) == ("mixed", SHARDS)
    assert sum(s["records"] for s in info["splits"]["train"]["shards"]) == len(on_disk)


def test_the_same_bytes_whatever_the_workers_and_the_task_grouping(sample_dir, mixed, tmp_path):
    want = _digests(mixed)
    run_cli("convert", "--data", sample_dir, "--output", tmp_path / "w2", "--workers", "2", "--train-shards", SHARDS)
    assert _digests(tmp_path / "w2") == want
    for max_tasks in (1, 3, 7):
        work = tmp_path / f"work{max_tasks}"
        _steps(sample_dir, tmp_path / f"t{max_tasks}", work, max_tasks, workers=2 if max_tasks == 3 else 1)
        assert _digests(tmp_path / f"t{max_tasks}") == want, max_tasks
        assert len(json.loads((work / "plan.json").read_text())["tasks"]) == min(max_tasks, SHARDS + 2)
    tasks.convert_dataset(
        str(sample_dir), str(tmp_path / "d"), shard_size=500, workers=2, train_shards=SHARDS, max_tasks=2
    )
    assert _digests(tmp_path / "d") == want


def test_plan_json_holds_no_sources_and_each_task_reads_its_own_slice(sample_dir, tmp_path):
    _steps(sample_dir, tmp_path / "out", tmp_path / "work", 3)
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    assert "files" not in json.dumps(plan) and all("found" in s for s in plan["shards"])
    slices = sorted((tmp_path / "out" / "_work" / "plan").iterdir())
    assert [p.name for p in slices] == [f"task-{t:05d}.jsonl" for t in range(3)]
    lines = [json.loads(line) for p in slices for line in p.read_text().splitlines()]
    assert [d["id"] for d in lines] == list(range(len(plan["shards"])))
    assert [len(d["shard"]["files"]) for d in lines] == [s["found"] for s in plan["shards"]]
    _steps(sample_dir, tmp_path / "out", tmp_path / "work", 1)  # fewer tasks: the other slices go
    assert [p.name for p in (tmp_path / "out" / "_work" / "plan").iterdir()] == ["task-00000.jsonl"]


def test_a_slice_of_another_plan_is_refused_naming_it(sample_dir, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    plan, labels = str(work / "plan.json"), str(work / "labels.txt")
    tasks.plan_step(str(sample_dir), str(out), 8, 2, plan, labels, train_shards=SHARDS)
    old = (work / "plan.json").read_text()
    tasks.plan_step(str(sample_dir), str(out), 8, 2, plan, labels, train_shards=SHARDS + 1)  # rewrites the slices
    (work / "plan.json").write_text(old)
    with pytest.raises(PlanError, match=r"_work/plan/task-00000\.jsonl:1: shard 0 is not the one plan.json plans"):
        tasks.convert_step(plan, 0, str(work / "m.json"))


def test_a_rerun_keeps_every_shard_and_other_train_shards_rewrite_only_train(sample_dir, mixed, tmp_path):
    out = tmp_path / "out"
    args = ("convert", "--data", sample_dir, "--output", out, "--workers", "2")
    run_cli(*args, "--train-shards", SHARDS)
    p = run_cli(*args, "--train-shards", SHARDS)
    assert f"nothing to convert: all {SHARDS + 2} shards kept from an earlier run" in p.stdout  # + val, test
    p = run_cli(*args, "--train-shards", SHARDS + 1)
    assert f"{SHARDS + 1} shards converted, 2 kept from an earlier run" in p.stdout
    _check_mixed(out, SHARDS + 1)


def test_per_class_keeps_one_class_a_shard_in_file_order(sample_dir, mixed, tmp_path):
    out = tmp_path / "out"
    run_cli("convert", "--data", sample_dir, "--output", out, "--train-order", "per-class")
    shards = _train_shards(out)
    assert [{int(r["label"]) for r in records} for records in shards] == [{i} for i in range(6)]
    for records in shards:
        names = [r["filename"].decode() for r in records]
        assert names == sorted(names, key=lambda n: int(n.rsplit("_", 1)[1].split(".")[0]))  # natural order
    assert Counter(r["filename"] for records in shards for r in records) == Counter(
        r["filename"] for r in read_split(mixed, "train")
    )
    info = json.loads((out / "dataset_info.json").read_text())
    assert (info["train_order"], info["train_shards"]) == ("per-class", 6)
    assert _digests(out)["val/val-00000-of-00001.tfrecord"] == _digests(mixed)["val/val-00000-of-00001.tfrecord"]


def test_train_shards_with_per_class_is_a_bad_command_line(sample_dir, tmp_path):
    args = ("--train-order", "per-class", "--train-shards", "3")
    p = run_cli("convert", "--data", sample_dir, "--output", tmp_path, *args, check=False)
    assert p.returncode == 2 and "--train-shards sets the number of mixed train shards" in p.stderr
    with pytest.raises(ValueError, match="train_shards sets the number of mixed train shards"):
        tasks.convert_dataset(str(sample_dir), str(tmp_path), train_order="per-class", train_shards=3)


@pytest.mark.parametrize("write", [write_imagefolder, write_imagenet], ids=["imagefolder", "imagenet"])
def test_every_layout_mixes_its_train_shards_and_counts_reconcile(write, tmp_path):
    data = write(tmp_path / "data")
    out = tmp_path / "out"
    extra = ("--max-reject-fraction", "1", "--train-shards", "2")
    run_cli("convert", "--data", data, "--output", out, "--workers", "2", *extra)
    shards = _check_mixed(out, 2)
    info = json.loads((out / "dataset_info.json").read_text())
    train = info["splits"]["train"]
    assert train["found"] == train["num_records"] + train["rejected"] + train["skipped"]
    names = [r["filename"].decode() for records in shards for r in records]
    rejected = [r["path"] for r in info["rejects"] if r["path"] in names]
    assert len(set(names)) == len(names) == train["num_records"] and not rejected
    assert len({int(r["label"]) for records in shards for r in records}) == info["num_classes"]


@pytest.mark.slow
def test_the_local_pipeline_writes_the_same_bytes_as_convert(sample_dir, mixed, tmp_path):
    out = tmp_path / "run"
    run_cli("run", "--data", sample_dir, "--output", out, "--max-tasks", "3", "--train-shards", SHARDS)
    assert _digests(out) == _digests(mixed)
