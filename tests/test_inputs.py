"""Inputs that are not data, odd names and links, unreadable folders, broken outputs and a missing
environment, through the CLI as a user runs it: each is ignored, one reject with its reason, or one
line naming the path with the documented exit code (3 for input and environment problems).

The permission cases drop root's override of file permissions with setpriv (the tests run as root
here); the full-disk case mounts a 2 MiB tmpfs (root only).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from imagenet_tfrecords.cli import parser
from imagenet_tfrecords.report import _size

from .conftest import CLI, ROOT, run_cli
from .tars import tar_of
from .test_hostile import _jpeg
from .test_imagenet_archive import VAL_TAR, write_archives
from .test_imagenet_layout import write_imagenet
from .test_object_stores import bucket, upload  # noqa: F401 (bucket: a fixture)

JUNK = {".DS_Store": b"\x00\x00\x00\x01Bud1", "Thumbs.db": b"\xd0\xcf\x11\xe0", "desktop.ini": b"[.ShellClassInfo]"}
DROP_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


def _info(out: Path) -> dict:
    return json.loads((out / "dataset_info.json").read_text())


def _one_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr
    return lines[0]


def _litter(root: Path) -> int:
    """Put a .DS_Store in every folder under ``root`` (itself included); return how many."""
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for d in folders:
        (d / ".DS_Store").write_bytes(JUNK[".DS_Store"])
    return len(folders)


def _sha1s(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and (p.suffix in (".tfrecord", ".idx") or p.name == "sizes.txt")
    }


# --- 1. files every user has that are not data ------------------------------------------------


def test_finder_and_explorer_files_are_ignored_in_the_tinyimagenet_layout(sample_copy, tmp_path):
    littered = _litter(sample_copy)
    train = sample_copy / "train"
    (train / "Thumbs.db").write_bytes(JUNK["Thumbs.db"])
    (train / ".git").mkdir()  # a hidden folder beside the class folders: not a class, not a reject
    (train / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    first = sorted(p for p in train.iterdir() if p.name.startswith("n"))[0]
    (first / "images" / "._n0_0.JPEG").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (sample_copy / "val" / "images" / "desktop.ini").write_bytes(JUNK["desktop.ini"])
    out = tmp_path / "out"
    p = run_cli("convert", "--data", sample_copy, "--output", out)  # the default 1 % reject limit
    info = _info(out)
    assert info["rejected"] == 0 and (out / "rejects.tsv").read_text() == ""
    assert info["num_classes"] == 6
    classes = len(info["splits"]["train"]["label_counts"])
    # train/: .DS_Store, Thumbs.db, .git; each train/<wnid>/.DS_Store and train/<wnid>/images/.DS_Store;
    # the AppleDouble file. val/ and val/images/: a .DS_Store each, and desktop.ini; test/ and test/images/.
    ignored = {split: s["ignored"] for split, s in info["splits"].items()}
    assert ignored == {"train": 3 + 2 * classes + 1, "val": 3, "test": 2}
    assert sum(ignored.values()) == littered - 1 + 4  # every file but the root's .DS_Store, never listed
    assert "; 2 ignored (.DS_Store" in next(line for line in p.stdout.splitlines() if line.startswith("test:"))
    assert info["found"] == sum(s["num_records"] for s in info["splits"].values())  # not inputs
    assert "ignored" in p.stdout.splitlines()[0]
    report = (out / "report.html").read_text()
    assert ">ignored</th>" in report and "were rejected" not in report


def _imagefolder(root: Path) -> Path:
    for n, rel in enumerate(
        ["train/cat/c1.jpg", "train/cat/c2.jpg", "train/dog/d1.jpg", "val/cat/v1.jpg", "val/dog/v2.jpg", "test/t1.jpg"]
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_jpeg(seed=n))
    return root


def test_a_ds_store_in_every_folder_of_class_folders_is_ignored_and_never_a_class(tmp_path):
    data = _imagefolder(tmp_path / "data")
    littered = _litter(data)
    (data / "train" / ".hidden-class").mkdir()
    (data / "train" / ".hidden-class" / "x.jpg").write_bytes(_jpeg())
    out = tmp_path / "out"
    p = run_cli("convert", "--data", data, "--output", out, check=False)
    assert p.returncode == 0, p.stderr
    info = _info(out)
    assert (out / "labels.txt").read_text() == "cat\tcat\ndog\tdog\n"
    assert info["rejected"] == 0 and info["found"] == 6
    ignored = {split: s["ignored"] for split, s in info["splits"].items()}
    # root/.DS_Store is never listed; train/: .DS_Store and the hidden folder, and one per class folder
    assert ignored == {"train": 2 + 2, "val": 1 + 2, "test": 1}
    assert sum(ignored.values()) == littered - 1 + 1


def test_ignored_names_in_the_imagenet_layout_extracted_and_as_archives(tmp_path):
    clean = write_imagenet(tmp_path / "clean")
    data = write_imagenet(tmp_path / "data")
    for d in ("", "ILSVRC/Data/CLS-LOC/train", "ILSVRC/Data/CLS-LOC/val", "ILSVRC/Data/CLS-LOC/test"):
        (data / d / ".DS_Store").write_bytes(JUNK[".DS_Store"])
    first = sorted(p for p in (data / "ILSVRC/Data/CLS-LOC/train").iterdir() if p.is_dir())[0]
    (first / "._image.JPEG").write_bytes(b"AppleDouble")
    runs = {}
    for name, root in (("clean", clean), ("data", data)):
        run_cli("convert", "--data", root, "--output", tmp_path / f"out-{name}", "--max-reject-fraction", "1")
        runs[name] = _info(tmp_path / f"out-{name}")
    assert runs["data"]["rejects"] == runs["clean"]["rejects"]  # the junk is no reject
    assert {k: s["ignored"] for k, s in runs["data"]["splits"].items()} == {"train": 2, "val": 1, "test": 1}

    archives = write_archives(tmp_path / "archives", train_extra={"._n01440764.tar": b"AppleDouble"})
    with tarfile.open(archives / VAL_TAR) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members["._ILSVRC2012_val_00000001.JPEG"] = b"AppleDouble"
    (archives / VAL_TAR).write_bytes(tar_of(members, fmt=tarfile.PAX_FORMAT))
    out = tmp_path / "out-archives"
    run_cli("convert", "--data", archives, "--output", out, "--max-reject-fraction", "1")
    info = _info(out)
    assert {k: s["ignored"] for k, s in info["splits"].items()} == {"train": 1, "val": 1, "test": 0}
    assert not [r for r in info["rejects"] if "._" in r["path"]]


def test_ignored_names_on_object_stores(bucket, tmp_path):  # noqa: F811 (the fixture)
    data = _imagefolder(tmp_path / "data")
    _litter(data)
    upload(data, bucket, "data")
    out = tmp_path / "out"
    p = run_cli("convert", "--data", f"{bucket.scheme}://{bucket.name}/data", "--output", out, check=False)
    assert p.returncode == 0, p.stderr
    info = _info(out)
    assert info["rejected"] == 0 and info["num_classes"] == 2
    assert {k: s["ignored"] for k, s in info["splits"].items()} == {"train": 3, "val": 3, "test": 1}


def test_the_reject_limit_names_its_option_and_the_top_reasons(tmp_path):
    data = _imagefolder(tmp_path / "data")
    (data / "train" / "cat" / "notes.txt").write_text("notes")
    (data / "train" / "dog" / "todo.txt").write_text("todo")
    (data / "train" / "dog" / "empty.jpg").write_bytes(b"")
    p = run_cli("convert", "--data", data, "--output", tmp_path / "out", check=False)
    assert p.returncode == 3
    line = _one_line(p)
    assert "above the allowed 1.0% (--max-reject-fraction, pipeline parameter max_reject_fraction)" in line
    assert "top reasons: 2 \u00d7 not an image file (extension .txt); 1 \u00d7 empty file (0 bytes)" in line


# --- 2. one documented exit code per failure, fast -----------------------------------------------


def _without(env: dict, *names) -> dict:
    return {k: v for k, v in env.items() if k not in names}


def test_s3_without_credentials_is_one_line_in_seconds(store_env, sample_dir, tmp_path):
    env = _without(os.environ, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    for args in (["convert", "--data", "s3://no-keys/data", "--output", tmp_path / "out"], ["verify", "s3://b/out"]):
        started = time.monotonic()
        p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env)
        assert p.returncode == 3, p.stderr
        bucket_url = "s3://no-keys" if args[0] == "convert" else "s3://b"
        assert _one_line(p).startswith(f"error: no credentials for {bucket_url}: set AWS_ACCESS_KEY_ID")
        assert time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("gce_check", ["skipped", "probed"])
def test_gs_without_credentials_is_one_line_in_seconds(store_env, tmp_path, gce_check):
    env = _without(os.environ, "STORAGE_EMULATOR_HOST", "FSSPEC_GS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS")
    env["GCE_METADATA_HOST"] = "127.0.0.1:1"  # (conftest's NO_GCE_CHECK also keeps google-auth away)
    if gce_check == "probed":  # our own probe of a metadata server, at an address where nothing answers
        del env["NO_GCE_CHECK"]
    started = time.monotonic()
    p = subprocess.run(
        [*CLI, "convert", "--data", "gs://no-keys/tiny", "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.monotonic() - started
    assert p.returncode == 3, p.stderr
    assert _one_line(p).startswith("error: no credentials for gs://no-keys: set GOOGLE_APPLICATION_CREDENTIALS")
    assert seconds < 8, f"{seconds:.1f} s"


# a Python without TensorFlow: importing it fails as if it were not installed
NO_TF = "import sys; sys.modules['tensorflow'] = None; "


def test_verify_tf_without_tensorflow_says_what_to_install(output):
    code = NO_TF + f"from imagenet_tfrecords.cli import main; sys.exit(main(['verify', '--tf', {str(output)!r}]))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 3, p.stderr
    # from this checkout, the command that installs the extra into it (tests/test_install_commands.py: the others)
    assert f"pip install -e '{ROOT}[tf]'" in _one_line(p)


def test_load_without_tensorflow_says_what_to_install(output):
    code = NO_TF + f"from imagenet_tfrecords.reader import load; load({str(output)!r}, 'train')"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("imagenet_tfrecords.fs.MissingPackageError: reading the records with tf.data needs")
    assert f"pip install -e '{ROOT}[tf]'" in last


# --- 3. what is printed says the truth --------------------------------------------------------


def test_version_help_and_description_say_what_the_project_does():
    from imagenet_tfrecords import __version__

    p = run_cli("--version")
    assert p.stdout.strip() == f"imagenet-tfrecords {__version__}"
    help_text = " ".join(parser().format_help().split())
    assert (
        "TinyImageNet, ImageNet extracted or as its ILSVRC2012 archives, class folders, a Hugging Face parquet "
        "download or WebDataset shards" in help_text
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert (
        "TinyImageNet, ImageNet (extracted or archives), class folders, Hugging Face parquet downloads or "
        "WebDataset shards" in pyproject
    )
    assert 'torch = ["torch>=' in pyproject and "torch==" not in pyproject


def test_more_train_shards_than_train_images_is_exit_2_before_any_shard(sample_dir, tmp_path):
    out = tmp_path / "out"
    p = run_cli("convert", "--data", sample_dir, "--output", out, "--train-shards", "1000", check=False)
    assert p.returncode == 2
    assert _one_line(p).startswith("error: --train-shards 1000 (pipeline parameter train_shards) is more than the 72")
    assert not list(out.rglob("*.tfrecord"))


def test_one_reject_is_singular_and_sizes_name_their_units(sample_copy, tmp_path):
    (sample_copy / "test" / "images" / "test_0.JPEG").write_bytes(b"")
    (sample_copy / "train" / "stray").mkdir()  # a metadata reject: not a class listed in wnids.txt
    p = run_cli("convert", "--data", sample_copy, "--output", tmp_path / "out", "--max-reject-fraction", "1")
    assert "2 rejects listed in rejects.tsv" in p.stdout
    report = (tmp_path / "out" / "report.html").read_text()
    assert "1 more input was rejected while reading the metadata" in report
    assert "KiB</td>" in report and "KB<" not in report
    assert _size(1_288_450_000) == "1.2 GiB" and _size(2048) == "2.0 KiB"
    (sample_copy / "train" / "stray").rmdir()
    p = run_cli("convert", "--data", sample_copy, "--output", tmp_path / "out2", "--max-reject-fraction", "1")
    assert "\n1 reject listed in rejects.tsv" in p.stdout


def test_run_shows_the_progress_of_its_steps(sample_dir, tmp_path):
    env = {"IMAGENET_TFRECORDS_PROGRESS": "1"}  # what a terminal gets (stderr is a pipe here)
    p = run_cli("run", "--data", sample_dir, "--output", tmp_path / "out", "--max-tasks", "2", env=env)
    bar = p.stderr.replace("\r", "\n")
    for step in ("parse-metadata success", "convert-shards success", "tinyimagenet-to-tfrecords success"):
        assert step in bar, p.stderr
    assert "4/4" in bar  # the plan step, two conversion tasks, the aggregation
    assert "conversion phase" in p.stdout


# --- 4. unreadable folders, odd names, links ---------------------------------------------------


def _as_user(*args, **kw) -> subprocess.CompletedProcess:
    """The CLI without root's override of file permissions (as any other user runs it)."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed: cannot drop root's permission override")
    cmd = [*DROP_OVERRIDE, *CLI, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **kw.pop("env", {})}, **kw)


