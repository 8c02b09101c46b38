"""Hostile and broken input, through the CLI: every input becomes a record or a listed reject.

One damaged dataset (the "zoo") is converted once with ``imagenet-tfrecords convert``; each case
below checks its own file in the output. Separate runs cover --image-size, the memory guard
against a header that declares 40,000 x 40,000 pixels, missing metadata, the
--max-reject-fraction guard, and the local Kubeflow pipeline (``imagenet-tfrecords run``).
"""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from .conftest import CLI, read_split, run_cli

UNKNOWN = "n12345678"
EMPTY_CLASS = "n99999998"
STRAY_DIR = "n99999999"
MAX_PIXELS = 4096 * 4096


def _pixels(h=64, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpeg(h=64, w=64, seed=0) -> bytes:
    return simplejpeg.encode_jpeg(_pixels(h, w, seed), quality=90)


def _pil(pixels: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode else img).save(buf, fmt)
    return buf.getvalue()


def _jpeg_claiming(height: int, width: int) -> bytes:
    """A real 64x64 baseline JPEG whose SOF0 header is patched to claim another size."""
    data = bytearray(_jpeg())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _png_claiming(height: int, width: int) -> bytes:
    """A real 8x8 PNG whose IHDR chunk is patched (with a valid CRC) to claim another size."""
    data = bytearray(_pil(_pixels(8, 8), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _crlf_bom(path: Path) -> None:
    """Rewrite a metadata file with a UTF-8 BOM, CRLF line ends and trailing empty lines."""
    text = path.read_text()
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode() + b"\r\n\r\n")


@pytest.fixture(scope="module")
def zoo(sample_dir, tmp_path_factory) -> dict:
    """The sample dataset with one instance of every kind of broken input, converted once."""
    root = tmp_path_factory.mktemp("zoo") / "data"
    shutil.copytree(sample_dir, root, symlinks=True)
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.JPEG"
    elsewhere.write_bytes(_jpeg(seed=9))  # a valid image: following the link would convert it
    wnids = (root / "wnids.txt").read_text().split()
    w0, w1 = sorted(wnids)[:2]
    a, b = root / "train" / w0 / "images", root / "train" / w1 / "images"
    (a / "zero.JPEG").write_bytes(b"")
    (a / "truncated.JPEG").write_bytes(_jpeg()[:700])
    (a / "notes.JPEG").write_text("these are my notes, not a picture\n")
    (a / "huge.JPEG").write_bytes(_jpeg_claiming(40_000, 40_000))
    (a / "huge_png.JPEG").write_bytes(_png_claiming(40_000, 40_000))
    (b / "png.JPEG").write_bytes(_pil(_pixels(seed=1), "PNG"))
    (b / "cmyk.JPEG").write_bytes(_pil(_pixels(seed=2), "JPEG", "CMYK"))
    (b / "gray.JPEG").write_bytes(simplejpeg.encode_jpeg(_pixels(seed=3)[:, :, :1].copy(), colorspace="GRAY"))
    (b / "small.JPEG").write_bytes(_jpeg(32, 48, seed=4))
    (b / "outside.JPEG").symlink_to(elsewhere)
    (b / "dangling.JPEG").symlink_to(b / "no-such-file.JPEG")
    os.mkfifo(b / "fifo.JPEG")
    (b / "subdir").mkdir()
    # a listed class whose directory has no images, and a directory that is not a listed class
    (root / "train" / EMPTY_CLASS / "images").mkdir(parents=True)
    (root / "train" / STRAY_DIR / "images").mkdir(parents=True)
    (root / "train" / STRAY_DIR / "images" / "x.JPEG").write_bytes(_jpeg())
    with open(root / "wnids.txt", "a") as f:
        f.write(f"{EMPTY_CLASS}\n")
    with open(root / "words.txt", "a") as f:
        f.write(f"\n{EMPTY_CLASS}\tclass without images")

    val = root / "val" / "images"
    ann = root / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    other = next(x.split("\t")[1] for x in lines if x.split("\t")[1] != lines[5].split("\t")[1])
    lines[1] = f"val_1.JPEG\t{UNKNOWN}\t0\t0\t63\t63"  # names an unknown class
    del lines[2]  # val_2.JPEG loses its line
    lines.append(lines[0])  # an exact duplicate
    lines.append(f"val_5.JPEG\t{other}\t0\t0\t63\t63")  # contradicts the first line of val_5
    lines.append(f"val_999.JPEG\t{w0}\t0\t0\t63\t63")  # annotated, but there is no such file
    ann.write_text("\n".join(lines) + "\n")
    (val / "val_3.JPEG").unlink()
    (val / "val_3.JPEG").symlink_to(elsewhere)  # annotated, but a link leaving the dataset
    (val / "val_4.JPEG").write_bytes((val / "val_4.JPEG").read_bytes()[:40])  # cut inside the header
    test = root / "test" / "images"
    (test / "zero.JPEG").write_bytes(b"")
    (test / "outside.JPEG").symlink_to(elsewhere)
    for name in ("wnids.txt", "words.txt", "val/val_annotations.txt"):
        _crlf_bom(root / name)

    out = root.parent / "out"
    p = run_cli("convert", "--data", root, "--output", out, "--workers", "2", "--max-reject-fraction", "0.5")
    info = json.loads((out / "dataset_info.json").read_text())
    rejects = [line.split("\t") for line in (out / "rejects.tsv").read_text().splitlines()]
    records = {r["filename"].decode(): r for split in ("train", "val", "test") for r in read_split(out, split)}
    return {
        "root": root,
        "out": out,
        "stdout": p.stdout,
        "info": info,
        "rejects": dict(rejects),
        "reject_lines": rejects,
        "records": records,
        "w0": w0,
        "w1": w1,
        "other": other,
    }


def _reason(zoo, path) -> str:
    assert path in zoo["rejects"], f"{path} is not in rejects.tsv: {sorted(zoo['rejects'])}"
    return zoo["rejects"][path]


def _train(zoo, cls, name) -> str:
    return f"train/{zoo[cls]}/images/{name}"


def test_zero_byte_file_is_rejected(zoo):
    assert _reason(zoo, _train(zoo, "w0", "zero.JPEG")) == "empty file (0 bytes)"
    assert _reason(zoo, "test/images/zero.JPEG") == "empty file (0 bytes)"


def test_truncated_jpeg_is_rejected(zoo):
    assert _reason(zoo, _train(zoo, "w0", "truncated.JPEG")) == "corrupt or truncated JPEG: Premature end of JPEG file"
    assert _reason(zoo, "val/images/val_4.JPEG").startswith("corrupt or truncated JPEG header: ")


def test_text_file_named_jpeg_is_rejected(zoo):
    assert _reason(zoo, _train(zoo, "w0", "notes.JPEG")) == "not an image (starts with b'these ar')"


def test_header_claiming_40000x40000_pixels_is_rejected(zoo):
    assert _reason(zoo, _train(zoo, "w0", "huge.JPEG")) == (
        f"header declares 40000x40000 pixels, above the limit of {MAX_PIXELS}"
    )
    assert _reason(zoo, _train(zoo, "w0", "huge_png.JPEG")).startswith(
        "header declares too many pixels: Image size (1600000000 pixels) exceeds limit"
    )


def _pixels_of(record) -> np.ndarray:
    shape = (int(record["height"]), int(record["width"]), int(record["channel"]))
    return np.frombuffer(record["image_raw"], np.uint8).reshape(shape)


def test_png_cmyk_and_grayscale_named_jpeg_become_rgb_records(zoo):
    converted = zoo["info"]["splits"]["train"]["converted"]
    assert converted["png-rgb"] == 1 and converted["cmyk"] == 1 and converted["grayscale"] >= 1
    png = zoo["records"][_train(zoo, "w1", "png.JPEG")]
    np.testing.assert_array_equal(_pixels_of(png), _pixels(seed=1))  # lossless, so exact
    cmyk = _pixels_of(zoo["records"][_train(zoo, "w1", "cmyk.JPEG")])
    assert cmyk.shape == (64, 64, 3)
    expected = np.asarray(Image.open(zoo["root"] / _train(zoo, "w1", "cmyk.JPEG")).convert("RGB"))
    np.testing.assert_array_equal(cmyk, expected)
    gray = _pixels_of(zoo["records"][_train(zoo, "w1", "gray.JPEG")])
    assert gray.shape == (64, 64, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_image_of_another_size_is_converted_with_its_real_size(zoo):
    small = zoo["records"][_train(zoo, "w1", "small.JPEG")]
    assert (small["height"], small["width"], small["channel"]) == (32, 48, 3)
    assert len(small["image_raw"]) == 32 * 48 * 3
    assert zoo["info"]["splits"]["train"]["shapes"]["32x48"] == 1


def test_image_of_another_size_is_rejected_with_image_size(zoo, tmp_path):
    p = run_cli(
        "convert", "--data", zoo["root"], "--output", tmp_path, "--image-size", "64x64", "--max-reject-fraction", "1"
    )
    rejects = dict(line.split("\t") for line in (tmp_path / "rejects.tsv").read_text().splitlines())
    assert rejects[_train(zoo, "w1", "small.JPEG")] == "image is 32x48, expected 64x64"
    assert len(rejects) == len(zoo["rejects"]) + 1
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["splits"]["train"]["shapes"] == {"64x64": info["splits"]["train"]["num_records"]}
    assert f"{len(rejects) - 1} rejects and 1 problem listed in rejects.tsv" in p.stdout


def test_val_annotation_problems_are_listed(zoo):
    assert _reason(zoo, "val/images/val_1.JPEG") == f"val_annotations.txt line 2 names unknown class {UNKNOWN}"
    assert _reason(zoo, "val/images/val_2.JPEG") == "no line in val_annotations.txt"
    assert _reason(zoo, "val/images/val_999.JPEG") == "listed in val_annotations.txt but missing"
    assert _reason(zoo, "val/images/val_5.JPEG").startswith(
        "conflicting annotations in val_annotations.txt: line 5 says"
    )
    assert _reason(zoo, "val/images/val_5.JPEG").endswith(f"says {zoo['other']}")
    # an exact duplicate is harmless: the image is converted and the line is reported
    assert "val/images/val_0.JPEG" in zoo["records"]
    assert any("duplicate of line 1 (val_0.JPEG" in w for w in zoo["info"]["warnings"])
    assert "warning: " in zoo["stdout"] and "duplicate of line 1" in zoo["stdout"]


def test_metadata_with_crlf_bom_and_trailing_empty_lines(zoo, sample_dir):
    labels = (zoo["out"] / "labels.txt").read_text().splitlines()
    wnids = sorted((sample_dir / "wnids.txt").read_text().split() + [EMPTY_CLASS])
    assert [line.split("\t")[0] for line in labels] == wnids  # no BOM, no "\r", no empty class id
    assert all("\r" not in line and "\ufeff" not in line for line in labels)
    assert labels[-1] == f"{EMPTY_CLASS}\tclass without images"
    assert zoo["info"]["num_classes"] == len(wnids)
    val = [r for r in zoo["records"].values() if r["filename"].startswith(b"val/")]
    assert all(r["wnid"].decode() in wnids for r in val)


def test_class_directory_without_images_is_listed(zoo):
    path = f"train/{EMPTY_CLASS}/images"
    assert _reason(zoo, path) == "class directory has no images (class has no train records)"
    assert {"path": path, "reason": _reason(zoo, path)} in zoo["info"]["problems"]
    assert f"warning: {path}: class directory has no images" in zoo["stdout"]
    label = zoo["info"]["num_classes"] - 1
    assert str(label) not in zoo["info"]["splits"]["train"]["label_counts"]


def test_class_directory_without_images_gets_an_empty_shard_per_class(zoo, tmp_path):
    p = run_cli(
        "convert",
        "--data",
        zoo["root"],
        "--output",
        tmp_path,
        "--max-reject-fraction",
        "0.5",
        "--train-order",
        "per-class",
    )
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    path = f"train/{EMPTY_CLASS}/images"
    reason = "class directory has no images (class gets an empty shard)"
    assert {"path": path, "reason": reason} in info["problems"] and f"warning: {path}: {reason}" in p.stdout
    label = info["num_classes"] - 1
    shard = info["splits"]["train"]["shards"][label]
    assert shard["records"] == 0 and (tmp_path / shard["file"]).stat().st_size == 0


def test_directory_that_is_not_a_listed_class_is_listed(zoo):
    assert _reason(zoo, f"train/{STRAY_DIR}") == "not a class listed in wnids.txt (dir not converted)"


def test_symlinks_leaving_the_dataset_are_not_followed(zoo):
    reason = "symlink pointing outside the dataset root (not followed)"
    for path in (_train(zoo, "w1", "outside.JPEG"), "val/images/val_3.JPEG", "test/images/outside.JPEG"):
        assert _reason(zoo, path) == reason
        assert path not in zoo["records"]
    # listed once, not also as "listed in val_annotations.txt but missing"
    assert [p for p, _ in zoo["reject_lines"]].count("val/images/val_3.JPEG") == 1


def test_broken_link_fifo_and_directory_among_images_are_listed(zoo):
    assert _reason(zoo, _train(zoo, "w1", "dangling.JPEG")).startswith(
        "cannot read: [Errno 2] No such file or directory"
    )
    assert _reason(zoo, _train(zoo, "w1", "fifo.JPEG")) == "not a regular file (FIFO, socket or device)"
    assert _reason(zoo, _train(zoo, "w1", "subdir")) == "a directory where images are expected"


def _inputs(root: Path) -> set[str]:
    """Every entry of every directory the converter reads, as paths relative to the root."""
    wnids = (root / "wnids.txt").read_text(encoding="utf-8-sig").split()
    found = set()
    for e in os.scandir(root / "train"):
        if e.name in wnids:
            found |= {f"train/{e.name}/images/{n}" for n in os.listdir(Path(e.path) / "images")}
        else:
            found.add(f"train/{e.name}")
    for split in ("val", "test"):
        found |= {f"{split}/images/{n}" for n in os.listdir(root / split / "images")}
    return found


def test_nothing_is_dropped_silently(zoo):
    info = zoo["info"]
    rejected = [p for p, _ in zoo["reject_lines"] if not p.startswith(f"train/{EMPTY_CLASS}/")]
    skipped = [s["path"] for s in info["skipped"]]
    accounted = list(zoo["records"]) + rejected + skipped
    assert len(accounted) == len(set(accounted)), "an input is counted twice"
    assert set(accounted) == _inputs(zoo["root"]) | {"val/images/val_999.JPEG"}


def test_found_equals_written_plus_rejected_plus_skipped(zoo):
    info = zoo["info"]
    written = sum(s["num_records"] for s in info["splits"].values())
    assert written == len(zoo["records"])
    assert info["found"] == written + info["rejected"] + len(info["skipped"])
    assert info["found"] == len(_inputs(zoo["root"])) + 1  # + the annotated file that is missing
    for split, s in info["splits"].items():
        assert s["found"] == s["num_records"] + s["rejected"] + s["skipped"], split
    assert len(zoo["reject_lines"]) == info["rejected"] + len(info["problems"])
    assert info["rejected"] == len(info["rejects"])


def test_header_bomb_is_rejected_before_any_pixel_memory(sample_copy, tmp_path):
    """Decoding 40,000 x 40,000 pixels would need 4.8 GB; the conversion stays small."""
    images = next((sample_copy / "train").iterdir()) / "images"
    (images / "huge.JPEG").write_bytes(_jpeg_claiming(40_000, 40_000))
    cmd = [*CLI, "convert", "--data", sample_copy, "--output", tmp_path / "out", "--workers", "1"]
    cmd += ["--max-reject-fraction", "1"]
    # Measured from a small parent of its own: a child's peak RSS counts the memory of the process it was
    # forked from until its exec (Linux keeps the larger high-water mark), and pytest's grows with the suite.
    measure = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
        "stderr=subprocess.PIPE, text=True); print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN)"
        ".ru_maxrss); print(p.stderr, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", measure, *map(str, cmd)], capture_output=True, text=True)
    returncode, peak_kb = map(int, proc.stdout.split())
    assert returncode == 0, proc.stderr
    peak_mb = peak_kb / 1024  # kilobytes on Linux
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"
    rejects = (tmp_path / "out" / "rejects.tsv").read_text()
    assert f"huge.JPEG\theader declares 40000x40000 pixels, above the limit of {MAX_PIXELS}\n" in rejects


@pytest.mark.parametrize("missing", ["wnids.txt", "words.txt", "val/val_annotations.txt"])
def test_missing_metadata_fails_fast_with_exit_code_3(sample_copy, tmp_path, missing):
    (sample_copy / missing).unlink()
    out = tmp_path / "out"
    p = run_cli("convert", "--data", sample_copy, "--output", out, check=False)
    assert p.returncode == 3, p.stderr
    assert p.stderr.strip() == f"error: {sample_copy / missing}: file not found"
    assert not out.exists(), "something was written before the metadata was checked"


def _break_three(root: Path) -> list[str]:
    """Three broken images among 123 inputs: 2.4%."""
    images = next((root / "train").iterdir()) / "images"
    (images / "zero.JPEG").write_bytes(b"")
    (root / "val" / "images" / "val_7.JPEG").write_text("not an image")
    (root / "test" / "images" / "test_3.JPEG").write_bytes(_jpeg()[:600])
    return ["test/images/test_3.JPEG", (images / "zero.JPEG").relative_to(root).as_posix(), "val/images/val_7.JPEG"]


def _check_reports_after_too_many_rejects(out: Path, broken: list[str]) -> None:
    rejects = (out / "rejects.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in rejects] == broken
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["rejected"] == 3 and info["found"] == 123
    assert sum(s["num_records"] for s in info["splits"].values()) == 120


TOO_MANY = (
    "error: 3 of 123 inputs rejected (2.4%), above the allowed 1.0% (--max-reject-fraction, pipeline parameter "
    "max_reject_fraction); top reasons: "
)


def test_convert_fails_loudly_on_too_many_rejects_after_writing_the_reports(sample_copy, tmp_path):
    broken = _break_three(sample_copy)
    out = tmp_path / "out"
    p = run_cli("convert", "--data", sample_copy, "--output", out, "--workers", "2", check=False)
    assert p.returncode == 3, p.stderr
    assert TOO_MANY in p.stderr
    _check_reports_after_too_many_rejects(out, broken)
    p = run_cli("convert", "--data", sample_copy, "--output", out, "--max-reject-fraction", "0.03")
    assert "3 rejects listed in rejects.tsv" in p.stdout


@pytest.mark.slow
def test_local_pipeline_lists_broken_files_and_fails_on_too_many(sample_copy, tmp_path):
    broken = _break_three(sample_copy)
    args = ["--data", sample_copy, "--max-tasks", "4", "--shard-size", "16", "--workers", "1"]
    p = run_cli("run", *args, "--output", tmp_path / "ok", "--max-reject-fraction", "0.05")
    assert "3 rejects listed in rejects.tsv" in p.stdout
    _check_reports_after_too_many_rejects(tmp_path / "ok", broken)
    assert run_cli("verify", tmp_path / "ok").stdout.startswith("train,72\nval,29\ntest,19\n")

    p = run_cli("run", *args, "--output", tmp_path / "strict", check=False)
    assert p.returncode == 3, p.stderr[-3000:]
    assert TOO_MANY in p.stderr
    _check_reports_after_too_many_rejects(tmp_path / "strict", broken)


def test_local_pipeline_with_missing_metadata_fails_before_any_task(sample_copy, tmp_path):
    (sample_copy / "words.txt").unlink()
    p = run_cli("run", "--data", sample_copy, "--output", tmp_path / "out", check=False)
    assert p.returncode == 3, p.stderr[-3000:]
    assert p.stderr.strip().endswith(f"error: {sample_copy / 'words.txt'}: file not found")
    assert not (tmp_path / "out").exists()
