"""The HTML report: built from the written TFRecords, self-contained, rendered by a real browser."""

import base64
import html
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imagenet_tfrecords import tasks
from imagenet_tfrecords.recordio import iter_records, parse_example
from imagenet_tfrecords.report import build_report, decode_any
from imagenet_tfrecords.stats import run_metrics
from imagenet_tfrecords_kfp.compile import COMPILED

from .conftest import read_records, read_split, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIGURE = re.compile(
    r'<figure data-file="([^"]*)"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"'
)


@pytest.fixture(scope="module")
def broken(sample_dir, tmp_path_factory):
    """The sample dataset with three damaged files, converted, and its report (via the CLI)."""
    base = tmp_path_factory.mktemp("report")
    data, out = base / "data", base / "out"
    shutil.copytree(sample_dir, data)
    first_class = sorted((data / "train").iterdir())[0]
    (first_class / "images" / f"{first_class.name}_3.JPEG").write_bytes(b"this is not a JPEG")
    (first_class / "images" / f"{first_class.name}_5.JPEG").write_bytes(b"")
    val = data / "val" / "images" / "val_7.JPEG"
    val.write_bytes(val.read_bytes()[:40])  # a truncated JPEG
    args = ("--shard-size", "8", "--max-reject-fraction", "1", "--train-order", "per-class")
    run_cli("convert", "--data", data, "--output", out, *args)
    page = base / "report.html"
    p = run_cli("report", out, "--html", page)
    assert str(page) in p.stdout
    return out, page.read_text()


def _figures(text: str) -> list[tuple[str, np.ndarray, int]]:
    """(source file, embedded pixels, display scale) of every sample image in a report."""
    out = []
    for name, b64, width, _ in FIGURE.findall(text):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        out.append((html.unescape(name), pixels, int(width) // pixels.shape[1]))
    return out


def test_example_reader_agrees_with_tensorflow(broken):
    """The report's protobuf reader against TensorFlow's parser, on every written record."""
    out, _ = broken
    n = 0
    for shard in sorted(out.rglob("*.tfrecord")):
        expected = read_records(shard)
        with open(shard, "rb") as f:
            mine = [parse_example(r) for r in iter_records(f)]
        assert len(mine) == len(expected)
        for a, b in zip(mine, expected, strict=True):
            assert {k: a[k][0] for k in b} == b
            n += 1
    assert n == 72 - 2 + 30 - 1 + 20


def test_example_reader_reads_what_tensorflow_serializes():
    """Examples serialized by TensorFlow itself: negative, multi-valued and float features."""
    import tensorflow as tf

    feature = tf.train.Feature
    ex = tf.train.Example(
        features=tf.train.Features(
            feature={
                "label": feature(int64_list=tf.train.Int64List(value=[-1])),
                "many": feature(int64_list=tf.train.Int64List(value=[0, 1, 300, 2**40, -(2**63)])),
                "f": feature(float_list=tf.train.FloatList(value=[0.5, -2.25])),
                "b": feature(bytes_list=tf.train.BytesList(value=[b"", b"\x00\xff" * 200])),
                "empty": feature(),
            }
        )
    )
    got = parse_example(ex.SerializeToString())
    assert got == {
        "label": [-1],
        "many": [0, 1, 300, 2**40, -(2**63)],
        "f": [0.5, -2.25],
        "b": [b"", b"\x00\xff" * 200],
        "empty": [],
    }
    with pytest.raises(ValueError, match="truncated"):
        parse_example(ex.SerializeToString()[:-3])


def test_report_shows_counts_conversions_and_every_reject(broken):
    out, text = broken
    info = json.loads((out / "dataset_info.json").read_text())
    for split, s in info["splits"].items():
        assert f"<tr><td>{split}</td><td class=n>{s['num_records']}</td>" in text
        for source, count in s["converted"].items():
            assert f"{source} {count}" in text
    rejects = [line.split("\t") for line in (out / "rejects.tsv").read_text().splitlines()]
    assert len(rejects) == 3
    assert f"Rejected: {info['rejected']}<" in text
    for path, reason in rejects:
        assert f"<tr><td>{html.escape(path)}</td><td>{html.escape(reason)}</td></tr>" in text


def test_report_is_self_contained(broken):
    _, text = broken
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text).lower()
    refs = re.findall(r"""(?:src|href|xlink:href)\s*=\s*["']?([^"'\s>]*)""", text, re.I)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert not re.search(r"<script|<link|<iframe|@import|url\(", text, re.I)


def test_samples_are_the_records_as_written(broken):
    """Every embedded image equals the record TensorFlow reads back for that file."""
    out, text = broken
    figures = _figures(text)
    by_split = {}
    for name, *_ in figures:
        by_split[name.split("/")[0]] = by_split.get(name.split("/")[0], 0) + 1
    assert by_split == {"train": 8, "val": 8, "test": 8}
    records = {r["filename"].decode(): r for split in ("train", "val", "test") for r in read_split(out, split)}
    labels = (out / "labels.txt").read_text().splitlines()
    for name, pixels, scale in figures:
        r = records[name]
        written = np.frombuffer(r["image_raw"], np.uint8).reshape(r["height"], r["width"], r["channel"])
        np.testing.assert_array_equal(pixels, written, err_msg=name)
        assert scale == 2
        if r["label"] >= 0:
            words = labels[r["label"]].split("\t")[1].split(",")[0]
            assert f"<b>{r['label']}</b> {html.escape(words)}" in text
    train_labels = {records[name]["label"] for name, *_ in figures if name.startswith("train/")}
    assert len(train_labels) == 6, "train samples should cover every class shard"


def test_rejects_table_is_truncated_with_the_total(broken):
    out, _ = broken
    text = build_report(str(out), max_rows=2)
    table = text.split("Rejected: 3")[1].split("</table>")[0]
    assert "(first 2 shown)" in table
    assert table.count("<tr><td>") == 2


def test_unreadable_shard_is_named_in_the_report(broken, tmp_path):
    out, _ = broken
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shard = copy / "val" / "val-00000-of-00004.tfrecord"
    shard.write_bytes(shard.read_bytes()[:5000])
    text = build_report(str(copy))
    assert "cannot read samples: val/val-00000-of-00004.tfrecord: CorruptShard: ends inside record" in text
    assert len(_figures(text)) == 8 + 6 + 8  # the other val shards still give samples


def _screenshot(page, png, tmp_path):
    profile = tmp_path / "chromium-profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1200,2000",
        page.as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int16)