@pytest.mark.parametrize("where", ["class", "images", "test", "imagefolder-class"])
def test_an_unreadable_folder_is_an_error_naming_it(sample_copy, tmp_path, where):
    data = sample_copy if where != "imagefolder-class" else _imagefolder(tmp_path / "folders")
    wnid = sorted((sample_copy / "train").iterdir())[0].name
    folder = {
        "class": data / "train" / wnid,
        "images": data / "train" / wnid / "images",
        "test": data / "test",
        "imagefolder-class": data / "train" / "dog",
    }[where]
    folder.chmod(0)
    try:
        p = _as_user("convert", "--data", data, "--output", tmp_path / "out")
    finally:
        folder.chmod(0o755)
    assert p.returncode == 3, p.stdout + p.stderr
    line = _one_line(p)
    assert line == f"error: {folder}: cannot be read (permission denied)", line
    assert not (tmp_path / "out" / "sizes.txt").exists()


def test_a_symlink_loop_among_the_images_is_one_reject(sample_copy, tmp_path):
    images = sorted((sample_copy / "train").iterdir())[0] / "images"
    (images / "a.JPEG").symlink_to("b.JPEG")
    (images / "b.JPEG").symlink_to("a.JPEG")
    (images / "self.JPEG").symlink_to("self.JPEG")
    out = tmp_path / "out"
    run_cli("convert", "--data", sample_copy, "--output", out, "--max-reject-fraction", "1")
    rejects = dict(line.split("\t") for line in (out / "rejects.tsv").read_text().splitlines())
    rel = images.relative_to(sample_copy).as_posix()
    reason = "symbolic link loop (too many levels of symbolic links)"
    assert rejects == {f"{rel}/a.JPEG": reason, f"{rel}/b.JPEG": reason, f"{rel}/self.JPEG": reason}


