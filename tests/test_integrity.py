"""Nothing outside the output is touched, no folder that is not ours is taken, and no two commands
write one folder: tried as an attacker and an unlucky user would (links, forged and torn markers,
another library's dataset folders, kill -9 at random moments, two commands started at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from imagenet_tfrecords import output, tasks
from imagenet_tfrecords.convert import Options
from imagenet_tfrecords.fs import InputError
from imagenet_tfrecords.sample import write_sample

from .conftest import CLI, run_cli
from .test_object_stores import GcsBucket, S3Bucket, _url
from .test_ownership import checksums


def _convert(data, out, *args, **kw) -> subprocess.CompletedProcess:
    return run_cli("convert", "--data", data, "--output", out, "--shard-size", "16", "--workers", "2", *args, **kw)


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (links not followed), by relative name."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            link = path.is_symlink()
            out[rel] = "link:" + os.readlink(path) if link else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def _marker(out: Path) -> dict:
    return json.loads((out / output.MARKER).read_text())


def _set_marker(out: Path, **changes) -> None:
    (out / output.MARKER).write_text(json.dumps({**_marker(out), **changes}))


@pytest.fixture()
def victims(tmp_path) -> Path:
    """Files beside the output that no run may touch."""
    v = tmp_path / "victims"
    (v / "sub").mkdir(parents=True)
    (v / "sub" / "victim.txt").write_text("precious\n")
    (v / "victim.txt").write_text("precious too\n")
    return v


# --- removal never follows a symbolic link -----------------------------------------------------------------


def test_a_marker_naming_a_file_through_a_link_removes_nothing_outside(sample_dir, tmp_path, victims):
    before = _digests(victims)
    out = tmp_path / "out"
    _convert(sample_dir, out, "--train-shards", "2")
    (out / "link").symlink_to("../victims")  # a folder link leaving the output
    (out / "train" / "evil.tfrecord").symlink_to(victims / "victim.txt")  # a file link
    _set_marker(out, files=[*_marker(out)["files"], "link/sub/victim.txt", "link/victim.txt", "train/evil.tfrecord"])
    _convert(sample_dir, out, "--train-shards", "3")  # the marker's extra files are stale: removed if ours
    assert _digests(victims) == before
    assert (out / "link").is_symlink()  # (a folder link is left: it is no recorded file)
    assert not os.path.lexists(out / "train" / "evil.tfrecord")  # the link itself was removed, as a link
    run_cli("verify", out)


def test_a_dataset_info_naming_an_index_through_a_link_removes_nothing_outside(sample_dir, tmp_path, victims):
    before = _digests(victims)
    out = tmp_path / "out"
    _convert(sample_dir, out, "--train-shards", "2")
    (out / output.MARKER).unlink()  # an output as made before markers existed
    (out / "link").symlink_to("../victims")
    info = json.loads((out / "dataset_info.json").read_text())
    info["splits"]["train"]["shards"][0]["index"] = "link/victim.txt"
    (out / "dataset_info.json").write_text(json.dumps(info))
    ours = _digests(out)
    p = _convert(sample_dir, out, "--train-shards", "3", check=False)
    assert p.returncode == 3, p.stderr
    assert _error_line(p) == (
        f"error: {out}: not empty and not an output of imagenet-tfrecords (its dataset_info.json lists "
        "'link/victim.txt' as the index of train/train-00000-of-00002.tfrecord, not the name this project gives it); "
        "nothing was changed: choose a new or empty folder"
    )
    assert _digests(victims) == before
    assert _digests(out) == ours  # nothing changed


# --- an output made before markers: adopted only when everything in it is ours ----------------------------


def _hf_save_to_disk(folder: Path, tmp_path: Path) -> None:
    """A real Hugging Face ``save_to_disk`` folder: dataset_info.json (with its splits), state.json, arrow data."""
    datasets = pytest.importorskip("datasets")
    csv = tmp_path / "hf.csv"
    csv.write_text("text,label\na,0\nb,1\nc,0\n")
    ds = datasets.load_dataset("csv", data_files=str(csv), split="train", cache_dir=str(tmp_path / "hf-cache"))
    ds.save_to_disk(str(folder))


def _tfds_folder(data_dir: Path) -> Path:
    """A real TFDS output folder, written by a builder's download_and_prepare."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyIntegrity(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        url_infos = {}  # (nothing to download: no checksums file to look up)

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict({"x": tfds.features.Tensor(shape=(), dtype=np.int64)})
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(3)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"x": i}

    builder = TinyIntegrity(data_dir=str(data_dir))
    builder.download_and_prepare()
    return Path(builder.data_dir)


