"""The output is ours, and never called complete when it is not.

Every command that writes an output refuses a folder holding files it did not write (checksums of
every foreign file before and after: nothing changes), a re-run removes only files an earlier run
recorded (another plan's or another format's), an interrupted re-run leaves an output that every
reader refuses, and a shard with inputs that could not be read is converted again. Each case runs on
a local folder and on a bucket (gs:// with the emulator, s3:// with moto) where a bucket applies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from imagenet_tfrecords import output, tasks
from imagenet_tfrecords.convert import Options
from imagenet_tfrecords.sample import write_sample

from .conftest import CLI, META, run_cli
from .test_object_stores import GcsBucket, S3Bucket, _url

FOREIGN = {  # another tool's output, and a user's notes
    "train/train-00005-of-00010.tfrecord": b"another tool's shard",
    "val/val-00000-of-00003.tfrecord": b"another tool's val shard",
    "train/mydata-00000.tfrecord": b"another tool's data",
    "notes.txt": b"my notes\n",
    "sizes.txt": b"train,10\nval,3\ntest,0",
}


class LocalStore:
    """A local folder with the interface of the test buckets (put, keys, get)."""

    scheme = "file"

    def __init__(self, root: Path):
        self.root = root

    def url(self, key: str) -> str:
        return str(self.root / key)

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


@pytest.fixture(params=["local", "gs", "s3"])
def store(request, tmp_path):
    """Where the output goes: a local folder or a new bucket."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    request.getfixturevalue("store_env")
    name = f"it-{uuid.uuid4().hex[:12]}"
    if request.param == "gs":
        b = GcsBucket(request.getfixturevalue("gcs_server"), name)
    else:
        b = S3Bucket(request.getfixturevalue("s3_server"), name)
    b.url = lambda key: _url(b, key)
    return b


def checksums(store, prefix: str) -> dict[str, str]:
    """sha256 of every file under ``prefix/``, by name relative to it."""
    return {k[len(prefix) + 1 :]: hashlib.sha256(store.get(k)).hexdigest() for k in store.keys(prefix + "/")}


def _error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


# --- 1. ownership: a folder of someone else's files is refused, and nothing in it changes -----------------


def test_convert_refuses_a_folder_of_foreign_files(store, sample_dir):
    for key, data in FOREIGN.items():
        store.put(f"out/{key}", data)
    before = checksums(store, "out")
    assert len(before) == len(FOREIGN)
    out = store.url("out")
    p = run_cli("convert", "--data", sample_dir, "--output", out, check=False)
    assert p.returncode == 3, p.stderr
    assert _error_line(p).startswith(f"error: {out}: not empty and not an output of imagenet-tfrecords (it holds ")
    assert any(f"it holds {name}," in p.stderr for name in FOREIGN), p.stderr
    assert checksums(store, "out") == before  # nothing changed, nothing added
    # the pipeline's plan step refuses it too, before any work
    with pytest.raises(output.ForeignOutput):
        tasks.plan_step(str(sample_dir), out, 500, 1, "/nonexistent/plan.json", "/nonexistent/labels.txt")
    assert checksums(store, "out") == before


def test_run_and_submit_refuse_a_folder_of_foreign_files(sample_dir, tmp_path):
    store = LocalStore(tmp_path)
    for key, data in FOREIGN.items():
        store.put(f"out/{key}", data)
    before = checksums(store, "out")
    out = tmp_path / "out"
    for command in (["run"], ["submit", "--host", "http://127.0.0.1:9", "--mounted"]):
        p = run_cli(*command, "--data", sample_dir, "--output", out, check=False)
        assert p.returncode == 3, p.stderr
        assert _error_line(p).startswith(f"error: {out}: not empty and not an output of imagenet-tfrecords")
    assert checksums(store, "out") == before


def test_sample_refuses_a_dataset_folder_and_a_file(sample_copy, tmp_path):
    """``sample --output`` given a dataset by mistake (with the real TinyImageNet metadata where it is here)."""
    for name in ("wnids.txt", "words.txt"):
        if (META / name).exists():
            shutil.copy(META / name, sample_copy / name)
    store = LocalStore(sample_copy.parent)
    before = checksums(store, sample_copy.name)
    p = run_cli("sample", "--output", sample_copy, check=False)
    assert p.returncode == 3, p.stderr
    assert _error_line(p) == (
        f"error: {sample_copy}: not empty (it holds wnids.txt); nothing was changed: sample writes only into a new or "
        "empty folder"
    )
    assert checksums(store, sample_copy.name) == before
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    p = run_cli("sample", "--output", a_file, check=False)
    assert p.returncode == 3, p.stderr
    assert _error_line(p) == f"error: {a_file}: the output is a file, not a folder"
    assert a_file.read_text() == "mine"


# --- 2. clean-up by record: our own earlier files go, foreign ones stay ------------------------------------


def _convert(data, out, *args, **kw) -> subprocess.CompletedProcess:
    return run_cli("convert", "--data", data, "--output", out, "--shard-size", "16", *args, **kw)