def test_a_file_name_that_is_not_utf8_is_a_reject_with_its_bytes_escaped(sample_copy, tmp_path):
    images = os.fsencode(sorted((sample_copy / "train").iterdir())[0] / "images")
    with open(images + b"/caf\xe9.JPEG", "wb") as f:
        f.write(_jpeg())
    out = tmp_path / "out"
    run_cli("convert", "--data", sample_copy, "--output", out, "--max-reject-fraction", "1")
    [reject] = _info(out)["rejects"]
    assert reject["path"].endswith("/images/caf\\xe9.JPEG")
    assert reject["reason"].startswith("file name is not valid UTF-8")
    # rejects.tsv escapes the backslash itself (\\), so the line reads back to the same path
    assert (out / "rejects.tsv").read_text().split("\t")[0].endswith("/images/caf\\\\xe9.JPEG")


def _unescape(field: str) -> str:
    out, chars = [], iter(field)
    for c in chars:
        out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[next(chars)] if c == "\\" else c)
    return "".join(out)


def test_tabs_and_newlines_in_names_do_not_break_rejects_tsv(sample_copy, tmp_path):
    test = sample_copy / "test" / "images"
    forged = "x.JPEG\tforged reason\nval_0.JPEG"
    (test / forged).write_text("not an image")
    (test / "tab\there.JPEG").write_text("not an image either")
    out = tmp_path / "out"
    run_cli("convert", "--data", sample_copy, "--output", out, "--max-reject-fraction", "1")
    lines = (out / "rejects.tsv").read_text().splitlines()
    assert len(lines) == 2 and all(line.count("\t") == 1 for line in lines)
    paths = {_unescape(line.split("\t")[0]) for line in lines}
    assert paths == {f"test/images/{forged}", "test/images/tab\there.JPEG"}


