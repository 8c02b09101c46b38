"""The forms datasets are downloaded in today: Hugging Face parquet files and WebDataset tar shards,
each written by its own library from the same pictures as a class-folder dataset, converted and read
back with TensorFlow: the same records in every form, every input a record or a reject named by
file and row or tar member, bad files refused before any work, and the runs' other guarantees
(determinism, resume after kill -9, re-conversion of a changed file, verify, object stores)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenet_tfrecords import formats

from .conftest import CLI, convert_small_shards, run_cli
from .downloaded_forms import CLASSES, write_folders, write_parquet, write_webdataset
from .test_crash import _check_published, _tree
from .test_object_stores import _url, bucket, upload  # noqa: F401 (bucket: a fixture)

FORMS = ("folders", "parquet", "webdataset")
LAYOUT_LINE = {"folders": "layout: imagefolder (detected)", "parquet": "layout: parquet (detected)"}
LAYOUT_LINE["webdataset"] = "layout: webdataset (detected)"


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("forms")
    return {
        "folders": write_folders(root / "folders"),
        "parquet": write_parquet(root / "parquet"),
        "webdataset": write_webdataset(root / "webdataset"),
    }


def split_records(out: Path, split: str, fmt: str = formats.SEED) -> list[tuple]:
    """(label, height, width, pixel digest) of every record of a split, sorted; read with TensorFlow's
    reader, decoded by the format's keys."""
    import tensorflow as tf

    files = [p for p in sorted(out.rglob("*")) if p.is_file() and _of_split(p, out, split)]
    assert files, f"no {split} shards under {out}"
    got = []
    for f in files:
        for raw in tf.data.TFRecordDataset(str(f)):
            r = formats.decode_record(fmt, raw.numpy())
            got.append((int(r.label), *r.pixels.shape[:2], hashlib.sha256(r.pixels.tobytes()).hexdigest()[:16]))
    return sorted(got)


def _of_split(p: Path, out: Path, split: str) -> bool:
    rel = p.relative_to(out).as_posix()
    if rel.endswith((".idx", ".json")) or rel.startswith("_work/"):
        return False
    return (rel.startswith(f"{split}/") and rel.endswith(".tfrecord")) or f"-{split}.tfrecord-" in rel


def _convert(data, out, *extra, **kw):
    return convert_small_shards(data, out, *extra, **kw)


@pytest.mark.parametrize(
    "extra",
    [
        (),
        pytest.param(("--format", "tf-models"), marks=pytest.mark.slow),
        pytest.param(("--format", "tfds"), marks=pytest.mark.slow),
        pytest.param(("--resize", "12x9"), marks=pytest.mark.slow),
    ],
    ids=["seed", "tf-models", "tfds", "resize"],
)
def test_the_same_pictures_give_the_same_records_in_every_form(forms, tmp_path, extra):
    fmt = extra[1] if extra and extra[0] == "--format" else formats.SEED
    got = {}
    for form in FORMS:
        out = tmp_path / form
        p = _convert(forms[form], out, *extra)
        assert LAYOUT_LINE[form] in p.stdout.splitlines(), p.stdout
        assert "no rejects" in p.stdout, p.stdout
        got[form] = {split: split_records(out, split, fmt) for split in ("train", "val", "test")}
        assert (out / "labels.txt").read_text() == "".join(f"{c}\t{c}\n" for c in CLASSES)
    assert [len(got["folders"][s]) for s in ("train", "val", "test")] == [10, 3, 2]
    assert {r[0] for r in got["folders"]["test"]} == {-1}
    assert {r[0] for r in got["folders"]["train"]} == {0, 1, 2}
    assert got["parquet"] == got["folders"]
    assert got["webdataset"] == got["folders"]