def _ours(store, prefix: str) -> set[str]:
    """Files of an output outside _work/."""
    return {k for k in checksums(store, prefix) if not k.startswith("_work/")}


def test_a_format_switch_leaves_no_file_of_the_earlier_format(store, sample_dir, tmp_path):
    clean = {}
    for fmt in ("seed", "tfds", "tf-models"):
        ref = LocalStore(tmp_path / f"clean-{fmt}")
        _convert(sample_dir, ref.url("out"), "--format", fmt)
        clean[fmt] = checksums(ref, "out")
    out = store.url("out")
    for fmt in ("seed", "tfds", "tf-models"):
        _convert(sample_dir, out, "--format", fmt)
        got = checksums(store, "out")
        assert _ours(store, "out") == {k for k in clean[fmt] if not k.startswith("_work/")}, fmt
        for name, digest in clean[fmt].items():
            if not name.startswith("_work/") and not name.endswith((".json", ".html")):  # (timings, URLs)
                assert got[name] == digest, f"{fmt}: {name} differs from a clean conversion"
        assert got.get(output.MARKER) == clean[fmt].get(output.MARKER)
        if store.scheme == "file" and fmt == "tfds":  # the split folders the seed run made, now empty, are gone
            assert sorted(p.name for p in (store.root / "out").iterdir() if p.is_dir()) == ["_work"]
        run_cli("verify", out)
    if store.scheme == "file":  # the split folders that the tfds run made empty are gone, then made again
        assert sorted(p.name for p in (store.root / "out").iterdir() if p.is_dir()) == ["_work", "test", "train", "val"]


def test_a_rerun_removes_only_what_earlier_runs_recorded(store, sample_dir):
    out = store.url("out")
    _convert(sample_dir, out, "--train-shards", "6")
    foreign = {
        "notes.txt": b"mine",
        "train/mydata-00000.tfrecord": b"mine too",
        "train/train-00009-of-00010.tfrecord": b"x",
    }
    for key, data in foreign.items():
        store.put(f"out/{key}", data)
    _convert(sample_dir, out, "--train-shards", "4")
    got = checksums(store, "out")
    for key, data in foreign.items():  # a file we did not write is never removed, whatever its name
        assert got[key] == hashlib.sha256(data).hexdigest()
    train = sorted(k for k in got if k.startswith("train/train-") and k.endswith("-of-00004.tfrecord"))
    assert len(train) == 4 and not any(k.endswith("-of-00006.tfrecord") for k in got)
    # verify reports what a *.tfrecord glob would read besides the dataset
    p = run_cli("verify", out, check=False)
    assert p.returncode == 4, p.stderr
    assert "train/mydata-00000.tfrecord: a file dataset_info.json does not list" in p.stderr
    assert "train/train-00009-of-00010.tfrecord: a file dataset_info.json does not list" in p.stderr


def test_an_output_made_before_markers_is_ours_by_its_dataset_info(sample_dir, tmp_path):
    out = tmp_path / "out"
    _convert(sample_dir, out, "--train-shards", "6")
    (out / output.MARKER).unlink()  # as an earlier version left it
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # (names starting with "." are nobody's files)
    p = _convert(sample_dir, out, "--train-shards", "6")
    assert "nothing to convert: all 10 shards kept" in p.stdout
    (out / output.MARKER).unlink()
    _convert(sample_dir, out, "--train-shards", "3")
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        f"train-0000{i}-of-00003.tfrecord{idx}" for i in range(3) for idx in ("", ".idx")
    ]


# --- 3. incomplete is visible: an interrupted re-run of another plan ---------------------------------------

CLASSES, PER_CLASS = 40, 150
OLD, NEW = 40, 50  # train shards of the first run, and of the interrupted re-run
INTERRUPT_AFTER = 4  # new train shards


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    write_sample(str(d), classes=CLASSES, train_per_class=PER_CLASS, val=200, test=100)
    return d


@pytest.fixture(scope="module")
def clean_new(big, tmp_path_factory) -> LocalStore:
    """An uninterrupted conversion with the new plan."""
    ref = LocalStore(tmp_path_factory.mktemp("clean"))
    run_cli("convert", "--data", big, "--output", ref.url("out"), "--workers", "2", "--train-shards", NEW)
    return ref