def test_links_leaving_the_dataset_are_refused_for_folders_and_metadata(sample_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(sample_copy / "test" / "images", elsewhere)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 3)
    wnid = sorted((sample_copy / "train").iterdir())[0].name
    shutil.copytree(sample_copy / "train" / wnid, tmp_path / "class-elsewhere")
    cases = {
        "test/images": elsewhere,  # a folder of images elsewhere
        f"train/{wnid}": tmp_path / "class-elsewhere",  # a class folder
        "wnids.txt": secret,  # metadata
        "val/val_annotations.txt": secret,
    }
    for rel, target in cases.items():
        data = tmp_path / f"data-{rel.replace('/', '-')}"
        shutil.copytree(sample_copy, data, symlinks=True)
        shutil.rmtree(data / rel) if (data / rel).is_dir() else (data / rel).unlink()
        (data / rel).symlink_to(target)
        p = run_cli("convert", "--data", data, "--output", tmp_path / f"out-{rel.replace('/', '-')}", check=False)
        assert p.returncode == 3, p.stdout + p.stderr
        line = _one_line(p)
        assert (
            line
            == f"error: {data / rel}: a symbolic link leaving the dataset folder {data} (to {target}); not followed"
        )
        assert "root:x" not in p.stderr + p.stdout


def test_class_folders_leaving_the_dataset_are_rejects_in_the_imagefolder_layout(tmp_path):
    data = _imagefolder(tmp_path / "data")
    elsewhere = _imagefolder(tmp_path / "elsewhere")
    (data / "train" / "bird").symlink_to(elsewhere / "train" / "cat")
    (data / "val" / "bird").symlink_to(elsewhere / "val" / "cat")
    out = tmp_path / "out"
    run_cli("convert", "--data", data, "--output", out, "--max-reject-fraction", "1")
    info = _info(out)
    reason = "symlink pointing outside the dataset root (not followed)"
    assert {"path": "val/bird", "reason": reason} in info["rejects"]
    assert {"path": "train/bird", "reason": reason} in info["rejects"]
    assert info["num_classes"] == 2 and info["found"] == 6 + 2