def _find(shot: np.ndarray, pixels: np.ndarray, scale: int) -> tuple[int, int] | None:
    """Where the pixels, enlarged ``scale`` times pixel for pixel, appear in the screenshot."""
    target = np.repeat(np.repeat(pixels.astype(np.int16), scale, 0), scale, 1)
    th, tw = target.shape[:2]
    area = shot[: shot.shape[0] - th + 1, : shot.shape[1] - tw + 1]
    ys, xs = np.nonzero(np.abs(area - target[0, 0]).max(axis=2) <= 2)
    for y, x in zip(ys, xs, strict=True):
        if np.abs(shot[y : y + th, x : x + tw] - target).mean() < 1:
            return int(y), int(x)
    return None


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_with_its_images_in_chromium(broken, tmp_path):
    out, text = broken
    page = tmp_path / "report.html"
    page.write_text(text)
    shot = _screenshot(page, tmp_path / "report.png", tmp_path)
    figures = _figures(text)
    found = {}
    for name, pixels, scale in figures:
        where = _find(shot, pixels, scale)
        assert where is not None, f"sample {name} is not visible in the rendered page"
        found[name] = where
        y, x = where
        tile = shot[y : y + pixels.shape[0] * scale, x : x + pixels.shape[1] * scale]
        assert tile.std() > 10, f"{name} rendered flat"
    assert len(set(found.values())) == len(figures)
    top = min(y for y, _ in found.values())
    bottom = max(y for y, _ in found.values()) + 128
    grid = shot[top:bottom].reshape(-1, 3)
    assert len(np.unique(grid, axis=0)) > 5000  # photos, not text on white

    # The check fails when the images do not load: the same page with broken image data.
    blank = tmp_path / "blank.html"
    blank.write_text(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,AAAA", text))
    shot = _screenshot(blank, tmp_path / "blank.png", tmp_path)
    name, pixels, scale = figures[0]
    assert _find(shot, pixels, scale) is None


def test_pipeline_steps_record_metrics_and_wall_time(sample_dir, tmp_path):
    """plan -> convert tasks -> aggregate, as the components call them, then the metrics."""
    out = tmp_path / "out"
    plan, labels = str(tmp_path / "plan.json"), str(tmp_path / "labels.txt")
    numbers, _ = tasks.plan_step(str(sample_dir), str(out), 8, 3, plan, labels, workers=1, max_reject_fraction=1)
    assert numbers == [0, 1, 2]
    runs = [tasks.convert_step(plan, n, str(tmp_path / f"m{n}.json")) for n in numbers]
    windows = [(r["started"], r["finished"]) for r in runs]
    assert sum(r["records"] for r in runs) == 122 and sum(r["resumed"] for r in runs) == 0
    report = tmp_path / "report.html"
    info = tasks.aggregate_step(plan, runs, str(tmp_path / "ds"), str(tmp_path / "s"), str(report))
    assert report.read_text() == (out / "report.html").read_text()  # the report lies beside the data too
    shard_stats = [json.loads(p.read_text()) for p in sorted((out / "_work").glob("*.json"))]
    assert len(shard_stats) == len(json.loads(Path(plan).read_text())["shards"])
    wall = info["run"]["wall_seconds"]
    assert wall == pytest.approx(max(w[1] for w in windows) - min(w[0] for w in windows), abs=1e-3)
    assert json.loads((out / "dataset_info.json").read_text())["run"] == info["run"]
    assert info["run"]["records_converted"] == 122 and info["run"]["shards_resumed"] == 0

    m = run_metrics(info)
    counts = {split: len(read_split(out, split)) for split in ("train", "val", "test")}
    for split, n in counts.items():
        assert m[f"{split}_records"] == n
    assert m["records_total"] == sum(counts.values()) == 122
    assert m["rejected_total"] == 0 and m["skipped_total"] == 0
    assert m["converted_to_rgb"] == sum(sum(s["converted"].values()) for s in shard_stats) > 0
    seconds = sum(s["seconds"] for s in info["splits"].values())  # per split, rounded to ms
    assert seconds == pytest.approx(sum(s["seconds"] for s in shard_stats), abs=0.002)
    assert m["images_per_second_per_worker"] == pytest.approx(122 / seconds, rel=0.05)
    assert m["images_per_second"] == pytest.approx(122 / wall, rel=0.01)
    assert all(isinstance(v, int | float) for v in m.values())


def test_decode_record_rejects_an_inconsistent_image():
    from imagenet_tfrecords.records import encode_example

    data = encode_example(height=2, width=2, channel=3, label=0, label_one_hot=b"\x01", image_raw=b"\x00" * 11)
    with pytest.raises(ValueError, match="11 bytes, not height\\*width\\*channel = 2\\*2\\*3"):
        decode_any(data, "train")


@pytest.mark.slow
def test_local_pipeline_run_publishes_the_report_and_metrics(sample_dir, tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    run_cli("run", "--data", sample_dir, "--output", out, "--max-tasks", "4", "--pipeline-root", root)
    (report,) = root.glob("*/aggregate-stats/report")
    assert len(_figures(report.read_text())) == 24
    executor = json.loads((report.parent / "executor_output.json").read_text())
    metrics = executor["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["train_records"] == 72 and metrics["records_total"] == 122
    assert metrics["wall_seconds"] > 0 and metrics["images_per_second"] > 0
    assert metrics["images_per_second_per_worker"] > 0


def test_compiled_pipeline_exposes_the_report():
    spec = yaml.safe_load(COMPILED.read_text())
    assert spec["root"]["outputDefinitions"]["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert spec["root"]["dag"]["outputs"]["artifacts"]["report"]["artifactSelectors"] == [
        {"outputArtifactKey": "report", "producerSubtask": "aggregate-stats"}
    ]
    comp = spec["components"]["comp-aggregate-stats"]["outputDefinitions"]["artifacts"]["report"]
    assert comp["artifactType"]["schemaTitle"] == "system.HTML"
    assert "sample images decoded from the written TFRecords" in " ".join(comp["description"].split())


def test_report_cli_refuses_a_directory_that_is_not_an_output(sample_dir):
    p = run_cli("report", sample_dir, check=False)
    assert p.returncode == 3
    assert "dataset_info.json not found" in p.stderr


def test_report_imports_neither_kfp_nor_tensorflow():
    code = (
        "import sys, imagenet_tfrecords.report; bad = [m for m in ('kfp', 'tensorflow') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