@pytest.mark.parametrize("maker", ["save_to_disk", "tfds"])
def test_another_librarys_dataset_folder_is_refused(maker, sample_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    if maker == "save_to_disk":
        out = tmp_path / "hf"
        _hf_save_to_disk(out, tmp_path)
        assert isinstance(json.loads((out / "dataset_info.json").read_text())["splits"], dict)
    else:
        out = _tfds_folder(tmp_path / "tfds")
    before = _digests(out)
    p = _convert(sample_dir, out, check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    assert _error_line(p).startswith(f"error: {out}: not empty and not an output of imagenet-tfrecords (it holds ")
    assert _digests(out) == before


@pytest.fixture(params=["gs", "s3"])
def store(request):
    """A new bucket (gs:// on the emulator, s3:// on moto)."""
    request.getfixturevalue("store_env")
    name = f"it-{uuid.uuid4().hex[:12]}"
    if request.param == "gs":
        b = GcsBucket(request.getfixturevalue("gcs_server"), name)
    else:
        b = S3Bucket(request.getfixturevalue("s3_server"), name)
    b.url = lambda key: _url(b, key)
    return b


def test_a_save_to_disk_folder_in_a_bucket_is_refused_and_dot_files_are_nobodys(
    store, sample_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hf = tmp_path / "hf"
    _hf_save_to_disk(hf, tmp_path)
    for f in hf.iterdir():
        store.put(f"hf/{f.name}", f.read_bytes())
    before = checksums(store, "hf")
    p = _convert(sample_dir, store.url("hf"), check=False)
    assert p.returncode == 3, p.stderr
    assert _error_line(p).startswith(f"error: {store.url('hf')}: not empty and not an output of imagenet-tfrecords")
    assert checksums(store, "hf") == before
    store.put("dots/._notes.txt", b"\0\5\26\7AppleDouble")
    store.put("dots/.DS_Store", b"\0\0\0\1Bud1")
    _convert(sample_dir, store.url("dots"))
    run_cli("verify", store.url("dots"))


def test_an_old_output_naming_a_users_file_as_a_shard_is_refused(sample_dir, tmp_path):
    out = tmp_path / "out"
    _convert(sample_dir, out, "--train-shards", "2")
    (out / output.MARKER).unlink()
    (out / "notes.txt").write_text("my notes\n")
    info = json.loads((out / "dataset_info.json").read_text())
    info["splits"]["train"]["shards"].append({"file": "notes.txt", "records": 0, "bytes": 9, "index": "notes.txt"})
    (out / "dataset_info.json").write_text(json.dumps(info))
    before = _digests(out)
    for _ in range(2):  # (every re-run says the same)
        p = _convert(sample_dir, out, "--train-shards", "3", check=False)
        assert p.returncode == 3, p.stderr
        assert _error_line(p) == (
            f"error: {out}: not empty and not an output of imagenet-tfrecords (its dataset_info.json lists "
            "'notes.txt', not a shard name this project writes); nothing was changed: choose a new or empty folder"
        )
        assert _digests(out) == before


def test_an_old_output_with_a_foreign_file_or_a_missing_shard_is_refused(sample_dir, tmp_path):
    out = tmp_path / "out"
    _convert(sample_dir, out, "--train-shards", "2")
    (out / output.MARKER).unlink()
    (out / "notes.txt").write_text("my notes\n")
    before = _digests(out)
    p = _convert(sample_dir, out, "--train-shards", "3", check=False)
    assert p.returncode == 3 and "(it holds notes.txt, which imagenet-tfrecords does not write" in _error_line(p)
    assert _digests(out) == before
    (out / "notes.txt").unlink()
    (out / "train" / "train-00001-of-00002.tfrecord").unlink()
    before = _digests(out)
    p = _convert(sample_dir, out, "--train-shards", "3", check=False)
    assert p.returncode == 3
    assert "(its dataset_info.json lists train/train-00001-of-00002.tfrecord, which is missing" in _error_line(p)
    assert _digests(out) == before


# --- the first marker: complete or absent; only dot-files in a folder is an empty folder --------------------


def test_a_folder_holding_only_dot_files_is_empty(sample_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "._notes.txt").write_bytes(b"\0\5\26\7AppleDouble")
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    _convert(sample_dir, out)
    run_cli("verify", out)
    assert (out / "._notes.txt").read_bytes() == b"\0\5\26\7AppleDouble"


def test_a_first_marker_left_half_written_by_a_killed_run_is_ours(sample_dir, tmp_path):
    """What a kill -9 during the first marker's write leaves: its temporary file, or (a store that
    wrote in place) an empty or torn marker; the same command then resumes."""
    for left in (".imagenet-tfrecords.json.k9x2ab7q.tmp", output.MARKER):
        for content in (b"", b'{\n "project": "imagenet-tfrec'):
            out = tmp_path / f"out-{len(content)}-{left[:3]}"
            out.mkdir()
            (out / left).write_bytes(content)
            _convert(sample_dir, out)
            assert _marker(out)["state"] == "complete"


def test_a_torn_marker_beside_foreign_files_is_not_ours(sample_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / output.MARKER).write_bytes(b"")
    (out / "notes.txt").write_text("my notes\n")
    before = _digests(out)
    p = _convert(sample_dir, out, check=False)
    assert p.returncode == 3, p.stderr
    assert "(it holds notes.txt, and no imagenet-tfrecords.json)" in _error_line(p)
    assert _digests(out) == before


_CLAIMER = """
import sys
from imagenet_tfrecords import output
base = sys.argv[1]
for i in range(1000):
    print(i, flush=True)
    output.claim(f"{base}/out-{i:04d}")
"""


@pytest.mark.slow
def test_kill_9_during_the_first_marker_write_leaves_an_output_the_same_command_resumes(sample_dir, tmp_path):
    """40 processes claiming new outputs one after the other, each killed with SIGKILL at a random
    moment: every folder they touched is still ours, and a conversion into it goes ahead."""
    rng = random.Random(26)
    touched = []
    for attempt in range(40):
        base = tmp_path / f"try-{attempt:02d}"
        base.mkdir()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        child = subprocess.Popen([sys.executable, "-c", _CLAIMER, base], stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout.readline().strip() == "0"
        time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        touched += sorted(base.iterdir())
    leftovers = [p for p in touched if any(n.endswith(".tmp") for n in os.listdir(p))]
    for out in touched:
        output.claim(str(out), write=False)  # ours (raises ForeignOutput otherwise)
    # the same command resumes: the last folder of each try, the one the kill interrupted
    for out in sorted({p.parent: p for p in touched}.values()) + leftovers[:3]:
        tasks.convert_dataset(str(sample_dir), str(out), Options(), shard_size=64, workers=1)
        assert _marker(out)["state"] == "complete"
    print(f"{len(touched)} folders touched, {len(leftovers)} with a killed writer's temporary marker")


# --- one writer: sample takes the same claim and lock as convert --------------------------------------------


@pytest.mark.slow
def test_convert_and_sample_started_together_into_one_new_folder(sample_dir, tmp_path):
    """The CLI commands, started at once, looped: exactly one writes the folder, never a mix. (Whether a
    loop hits the few milliseconds where both find the folder empty depends on the machine: the next
    test makes that moment certain.)"""
    rng = random.Random(3)
    winners = []
    for attempt in range(10):
        out = tmp_path / f"cli-{attempt:02d}"
        delay = rng.uniform(0, 0.4)
        convert = subprocess.Popen(
            [*CLI, "convert", "--data", str(sample_dir), "--output", str(out), "--workers", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        sample = subprocess.Popen(
            [*CLI, "sample", "--output", out, "--classes", "2", "--train-per-class", "2", "--val", "2", "--test", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        (_, c_err), (_, s_err) = convert.communicate(timeout=120), sample.communicate(timeout=120)
        winners.append(_one_winner(out, convert.returncode, sample.returncode, f"{delay} {c_err} {s_err}"))
    print("winners:", winners)


def _one_winner(out: Path, convert: int, sample: int, context: str) -> str:
    """Which of convert and sample wrote ``out``; fails unless exactly one did and the folder is its alone."""
    assert sorted((convert, sample)) == [0, 3], (context, convert, sample)
    names = set(os.listdir(out))
    if sample == 0:
        assert names == {"wnids.txt", "words.txt", "train", "val", "test"}, (context, names)
        return "sample"
    assert "wnids.txt" not in names and _marker(out)["state"] == "complete", (context, names)
    run_cli("verify", out)
    return "convert"


def test_a_conversion_claiming_the_folder_while_sample_starts_is_refused(sample_dir, tmp_path, monkeypatch):
    """The race made certain: convert's claim runs in the middle of sample's start, between sample's
    look at the folder and its first file. Exactly one of them may go ahead."""
    from imagenet_tfrecords import sample as sample_module

    out = tmp_path / "out"
    convert_claim: list = []
    draw = sample_module._class_base

    def claim_meanwhile(*args):
        if not convert_claim:
            try:
                output.claim(str(out))  # what convert does first
                convert_claim.append("went ahead")
            except InputError as e:
                convert_claim.append(str(e))
        return draw(*args)

    monkeypatch.setattr(sample_module, "_class_base", claim_meanwhile)
    try:
        write_sample(str(out), classes=2, train_per_class=2, val=2, test=2)
        sampled = "went ahead"
    except InputError as e:
        sampled = str(e)
    assert [convert_claim[0], sampled].count("went ahead") == 1, (convert_claim, sampled)
    assert convert_claim[0].startswith(f"{out}: imagenet-tfrecords sample is writing a dataset there")
    assert set(os.listdir(out)) == {"wnids.txt", "words.txt", "train", "val", "test"}


# --- a damaged marker's files, a dataset_info.json naming files outside -----------------------------------


@pytest.mark.parametrize("bad", [7, {"file": "x"}, None, "train/a\u0000b.tfrecord", "train", "../victims/victim.txt"])
def test_a_marker_whose_files_are_not_file_names_is_one_line_every_time(bad, sample_dir, tmp_path, victims):
    out = tmp_path / "out"
    _convert(sample_dir, out, "--train-shards", "2")
    _set_marker(out, files=[*_marker(out)["files"], bad])
    before, theirs = _digests(out), _digests(victims)
    for _ in range(2):
        p = _convert(sample_dir, out, "--train-shards", "3", check=False)
        assert p.returncode == 3, p.stderr
        line = _error_line(p)
        assert line.startswith(f'error: {out / output.MARKER}: damaged: its "files" '), line
        assert "remove imagenet-tfrecords.json" in line
        assert _digests(out) == before and _digests(victims) == theirs


def test_verify_never_opens_a_file_named_outside_the_output(output, tmp_path):
    fifo = tmp_path / "outside.fifo"  # opening it for reading would block: a test that nothing opened it
    os.mkfifo(fifo)
    info = json.loads((output / "dataset_info.json").read_text())
    shards = info["splits"]["train"]["shards"]
    shards[0]["file"] = "../outside.fifo"
    shards[1]["file"] = "/etc/passwd"
    shards[1]["index"] = "../../etc/passwd"
    (output / "dataset_info.json").write_text(json.dumps(info))
    p = run_cli("verify", output, check=False, timeout=60)
    assert p.returncode == 4, p.stderr
    assert "'../outside.fifo': named in dataset_info.json, outside the output; not opened" in p.stderr
    assert "'/etc/passwd': named in dataset_info.json, outside the output; not opened" in p.stderr
    assert "'../../etc/passwd': named in dataset_info.json, outside the output; not opened" in p.stderr


# --- a shard swapped is a shard broken --------------------------------------------------------------------


def test_two_shards_of_the_same_size_swapped_fail_verify_and_are_converted_again(sample_dir, tmp_path):
    out = tmp_path / "out"
    _convert(sample_dir, out, "--shard-size", "4")
    info = json.loads((out / "dataset_info.json").read_text())
    shards = [s for split in info["splits"].values() for s in split["shards"]]
    assert all(len(s["sha256"]) == 64 and len(s["index_sha256"]) == 64 for s in shards)
    by_size: dict[int, list] = {}
    for s in shards:
        by_size.setdefault(s["bytes"], []).append(s)
    a, b = next(group for group in by_size.values() if len(group) > 1)[:2]
    original = {s["file"]: (out / s["file"]).read_bytes() for s in (a, b)}
    assert original[a["file"]] != original[b["file"]]
    (out / a["file"]).write_bytes(original[b["file"]])  # swapped: same sizes, valid framing and CRCs
    (out / b["file"]).write_bytes(original[a["file"]])
    for flags in ((), ("--tf",)):
        p = run_cli("verify", out, *flags, check=False)
        assert p.returncode == 4, p.stderr
        lines = p.stderr.splitlines()[1:]
        assert len(lines) == 4, p.stderr
        for s, (content, names) in zip((a, b), (lines[:2], lines[2:]), strict=True):
            assert (
                content
                == f"{s['file']}: its content is not the one recorded (SHA-256 differs from dataset_info.json's)"
            )
            n = s["records"]  # each holds the other's records: none is one of its own planned inputs
            assert names.startswith(
                f"{s['file']}: {n} of {n} records are not of this shard's planned inputs (record 0: "
            )
    p = _convert(sample_dir, out, "--shard-size", "4")
    assert f"2 shards converted, {len(shards) - 2} kept from an earlier run" in p.stdout, p.stdout
    assert {s["file"]: (out / s["file"]).read_bytes() for s in (a, b)} == original
    run_cli("verify", out)


# --- over --max-reject-fraction: marked rejected, not complete ----------------------------------------------


def _break_some(root: Path) -> None:
    (root / "val" / "images" / "val_7.JPEG").write_text("not an image")
    (root / "test" / "images" / "test_3.JPEG").write_bytes(b"")


def test_a_run_over_its_reject_fraction_leaves_an_output_marked_rejected(sample_copy, tmp_path):
    _break_some(sample_copy)
    out = tmp_path / "out"
    p = _convert(sample_copy, out, check=False)
    assert p.returncode == 3 and "2 of 122 inputs rejected (1.6%), above the allowed 1.0%" in p.stderr, p.stderr
    assert _marker(out)["state"] == "rejected"
    p = run_cli("verify", out, check=False)
    assert p.returncode == 4, p.stderr
    assert _error_line(p) == (
        f"error: {out} is rejected: 2 of 122 inputs rejected (1.6%), above the allowed 1.0% (imagenet-tfrecords.json: "
        "state 'rejected'); convert again with a higher --max-reject-fraction to accept it, or read it anyway with "
        "load(..., allow_rejected=True)"
    )
    from imagenet_tfrecords.reader import load
    from imagenet_tfrecords.torch import TFRecordImages

    with pytest.raises(output.RejectedOutput, match=r"is rejected: 2 of 122 inputs rejected \(1\.6%\)"):
        load(str(out), "val")
    with pytest.raises(output.RejectedOutput):
        TFRecordImages(str(out), "val")
    assert sum(1 for _ in load(str(out), "val", allow_rejected=True)) == 29
    assert len(list(TFRecordImages(str(out), "val", allow_rejected=True))) == 29
    p = _convert(sample_copy, out, "--max-reject-fraction", "0.02")  # accepted: nothing converted again
    assert "nothing to convert" in p.stdout and _marker(out)["state"] == "complete"
    run_cli("verify", out)


def test_the_pipelines_aggregate_step_marks_an_output_over_its_reject_fraction_rejected(sample_copy, tmp_path):
    _break_some(sample_copy)
    out, art = str(tmp_path / "out"), tmp_path / "artifacts"
    from imagenet_tfrecords.stats import TooManyRejects

    def pipeline(fraction: float) -> None:
        plan = str(art / "plan.json")
        tasks_, _ = tasks.plan_step(
            str(sample_copy), out, 16, 1, plan, str(art / "labels.txt"), max_reject_fraction=fraction
        )
        done = [tasks.convert_step(plan, t, str(art / f"m{t}.json")) for t in tasks_]
        tasks.aggregate_step(plan, done, str(art / "ds"), str(art / "sizes"), str(art / "r"))

    with pytest.raises(TooManyRejects):
        pipeline(0.01)
    assert _marker(Path(out))["state"] == "rejected"
    pipeline(0.05)  # (the same run again with a higher limit: its shards are kept)
    assert _marker(Path(out))["state"] == "complete"


# --- a re-run with another format or size says what it removed ---------------------------------------------


def test_a_rerun_with_another_format_or_resize_says_what_it_removed(sample_dir, tmp_path):
    out = tmp_path / "out"
    p = _convert(sample_dir, out, "--train-shards", "2")
    assert "removed" not in p.stdout
    n = sum(len(s["shards"]) for s in json.loads((out / "dataset_info.json").read_text())["splits"].values())
    p = _convert(sample_dir, out, "--train-shards", "2", "--format", "tf-models")
    assert p.stdout.splitlines()[0] == (
        f"removed {n} shards of an earlier run (format seed, images at their own size): this run writes format "
        "tf-models, images at their own size"
    )
    p = _convert(sample_dir, out, "--train-shards", "2", "--format", "tf-models", "--resize", "32x24")
    assert p.stdout.splitlines()[0] == (
        f"removed {n} shards of an earlier run (format tf-models, images at their own size): this run writes format "
        "tf-models, images resized to 32x24 (width x height, squash)"
    )
    p = _convert(sample_dir, out, "--train-shards", "2", "--format", "tf-models", "--resize", "32x24")
    assert "removed" not in p.stdout and "nothing to convert" in p.stdout
    run_cli("verify", out)


def test_an_interrupted_rerun_with_a_new_resize_resumes_what_it_made(sample_dir, tmp_path):
    out = tmp_path / "out"
    _convert(sample_dir, out)
    done = []

    def stop_after_two(stats: dict) -> None:
        done.append(stats["file"])
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tasks.convert_dataset(
            str(sample_dir), str(out), Options(resize="32x24"), shard_size=16, workers=1, on_done=stop_after_two
        )
    assert _marker(out)["state"] == "writing" and _marker(out)["resize"] == {
        "mode": "squash",
        "width": 32,
        "height": 24,
    }
    p = _convert(sample_dir, out, "--resize", "32x24")
    assert "removed" not in p.stdout and ", 2 kept from an earlier run" in p.stdout, p.stdout
    run_cli("verify", out)


def test_only_a_dead_writers_own_temporary_is_removed_never_a_link_or_a_fifo_of_that_name(tmp_path):
    import threading

    from imagenet_tfrecords.fs import Location, publish

    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("not the output's")
    link, fifo, dead = (out / f".shard.tfrecord.{s}.tmp" for s in ("link1234", "fifo1234", "dead1234"))
    link.symlink_to(victim)
    os.mkfifo(fifo)
    dead.write_bytes(b"partial")  # a killed writer's: nobody holds its flock

    def write():
        with publish(Location.of(str(out / "shard.tfrecord"))) as f:
            f.write(b"records")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(30)
    assert not writer.is_alive(), "publish hung on a FIFO named as a temporary"
    assert (out / "shard.tfrecord").read_bytes() == b"records"
    assert link.is_symlink() and victim.read_text() == "not the output's"
    assert fifo.exists() and not dead.exists()


def test_a_plan_folder_without_an_owner_file_is_kept_however_old(tmp_path):
    from imagenet_tfrecords.listing import OWNER_FILE, SPILL_PREFIX, remove_abandoned_spills

    unowned, abandoned = tmp_path / f"{SPILL_PREFIX}old", tmp_path / f"{SPILL_PREFIX}dead"
    for d in (unowned, abandoned):
        d.mkdir()
        (d / "0").write_text("rows")
        os.utime(d, (time.time() - 30 * 86400,) * 2)
    (abandoned / OWNER_FILE).touch()  # its run's lock file, free: the run is gone
    assert remove_abandoned_spills(str(tmp_path)) == [str(abandoned)]
    assert (unowned / "0").read_text() == "rows"


def test_a_link_a_folder_or_a_fifo_among_the_writers_files_is_no_writer(tmp_path):
    """A writer's file is read and flocked never through a link (to a file another process
    flocks: the output was busy for ever), never opened if a FIFO (the run hung), and a folder
    there is no dead writer's file to remove (the run failed)."""
    import fcntl
    import threading

    from imagenet_tfrecords.lock import WORK_DIR, WRITERS, hold

    out, victim = tmp_path / "out", tmp_path / "victim.json"
    writers = out / WORK_DIR / WRITERS
    writers.mkdir(parents=True)
    victim.write_text(json.dumps({"run": "someone-else", "host": "h", "pid": 1}))
    held = os.open(victim, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a live writer holds its file
    (writers / "h-1-link.json").symlink_to(victim)
    os.mkfifo(writers / "h-2-fifo.json")
    (writers / "h-3-folder.json").mkdir()
    done: list = []

    def take() -> None:
        try:
            with hold(str(out)):
                done.append("held")
        except Exception as e:  # (the test reports it)
            done.append(e)

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    taker.join(30)
    os.close(held)
    assert not taker.is_alive(), "taking the output hung on a FIFO among the writers' files"
    assert done == ["held"], done
    assert (writers / "h-1-link.json").is_symlink() and json.loads(victim.read_text())["run"] == "someone-else"
    assert (writers / "h-2-fifo.json").exists() and (writers / "h-3-folder.json").is_dir()