def test_labels_are_the_classlabel_order_not_a_sorted_one(tmp_path):
    """The ClassLabel's names in their order are the labels (the dataset's users' indexes)."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HfImage

    names = ["zebra", "ant", "moth"]
    jpgs = [_jpeg(i) for i in range(3)]
    ds = Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in jpgs], "label": [0, 1, 2]},
        features=Features({"image": HfImage(), "label": ClassLabel(names=names)}),
    )
    (tmp_path / "d" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "d" / "data" / "train-00000-of-00001-1a2b3c4d.parquet"))
    _convert(tmp_path / "d", tmp_path / "out")
    assert (tmp_path / "out" / "labels.txt").read_text() == "zebra\tzebra\nant\tant\nmoth\tmoth\n"
    by_label = {r[0]: r for r in split_records(tmp_path / "out", "train")}
    assert sorted(by_label) == [0, 1, 2]
    for i, b in enumerate(jpgs):  # row i was labelled i: its pixels are under label i
        pixels = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
        assert by_label[i][3] == hashlib.sha256(pixels.tobytes()).hexdigest()[:16]


def _jpeg(n: int, size=(8, 6)) -> bytes:
    rng = np.random.default_rng(100 + n)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _files(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("report.html", "dataset_info.json") and "_work" not in p.parts
    }


@pytest.mark.parametrize("form", ["parquet", "webdataset"])
def test_two_runs_write_the_same_bytes_and_verify_passes(forms, tmp_path, form):
    _convert(forms[form], tmp_path / "a")
    _convert(forms[form], tmp_path / "b", "--workers", "1")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    v = run_cli("verify", tmp_path / "a")
    assert v.stdout.splitlines()[:3] == ["train,10", "val,3", "test,2"], v.stdout
    assert (tmp_path / "a" / "report.html").exists()
    info = json.loads((tmp_path / "a" / "dataset_info.json").read_text())
    assert info["layout"] == form


# --- rejects, named by file and row or by tar member ------------------------------------------


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes | None = None, **kw) -> None:
    info = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(info, k, v)
    if data is None:
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_webdataset_rejects_are_named_by_tar_member(tmp_path):
    data = tmp_path / "wds"
    data.mkdir()
    (data / "classes.txt").write_text("bird\ncat\n")
    with tarfile.open(data / "x-train-0000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        _tar_member(tar, "good.jpg", _jpeg(0))
        _tar_member(tar, "good.cls", b"1")
        _tar_member(tar, "corrupt.jpg", _jpeg(1)[:40])
        _tar_member(tar, "corrupt.cls", b"0")
        _tar_member(tar, "text.JPG", b"hello, not pixels")
        _tar_member(tar, "outside.jpeg", _jpeg(2))
        _tar_member(tar, "outside.cls", b"7")
        _tar_member(tar, "twice.jpg", _jpeg(3))
        _tar_member(tar, "twice.png", _jpeg(4))
        _tar_member(tar, "link.jpg", type=tarfile.SYMTYPE, linkname="good.jpg")
        _tar_member(tar, "folder", type=tarfile.DIRTYPE)
        _tar_member(tar, "nolabel.webp", _jpeg(5))
        _tar_member(tar, "jsonlabel.jpg", _jpeg(6))
        _tar_member(tar, "jsonlabel.json", json.dumps({"label": 0}).encode())
        _tar_member(tar, "lonely.json", b"{}")
    p = _convert(data, tmp_path / "out")
    assert "layout: webdataset (detected)" in p.stdout
    rejects = dict(line.split("\t") for line in (tmp_path / "out" / "rejects.tsv").read_text().splitlines())
    t = "x-train-0000.tar"
    assert set(rejects) == {
        f"{t}/corrupt.jpg",
        f"{t}/text.JPG",
        f"{t}/outside.jpeg",
        f"{t}/twice.jpg",
        f"{t}/twice.png",
        f"{t}/link.jpg",
        f"{t}/folder",
        f"{t}/lonely.json",
    }, rejects
    assert "label 7" in rejects[f"{t}/outside.jpeg"] and "cls" in rejects[f"{t}/outside.jpeg"]
    assert "2 images" in rejects[f"{t}/twice.png"]
    assert "symlink" in rejects[f"{t}/link.jpg"]
    assert "folder" in rejects[f"{t}/folder"]
    assert "without an image" in rejects[f"{t}/lonely.json"]
    records = split_records(tmp_path / "out", "train")
    assert sorted(r[0] for r in records) == [-1, 0, 1]  # nolabel, jsonlabel, good


def test_parquet_rejects_are_named_by_file_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "pq"
    (data / "data").mkdir(parents=True)
    (data / "pictures").mkdir()
    (data / "pictures" / "by-path.jpg").write_bytes(_jpeg(9))
    rows = [
        (_jpeg(0), "a.jpg", 0),
        (_jpeg(1)[:30], "cut.jpg", 1),  # corrupt bytes
        (b"not an image at all", "x.jpg", 0),
        (_jpeg(2), "c.jpg", 5),  # a label outside the class names
        (None, "pictures/by-path.jpg", 1),  # by path, in the dataset folder
        (None, "pictures/missing.jpg", 1),  # by path, not there
        (None, "/etc/hostname", 1),  # by an absolute path
        (_jpeg(3), None, -1),
    ]
    image = pa.array(
        [{"bytes": b, "path": p} for b, p, _ in rows], pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    )
    table = pa.table({"image": image, "label": pa.array([r[2] for r in rows], pa.int64())})
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": ["a", "b"]}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, data / "data" / "train-00000-of-00001.parquet", row_group_size=3)
    _convert(data, tmp_path / "out")
    rejects = dict(line.split("\t") for line in (tmp_path / "out" / "rejects.tsv").read_text().splitlines())
    f = "data/train-00000-of-00001.parquet"
    assert set(rejects) == {f"{f}/1", f"{f}/2", f"{f}/3", f"{f}/5", f"{f}/6"}, rejects
    assert "label 5" in rejects[f"{f}/3"]
    assert "not found in the dataset folder" in rejects[f"{f}/5"]
    assert "not relative to the dataset folder" in rejects[f"{f}/6"]
    records = split_records(tmp_path / "out", "train")
    assert sorted(r[0] for r in records) == [-1, 0, 1]
    by_path = np.asarray(Image.open(data / "pictures" / "by-path.jpg").convert("RGB"))
    assert (1, 6, 8, hashlib.sha256(by_path.tobytes()).hexdigest()[:16]) in records


# --- refused before any work --------------------------------------------------------------------


def _refused(data: Path, out: Path, needle: str) -> str:
    p = run_cli("convert", "--data", data, "--output", out, check=False)
    assert p.returncode == 3, (p.stdout, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert needle in lines[0], lines[0]
    assert not list(out.rglob("*.tfrecord*")) and not (out / "rejects.tsv").exists(), "work was done"
    return lines[0]


def test_a_damaged_parquet_footer_is_refused_naming_the_file(forms, tmp_path):
    data = tmp_path / "pq"
    shutil.copytree(forms["parquet"], data)
    victim = data / "data" / "validation-00001-of-00002.parquet"
    raw = victim.read_bytes()
    length = int.from_bytes(raw[-8:-4], "little")  # the footer: its thrift bytes, their length, b"PAR1"
    victim.write_bytes(raw[: -8 - length] + b"\xff" * length + raw[-8:])
    _refused(data, tmp_path / "out", str(victim))
    victim.write_bytes(raw[:-3])  # no magic at the end
    _refused(data, tmp_path / "out", str(victim))


def test_a_parquet_file_without_an_image_column_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d" / "data").mkdir(parents=True)
    victim = tmp_path / "d" / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), victim)
    line = _refused(tmp_path / "d", tmp_path / "out", str(victim))
    assert "no image column" in line


def test_a_truncated_tar_is_refused_naming_the_file(forms, tmp_path):
    data = tmp_path / "wds"
    shutil.copytree(forms["webdataset"], data)
    victim = data / "tiny-train-0001.tar"
    victim.write_bytes(victim.read_bytes()[:1500])  # inside the first sample's image
    _refused(data, tmp_path / "out", str(victim))


def test_several_configs_ask_for_one_and_the_option_picks_it(tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HfImage

    for config, labels in (("small", [0, 1]), ("large", [1, 1, 0])):
        ds = Dataset.from_dict(
            {"image": [{"bytes": _jpeg(i), "path": None} for i in range(len(labels))], "label": labels},
            features=Features({"image": HfImage(), "label": ClassLabel(names=["a", "b"])}),
        )
        (tmp_path / "d" / config).mkdir(parents=True)
        ds.to_parquet(str(tmp_path / "d" / config / "train-00000-of-00001.parquet"))
    p = run_cli("convert", "--data", tmp_path / "d", "--output", tmp_path / "out", check=False)
    assert p.returncode == 3 and "2 configs (large, small)" in p.stderr and "parquet:config=NAME" in p.stderr
    p = _convert(tmp_path / "d", tmp_path / "out", "--layout", "parquet:config=large")
    assert "train: 3 records" in p.stdout
    bad = run_cli(
        "convert", "--data", tmp_path / "d", "--output", tmp_path / "o2", "--layout", "parquet:cfg=x", check=False
    )
    assert bad.returncode == 2 and "parquet takes options config=..., image=..., label=..." in bad.stderr


# --- resume, changes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> dict[str, Path]:
    """600 pictures as parquet files and as WebDataset shards, for a kill to land mid-way."""
    import webdataset as wds
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HfImage

    root = tmp_path_factory.mktemp("many")
    jpgs = [_jpeg(i, (48, 40)) for i in range(600)]
    labels = [i % 3 for i in range(600)]
    ds = Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in jpgs], "label": labels},
        features=Features({"image": HfImage(), "label": ClassLabel(names=CLASSES)}),
    )
    (root / "parquet" / "train").mkdir(parents=True)
    for i in range(3):
        ds.shard(3, i, contiguous=True).to_parquet(str(root / "parquet" / "train" / f"{i:04d}.parquet"), batch_size=50)
    (root / "webdataset").mkdir()
    with wds.ShardWriter(str(root / "webdataset" / "many-train-%04d.tar"), maxcount=200, verbose=0) as sink:
        for i, (b, label) in enumerate(zip(jpgs, labels, strict=True)):
            sink.write({"__key__": f"s{i:05d}", "jpg": b, "cls": label})
    return {"parquet": root / "parquet", "webdataset": root / "webdataset"}


def _cmd(data, out) -> list[str]:
    return [*CLI, "convert", "--data", str(data), "--output", str(out), "--workers", "1", "--train-shards", "30"]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["parquet", "webdataset"])
def test_sigkill_mid_way_then_the_same_command_resumes_to_the_same_bytes(many, tmp_path, form):
    reference = tmp_path / "reference"
    subprocess.run(_cmd(many[form], reference), check=True, capture_output=True)
    # (the shards have no class names file: the names are the label numbers)
    assert (reference / "labels.txt").read_text() == (
        "bird\tbird\ncat\tcat\ndog\tdog\n" if form == "parquet" else "0\t0\n1\t1\n2\t2\n"
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cmd(many[form], out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while len(list((out / "train").glob("*.tfrecord"))) < 3:
        assert proc.poll() is None, "the conversion ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    finished = _check_published(out)
    assert finished and len(list((out / "train").glob("*.tfrecord"))) < 30, "the kill did not land mid-way"
    stamps = {f: (out / f).stat().st_mtime_ns for f in finished}
    p = run_cli(*_cmd(many[form], out)[len(CLI) :])
    assert "train: 600 records in 30 shards" in p.stdout
    assert {f: (out / f).stat().st_mtime_ns for f in finished} == stamps, "a finished shard was written again"
    assert _tree(out) == _tree(reference)


@pytest.mark.parametrize("form", ["parquet", "webdataset"])
def test_a_changed_file_is_converted_again_and_the_others_kept(forms, tmp_path, form):
    data = tmp_path / "data"
    shutil.copytree(forms[form], data)
    out = tmp_path / "out"
    _convert(data, out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.tfrecord")}
    if form == "parquet":
        changed = write_parquet(tmp_path / "other")  # the same rows but one picture
        import pyarrow.parquet as pq

        victim = "data/train-00001-of-00002.parquet"
        table = pq.read_table(changed / victim)
        images = table.column("image").to_pylist()
        images[0]["bytes"] = _jpeg(42)
        import pyarrow as pa

        table = table.set_column(0, "image", pa.array(images, table.schema.field("image").type))
        pq.write_table(table, data / victim, row_group_size=2)
    else:
        victim = "tiny-train-0001.tar"
        with tarfile.open(data / victim) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(data / victim, "w") as tar:
            for m, content in members:
                if m.name.endswith((".jpg", ".png", ".webp")) and content == members[0][1] or m is members[0][0]:
                    content = _jpeg(42)
                m.size = len(content)
                tar.addfile(m, io.BytesIO(content))
    _convert(data, out)
    fresh = tmp_path / "fresh"
    _convert(data, fresh)
    assert _files(out) == _files(fresh)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.tfrecord")}
    rewritten = {n for n in before if before[n] != after[n]}
    assert rewritten and len(rewritten) < len(before), (rewritten, before)


# --- object stores ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["parquet", "webdataset"])
def test_read_in_place_from_a_bucket(bucket, forms, tmp_path, store_env, form):  # noqa: F811 (the fixture)
    local = tmp_path / "local"
    _convert(forms[form], local)
    upload(forms[form], bucket, "data")
    out = tmp_path / "out"
    p = _convert(_url(bucket, "data"), out)
    assert LAYOUT_LINE[form] in p.stdout.splitlines(), p.stdout
    for split in ("train", "val", "test"):
        assert split_records(out, split) == split_records(local, split)
    assert (out / "rejects.tsv").read_text() == (local / "rejects.tsv").read_text()


# --- Kubeflow, locally ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("form", ["parquet", "webdataset"])
def test_kfp_local_run_converts_each_form(forms, tmp_path, form):
    out = tmp_path / "out"
    run_cli(
        "run",
        "--data",
        forms[form],
        "--output",
        out,
        "--shard-size",
        "2",
        "--max-reject-fraction",
        "1",
        "--pipeline-root",
        tmp_path / "root",
    )
    local = tmp_path / "local"
    _convert(forms[form], local)
    for split in ("train", "val", "test"):
        assert split_records(out, split) == split_records(local, split)


# --- memory: a large file is read by the ranges it needs ----------------------------------------

_MEASURE = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
    "stderr=subprocess.PIPE, text=True); print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN)"
    ".ru_maxrss); print(p.stderr, file=sys.stderr)"
)


def _peak_mb(data, out) -> float:
    """Peak RSS of a one-process conversion, measured from a small parent of its own (a child's peak
    counts the memory of the process it was forked from until its exec)."""
    import sys

    cmd = [*CLI, "convert", "--data", data, "--output", out, "--workers", "1"]
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, cmd)], capture_output=True, text=True)
    returncode, peak_kb = map(int, proc.stdout.split())
    assert returncode == 0, proc.stderr
    return peak_kb / 1024


def _blob_parquet(root: Path, blob_mb: int) -> Path:
    """One parquet file of one row group: 6 images and a column of ``blob_mb`` MB of other bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(7)
    per_row = blob_mb * (1 << 20) // 6
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": _jpeg(i, (64, 48)), "path": None} for i in range(6)],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "label": pa.array([i % 2 for i in range(6)], pa.int64()),
            "blob": pa.array([rng.bytes(per_row) for _ in range(6)], pa.binary()),
        }
    )
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": ["a", "b"]}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet", compression="none")
    return root