def test_a_malformed_metadata_line_is_quoted_short(sample_copy, tmp_path):
    (sample_copy / "wnids.txt").write_text("not a class id " + "x" * 5000 + "\n")
    p = run_cli("convert", "--data", sample_copy, "--output", tmp_path / "out", check=False)
    assert p.returncode == 3
    assert len(_one_line(p)) < len(str(sample_copy)) + 120


def test_a_10_mb_class_id_is_quoted_short(sample_copy, tmp_path):
    """One word of 10 MB (no space, so it has the form of a class id): refused as longer than any
    folder name, quoted by a short prefix (it used to be echoed whole: a 10 MB message)."""
    with open(sample_copy / "wnids.txt", "a") as f:
        f.write("n" * 10_000_000 + "\n")
    p = run_cli("convert", "--data", sample_copy, "--output", tmp_path / "out", check=False)
    assert p.returncode == 3
    line = _one_line(p)
    assert len(line) < len(str(sample_copy)) + 200, len(line)
    assert "wnids.txt:7: not a class id: 10,000,000 characters, longer than a folder name may be (255 bytes)" in line


# --- 5. outputs that break mid-run, damaged reports ---------------------------------------------


def test_a_full_disk_is_exit_3_naming_the_file(sample_dir, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        p = run_cli("convert", "--data", sample_dir, "--output", disk / "out", "--workers", "1", check=False)
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert p.returncode == 3, p.stderr
    line = _one_line(p)
    assert line.startswith(f"error: {disk / 'out'}/") and line.endswith("cannot be written (No space left on device)")


def test_an_output_removed_mid_run_is_exit_3(sample_dir, tmp_path):
    data = tmp_path / "data"
    run_cli("sample", "--output", data, "--classes", "10", "--train-per-class", "100", "--val", "300", "--test", "200")
    out = tmp_path / "out"
    first = out / "_work" / "train-00000-of-00004.tfrecord.json"

    def remove_once_started():
        deadline = time.monotonic() + 60
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        shutil.rmtree(out, ignore_errors=True)

    remover = threading.Thread(target=remove_once_started)
    remover.start()
    args = ["--workers", "1", "--train-shards", "4", "--shard-size", "50"]
    p = run_cli("convert", "--data", data, "--output", out, *args, check=False)
    remover.join()
    assert p.returncode == 3, p.stderr
    line = _one_line(p)
    # which file the run misses first depends on when the folder goes: a shard's, its statistics, or its lock's
    named = line.startswith(f"error: {out}/") or line.startswith(f"error: {out}: this run's lock file")
    assert named or line.startswith("error: no statistics for"), line


def test_verify_of_a_truncated_dataset_info_is_one_line(output):
    info = output / "dataset_info.json"
    info.write_bytes(info.read_bytes()[:100])
    p = run_cli("verify", output, check=False)
    assert p.returncode == 3
    assert _one_line(p).startswith(f"error: {info}: damaged, not JSON (")


@pytest.mark.parametrize("damage", ["[]", "{", "null", '{"fingerprint": 3}'])
def test_a_damaged_statistics_file_means_convert_that_shard_again(sample_dir, tmp_path, damage):
    clean, out = tmp_path / "clean", tmp_path / "out"
    run_cli("convert", "--data", sample_dir, "--output", clean, "--train-shards", "3")
    run_cli("convert", "--data", sample_dir, "--output", out, "--train-shards", "3")
    (out / "_work" / "train-00001-of-00003.tfrecord.json").write_text(damage)
    p = run_cli("convert", "--data", sample_dir, "--output", out, "--train-shards", "3")
    assert "1 shard converted, 4 kept from an earlier run" in p.stdout
    assert _sha1s(out) == _sha1s(clean)
    run_cli("verify", out)


def test_tfds_names_too_long_for_a_file_system_fail_before_any_work(sample_dir, tmp_path):
    data = tmp_path / ("d" * 215)
    shutil.copytree(sample_dir, data)
    out = tmp_path / "out"
    p = run_cli("convert", "--data", data, "--output", out, "--format", "tfds", check=False)
    assert p.returncode == 2
    assert _one_line(p).startswith("error: --format tfds names its files after the dataset folder (215 characters")
    assert not out.exists()
    ok = tmp_path / ("d" * 100)
    shutil.copytree(sample_dir, ok)
    run_cli("convert", "--data", ok, "--output", tmp_path / "ok", "--format", "tfds")