def _start(data, out, train_shards: int) -> subprocess.Popen:
    cmd = [*CLI, "convert", "--data", str(data), "--output", out, "--workers", "1", "--train-shards", str(train_shards)]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _comparable(store, prefix: str) -> dict:
    """Every file outside _work/ but the report: JSON without timings and locations, others by digest."""
    out = {}
    for name, digest in checksums(store, prefix).items():
        if name.startswith("_work/") or name == "report.html":
            continue
        if name.endswith(".json"):
            info = json.loads(store.get(f"{prefix}/{name}"))
            out[name] = {k: v for k, v in info.items() if k not in ("run", "root")}
            for split in out[name].get("splits", {}).values() if isinstance(out[name].get("splits"), dict) else []:
                split.pop("seconds", None)
        else:
            out[name] = digest
    return out


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_an_interrupted_rerun_of_another_plan_is_refused_by_every_reader(store, big, clean_new):
    out = store.url("out")
    run_cli("convert", "--data", big, "--output", out, "--workers", "2", "--train-shards", OLD)
    proc = _start(big, out, NEW)
    deadline = time.monotonic() + 180
    while sum(k.endswith(f"-of-{NEW:05d}.tfrecord") for k in store.keys("out/train/")) < INTERRUPT_AFTER:
        assert proc.poll() is None, f"the re-run ended (exit {proc.returncode}) before it was interrupted"
        assert time.monotonic() < deadline, "no new train shards after 180 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 5, stderr
    train = [k for k in store.keys("out/train/") if k.endswith(".tfrecord")]
    assert INTERRUPT_AFTER <= len(train) < NEW, "the interrupt did not land mid-way"
    # no mixture where a *.tfrecord glob reads: the old plan's shards were removed before new ones were written
    assert all(k.endswith(f"-of-{NEW:05d}.tfrecord") for k in train), train
    marker = json.loads(store.get(f"out/{output.MARKER}"))
    assert marker["state"] == output.WRITING
    # every reader refuses it, with one line
    p = run_cli("verify", out, check=False)
    assert p.returncode == 4, p.stderr
    assert _error_line(p) == (
        f"error: {out} is incomplete: a conversion started changing it and did not finish "
        f"({output.MARKER}: state 'writing'); run the conversion again to complete it"
    )
    import imagenet_tfrecords

    with pytest.raises(output.IncompleteOutput, match="is incomplete"):
        imagenet_tfrecords.load(out, "train")
    torch_reader = pytest.importorskip("imagenet_tfrecords.torch")
    with pytest.raises(output.IncompleteOutput, match="is incomplete"):
        torch_reader.TFRecordImages(out, "train")
    # the same command completes it, equal to an uninterrupted run with the new plan
    run_cli("convert", "--data", big, "--output", out, "--workers", "2", "--train-shards", NEW)
    assert _comparable(store, "out") == _comparable(clean_new, "out")
    assert run_cli("verify", out).stdout.startswith(f"train,{CLASSES * PER_CLASS}\nval,200\ntest,100\n")


# --- 4. I/O errors are not kept ------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["local", "gs"], indirect=True)
def test_a_shard_with_read_errors_is_converted_again(store, sample_copy, sample_dir, tmp_path):
    """A class folder away for a moment while the run reads it: its images are 'cannot read' rejects; once it
    is back, the same command converts those shards again rather than keeping them."""
    out = store.url("out")
    wnid = sorted(p.name for p in (sample_copy / "train").iterdir())[0]
    folder, away = sample_copy / "train" / wnid, tmp_path / "away"
    options = Options()

    def move_away(plan):  # after planning listed every file, before any is read
        folder.rename(away)

    _, info = tasks.convert_dataset(str(sample_copy), out, options, shard_size=16, workers=1, on_plan=move_away)
    away.rename(folder)
    assert info["rejected"] == 12 and all(r["reason"].startswith("cannot read: ") for r in info["rejects"])
    p = run_cli("convert", "--data", sample_copy, "--output", out, "--shard-size", "16", "--workers", "1")
    assert "no rejects" in p.stdout, p.stdout
    assert "train: 72 records" in p.stdout
    ref = LocalStore(tmp_path / "ref")
    run_cli("convert", "--data", sample_copy, "--output", ref.url("out"), "--shard-size", "16", "--workers", "1")
    assert _comparable(store, "out") == _comparable(ref, "out")


def test_a_plan_step_refusing_a_foreign_output_is_bad_input_for_run():
    """In the local pipeline the plan step's ForeignOutput is the step's one-line cause, exit 3."""
    from imagenet_tfrecords_kfp.commands import step_failure

    log = (
        "Task 'parse-metadata' finished with status FAILURE\n"
        "imagenet_tfrecords.output.ForeignOutput: /x: not empty and not an output of imagenet-tfrecords (it holds a)\n"
    )
    failure = step_failure(log)
    assert failure.code == 3 and str(failure).startswith("/x: not empty and not an output of imagenet-tfrecords")


def test_a_damaged_marker_is_ours_incomplete_and_mended_by_a_rerun(sample_dir, tmp_path):
    out = tmp_path / "out"
    _convert(sample_dir, out, "--train-shards", "6")
    (out / output.MARKER).write_text('{"project": "imagenet-tfr')  # torn
    p = run_cli("verify", out, check=False)
    assert p.returncode == 4 and "state 'damaged'" in _error_line(p)
    _convert(sample_dir, out, "--train-shards", "3")  # the files of the earlier run come from its dataset_info.json
    assert sorted(p.name for p in (out / "train").glob("*.tfrecord")) == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    run_cli("verify", out)