def test_a_large_parquet_file_converts_in_the_memory_of_its_images(tmp_path):
    """The row group's image and label columns are read, not the file: a file of 200 MB of other
    bytes converts with about the memory of one without them."""
    small = _blob_parquet(tmp_path / "small", 1)
    large = _blob_parquet(tmp_path / "large", 200)
    assert (large / "data" / "train-00000-of-00001.parquet").stat().st_size > 200 << 20
    base, peak = _peak_mb(small, tmp_path / "o1"), _peak_mb(large, tmp_path / "o2")
    assert peak - base < 40, f"peak RSS {peak:.0f} MB with a 200 MB column, {base:.0f} MB without"
    assert split_records(tmp_path / "o1", "train") == split_records(tmp_path / "o2", "train")


def test_a_brace_pattern_in_data_converts_the_shards_it_names(forms, tmp_path):
    root = forms["webdataset"]
    p = _convert(f"{root}/tiny-{{train,validation}}-{{0000..0000}}.tar", tmp_path / "out")
    assert "layout: webdataset (detected)" in p.stdout
    assert "train: 4 records in 1 shard" in p.stdout and "val: 3 records" in p.stdout, p.stdout
    assert "test: 0 records" in p.stdout
    everything = tmp_path / "all"
    _convert(root, everything)
    train = split_records(everything, "train")
    assert set(split_records(tmp_path / "out", "train")) < set(train)  # 4 of the 10
    missing = run_cli(
        "convert", "--data", f"{root}/tiny-train-{{0000..0003}}.tar", "--output", tmp_path / "o2", check=False
    )
    assert missing.returncode == 3
    assert (
        missing.stderr.strip()
        == f"error: {root}/tiny-train-0003.tar: file not found (named by tiny-train-{{0000..0003}}.tar)"
    )
