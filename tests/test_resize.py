"""Resizing while converting (--resize WxH, --resize-mode, --shorter-side): the pixels against an
independent reference on natural photos, exact sizes (non-square, so width and height cannot be
swapped unnoticed), boxes in both modes, images already at the target stored as without a resize,
the options' exclusivity and fingerprint, and every reader of the output: TensorFlow's own parser
(seed and the Model Garden keys of tf-models), tensorflow-datasets' builder_from_directory, load(),
verify and the report."""

import io
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import imagenet_tfrecords
from imagenet_tfrecords.convert import Options
from imagenet_tfrecords.image import Resize
from imagenet_tfrecords.reader import VerificationError, verify

from .conftest import ROOT, convert_small_shards, read_split, run_cli
from .test_box_records import read_boxes
from .test_formats import MODEL_GARDEN_SPEC
from .test_object_stores import _url, bucket, download, upload  # noqa: F401  (bucket: gs:// and s3://)

skdata = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) has the sample photos")

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
# ImageNet-like sizes (height, width): landscape, portrait, square and the common 500 x 375
SIZES = ((350, 400), (375, 500), (500, 375), (333, 500), (320, 256), (400, 400))
W, H = 64, 48  # --resize 64x48: width 64, height 48


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def _crop_or_tile(photo: np.ndarray, h: int, w: int, shift: int) -> np.ndarray:
    """An ``h`` x ``w`` part of a photo, mirrored out where the photo is smaller."""
    reps = (-(-(h + shift) // photo.shape[0]) + 1, -(-(w + shift) // photo.shape[1]) + 1, 1)
    tiled = np.tile(np.concatenate([photo, photo[::-1]], axis=0), reps)
    return np.ascontiguousarray(tiled[shift : shift + h, shift : shift + w])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """An ImageFolder dataset of scikit-image's sample photos cut to ImageNet sizes, saved as JPEG (quality 90)."""
    root = tmp_path_factory.mktemp("photos") / "data"
    for i, name in enumerate(PHOTOS):
        photo = getattr(skdata, name)()[..., :3]
        for j, (h, w) in enumerate(SIZES):
            split = "val" if j == len(SIZES) - 1 else "train"
            folder = root / split / f"class_{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_crop_or_tile(photo, h, w, 17 * j)).save(folder / f"{name}_{h}x{w}.JPEG", quality=90)
    return root


def _reference(data: bytes, target: tuple[int, int], window=None) -> np.ndarray:
    """A full decode by Pillow, then Pillow's box resize of ``window`` (left, top, right, bottom) to ``target``
    (width, height)."""
    full = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(full.resize(target, Image.BOX, box=window))


def _area_average(data: bytes, target: tuple[int, int], window=None) -> np.ndarray:
    """The exact area average: a full decode by Pillow, each output pixel the mean of the part of the
    ``window`` it covers, partly covered pixels weighted by the part covered; ``target`` (width, height)."""
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    left, top, right, bottom = window or (0, 0, full.shape[1], full.shape[0])

    def weights(n_in: int, lo: float, hi: float, n_out: int) -> np.ndarray:
        edges = lo + (hi - lo) * np.arange(n_out + 1) / n_out
        cells = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(edges[1:, None], cells + 1) - np.maximum(edges[:-1, None], cells), 0, None)
        return overlap / overlap.sum(axis=1, keepdims=True)

    rows, cols = weights(full.shape[0], top, bottom, target[1]), weights(full.shape[1], left, right, target[0])
    return np.clip(np.rint(np.einsum("yi,ijc,xj->yxc", rows, full, cols, optimize=True)), 0, 255).astype(np.uint8)


def _centre(w: int, h: int, tw: int, th: int) -> tuple[float, float, float, float]:
    scale = max(tw / w, th / h)
    cw, ch = tw / scale, th / scale
    return (w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2


def _records(out: Path) -> list[dict]:
    return read_split(out, "train") + read_split(out, "val")


@pytest.mark.parametrize("mode", ["squash", "center-crop"])
def test_resized_pixels_match_a_full_decode_then_a_box_resize(photos, tmp_path, mode):
    out = tmp_path / "out"
    run_cli("convert", "--data", photos, "--output", out, "--resize", f"{W}x{H}", "--resize-mode", mode)
    records = _records(out)
    assert len(records) == len(PHOTOS) * len(SIZES)
    ours, exact, nearest = [], [], []
    for r in records:
        assert (r["height"], r["width"], r["channel"]) == (H, W, 3)  # --resize WxH: the width first
        pixels = np.frombuffer(r["image_raw"], np.uint8).reshape(H, W, 3)
        data = (photos / r["filename"].decode()).read_bytes()
        w, h = Image.open(io.BytesIO(data)).size
        window = _centre(w, h, W, H) if mode == "center-crop" else None
        reference = _reference(data, (W, H), window)
        ours.append(_psnr(pixels, reference))
        exact.append(_psnr(pixels, _area_average(data, (W, H), window)))
        full = Image.open(io.BytesIO(data)).convert("RGB")
        nearest.append(_psnr(np.asarray(full.resize((W, H), Image.NEAREST, box=window)), reference))
    print(
        f"\n{mode} {W}x{H}: PSNR against a full decode + Pillow's box resize, median {statistics.median(ours):.1f} dB, "
        f"minimum {min(ours):.1f} dB (nearest-pixel sampling: median {statistics.median(nearest):.1f} dB); "
        f"against an exact area average, median {statistics.median(exact):.1f} dB, minimum {min(exact):.1f} dB"
    )
    assert statistics.median(ours) >= 38 and min(ours) >= 34
    assert statistics.median(exact) >= 39 and min(exact) >= 35
    # antialiased: far closer to the area average than point sampling is, on every photo
    assert all(o > n + 3 for o, n in zip(ours, nearest, strict=True))


MOSAIC_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
MOSAIC_TEXTURES = ("brick", "grass", "gravel", "camera", "moon", "coins", "text", "page")
MOSAIC_SIZES = ((375, 500), (500, 375), (333, 500), (350, 400), (400, 400), (281, 500), (500, 333), (320, 480))


def _mosaic(rng, photos: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """An ``h`` x ``w`` grid of 2-4 x 2-4 tiles, each a part of a photo shrunk 1.5-4 times (as camera
    photos are to ImageNet's sizes): detail in every pixel, unlike a photo merely cropped."""
    img = np.zeros((h, w, 3), np.uint8)
    ys = np.linspace(0, h, rng.integers(2, 5) + 1).astype(int)
    xs = np.linspace(0, w, rng.integers(2, 5) + 1).astype(int)
    for y0, y1 in zip(ys, ys[1:], strict=False):
        for x0, x1 in zip(xs, xs[1:], strict=False):
            photo, shrink = photos[rng.integers(len(photos))], rng.uniform(1.5, 4)
            ch, cw = min(photo.shape[0], int((y1 - y0) * shrink)), min(photo.shape[1], int((x1 - x0) * shrink))
            top, left = rng.integers(0, photo.shape[0] - ch + 1), rng.integers(0, photo.shape[1] - cw + 1)
            part = Image.fromarray(photo[top : top + ch, left : left + cw])
            img[y0:y1, x0:x1] = np.asarray(part.resize((x1 - x0, y1 - y0), Image.LANCZOS))
    return img


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory) -> Path:
    """An ImageFolder dataset of 40 detailed mosaics of scikit-image's photos and textures at ImageNet's
    sizes, saved as JPEG (quality 90)."""
    photos = [getattr(skdata, name)()[..., :3] for name in MOSAIC_PHOTOS]
    photos += [np.repeat(getattr(skdata, name)()[..., None], 3, axis=2) for name in MOSAIC_TEXTURES]
    rng, root = np.random.default_rng(29), tmp_path_factory.mktemp("mosaics") / "data"
    for i in range(40):
        folder = root / "train" / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = MOSAIC_SIZES[i % len(MOSAIC_SIZES)]
        Image.fromarray(_mosaic(rng, photos, h, w)).save(folder / f"mosaic_{i}.JPEG", quality=90)
    return root


@pytest.mark.parametrize("size", [32, 64])
def test_resized_detailed_photos_are_close_to_an_exact_area_average(mosaics, tmp_path, size):
    """On detailed photos, where a scaled decode that merely covers the target leaves too few pixels for
    the filter to average (about 34 dB median at 32x32), every record is close to an exact area average
    of the full image: PSNR median >= 35 dB, 5th percentile >= 32 dB."""
    out = tmp_path / "out"
    run_cli("convert", "--data", mosaics, "--output", out, "--resize", f"{size}x{size}")
    records = read_split(out, "train")
    assert len(records) == 40
    psnrs = []
    for r in records:
        pixels = np.frombuffer(r["image_raw"], np.uint8).reshape(size, size, 3)
        psnrs.append(_psnr(pixels, _area_average((mosaics / r["filename"].decode()).read_bytes(), (size, size))))
    median, p5 = statistics.median(psnrs), float(np.percentile(psnrs, 5))
    print(f"\n{size}x{size} detailed mosaics: PSNR against an exact area average, median {median:.1f}, 5th {p5:.1f} dB")
    assert median >= 35 and p5 >= 32


def test_shorter_side_keeps_the_aspect_and_never_enlarges(photos, tmp_path):
    out = tmp_path / "out"
    run_cli("convert", "--data", photos, "--output", out, "--format", "tf-models", "--shorter-side", "340")
    files = sorted(str(f) for f in out.glob("*/*.tfrecord"))
    psnrs, kept = [], 0
    for raw in tf.data.TFRecordDataset(files):
        ex = {k: v.numpy() for k, v in tf.io.parse_single_example(raw, MODEL_GARDEN_SPEC).items()}
        data = (photos / ex["image/filename"].decode()).read_bytes()
        w, h = Image.open(io.BytesIO(data)).size
        image = tf.io.decode_jpeg(ex["image/encoded"]).numpy()
        assert image.shape == (ex["image/height"], ex["image/width"], 3)
        if min(w, h) <= 340:  # stored as read
            assert ex["image/encoded"] == data and (ex["image/height"], ex["image/width"]) == (h, w)
            kept += 1
            continue
        scale = 340 / min(w, h)
        assert min(image.shape[:2]) == 340
        assert image.shape[:2] == (round(h * scale), round(w * scale))
        psnrs.append(_psnr(image, _reference(data, (image.shape[1], image.shape[0]))))
    assert kept == 2 * len(PHOTOS) and len(psnrs) == 4 * len(PHOTOS)  # 320x256 and 333x500 kept
    print(f"\nshorter side 340 (JPEG quality 95): PSNR median {statistics.median(psnrs):.1f}, min {min(psnrs):.1f} dB")
    assert statistics.median(psnrs) >= 32 and min(psnrs) >= 28
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["resize"] == {"mode": "shorter-side", "shorter_side": 340}
    assert info["splits"]["train"]["reencoded"] == {"resized": 3 * len(PHOTOS)}
    verify(str(out))


def test_resize_target_and_window():
    assert Resize(64, 48).target(350, 400) == (48, 64)
    assert Resize(64, 48).target(48, 64) is None
    assert Resize(shorter_side=256).target(375, 500) == (256, 341)
    assert Resize(shorter_side=256).target(500, 375) == (341, 256)
    assert Resize(shorter_side=256).target(256, 900) is None and Resize(shorter_side=256).target(100, 90) is None
    assert Resize(64, 64, "center-crop").window(350, 400) == (25.0, 0.0, 375.0, 350.0)
    assert Resize(64, 64).window(350, 400) == (0.0, 0.0, 400.0, 350.0)


@pytest.mark.parametrize("fmt", ["seed", "tf-models"])
def test_resize_at_the_images_own_size_writes_the_same_bytes(sample_dir, tmp_path, fmt):
    """The sample's images are 64x64: --resize 64x64 and --shorter-side 64 touch none of them."""
    outs = {}
    for name, extra in {"plain": [], "resize": ["--resize", "64x64"], "short": ["--shorter-side", "64"]}.items():
        outs[name] = tmp_path / name
        run_cli("convert", "--data", sample_dir, "--output", outs[name], "--format", fmt, "--workers", "1", *extra)
    shards = sorted(
        p.relative_to(outs["plain"]) for p in outs["plain"].glob("*/*.tfrecord*") if p.parent.name != "_work"
    )
    assert len(shards) > 4
    for name in ("resize", "short"):
        for rel in shards:
            assert (outs[name] / rel).read_bytes() == (outs["plain"] / rel).read_bytes(), (name, rel)
        info = json.loads((outs[name] / "dataset_info.json").read_text())
        plain = json.loads((outs["plain"] / "dataset_info.json").read_text())
        assert info["resize"] and info["splits"]["train"]["reencoded"] == plain["splits"]["train"]["reencoded"]


def _write_boxes(sample_copy: Path) -> tuple[str, list[str]]:
    wnid = sorted(p.name for p in (sample_copy / "train").iterdir())[0]
    boxes_file = sample_copy / "train" / wnid / f"{wnid}_boxes.txt"
    lines = boxes_file.read_text().splitlines()
    names = [line.split("\t")[0] for line in lines]
    lines[0] = f"{names[0]}\t10\t20\t29\t39"  # inside the centre crop of rows 16-47
    lines[1] = f"{names[1]}\t5\t0\t20\t10"  # above it: dropped
    lines[2] = f"{names[2]}\t0\t8\t63\t23"  # across its top edge: clipped
    boxes_file.write_text("\n".join(lines) + "\n")
    return f"train/{wnid}/images/", names


def _crop_box(box, top: float = 16, height: float = 32):
    """A box normalised to a 64x64 image mapped into the crop of rows [top, top + height), clipped
    (None: nothing left), and whether it was clipped."""
    xmin, ymin, xmax, ymax, label = box
    y0, y1 = (min(max((v * 64 - top) / height, 0.0), 1.0) for v in (ymin, ymax))
    clipped = not (0 <= (ymin * 64 - top) / height <= 1 and 0 <= (ymax * 64 - top) / height <= 1)
    return (None, False) if y0 >= y1 else ((xmin, float(np.float32(y0)), xmax, float(np.float32(y1)), label), clipped)


@pytest.mark.parametrize("fmt", ["seed", "tf-models"])
def test_boxes_follow_the_image_in_both_modes(sample_copy, tmp_path, fmt):
    at, names = _write_boxes(sample_copy)
    keys = {"name_key": "filename", "size_keys": ("height", "width")}
    if fmt == "tf-models":
        keys = {"name_key": "image/filename", "size_keys": ("image/height", "image/width")}
    got = {}
    for mode, extra in {"none": [], "squash": ["--resize", "32x16"], "crop": ["--resize", "32x16"]}.items():
        mode_args = ["--resize-mode", "center-crop"] if mode == "crop" else []
        convert_small_shards(sample_copy, tmp_path / mode, "--format", fmt, *extra, *mode_args)
        got[mode] = read_boxes(tmp_path / mode, **keys)
    assert got["squash"].keys() == got["none"].keys()
    clipped = dropped = 0
    for name, plain in got["none"].items():
        assert got["squash"][name]["size"] == got["crop"][name]["size"] == (16, 32)
        assert got["squash"][name]["boxes"] == plain["boxes"]  # squash: normalised coordinates unchanged
        expected = []
        for box in plain["boxes"]:  # (64x64 to 32x16: the crop is rows 16 to 47, every column)
            mapped, was_clipped = _crop_box(box)
            expected += [mapped] if mapped else []
            clipped += was_clipped
            dropped += mapped is None
        flat = [v for box in got["crop"][name]["boxes"] for v in box]
        assert flat == pytest.approx([v for box in expected for v in box]), name
    assert got["crop"][at + names[0]]["boxes"] == [(10 / 64, 4 / 32, 30 / 64, 24 / 32, 0)]
    assert got["crop"][at + names[1]]["boxes"] == []
    info = {m: json.loads((tmp_path / m / "dataset_info.json").read_text()) for m in got}
    crop_counts = {s: info["crop"]["splits"][s]["boxes"] for s in ("train", "val")}
    assert sum(c["clipped"] for c in crop_counts.values()) == clipped and clipped > 5
    assert sum(c["dropped"] for c in crop_counts.values()) == dropped and dropped >= 1
    assert info["squash"]["splits"]["train"]["boxes"] == info["none"]["splits"]["train"]["boxes"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resize", "32x32", "--shorter-side", "16"], "resize and shorter_side do not go together"),
        (["--resize-mode", "center-crop"], "applies with resize only"),
        (["--resize", "32"], "expected WIDTHxHEIGHT"),
        (["--shorter-side", "-1"], "must be 0 or more"),
    ],
)
def test_resize_options_that_do_not_go_together_exit_2(sample_dir, tmp_path, args, message):
    for command in ("convert", "run"):
        p = run_cli(command, "--data", sample_dir, "--output", tmp_path / "out", *args, check=False)
        assert p.returncode == 2 and message in p.stderr, (command, p.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resize", "100000x100000"], "resize 100000x100000 is 10,000,000,000 pixels, above the limit"),
        (["--resize", "4097x4096"], "resize 4097x4096 is 16,781,312 pixels, above the limit"),
        (["--image-size", "5000x5000"], "image_size 5000x5000 is 25,000,000 pixels, above the limit"),
        (["--shorter-side", "4097"], "shorter_side 4097 is longer than the shorter side of any image within"),
    ],
)
def test_targets_above_the_input_pixel_limit_exit_2_before_any_work(tmp_path, args, message):
    """(--data does not exist: a run that got past the options would exit 3, and converts nothing.)"""
    for command in ("convert", "run"):
        p = run_cli(command, "--data", tmp_path / "none", "--output", tmp_path / "out", *args, check=False)
        lines = p.stderr.strip().splitlines()
        assert (p.returncode, len(lines)) == (2, 1) and message in lines[0], (command, p.stderr)
        assert "every input image is held to (16,777,216 pixels: 4096x4096)" in lines[0]
    # the Kubeflow steps build the same Options, and refuse the same values
    with pytest.raises(ValueError, match="above the limit"):
        Options(resize="100000x100000")
    Options(resize="4096x4096")  # at the limit
    Options(shorter_side=4096)


def test_a_new_size_converts_again_and_the_same_size_resumes(sample_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("convert", "--data", sample_dir, "--output", out, "--resize", "32x16")
    again = run_cli("convert", "--data", sample_dir, "--output", out, "--resize", "32x16")
    assert "nothing to convert" in again.stdout
    other = run_cli("convert", "--data", sample_dir, "--output", out, "--resize", "16x32")
    assert "nothing to convert" not in other.stdout
    assert {(r["height"], r["width"]) for r in read_split(out, "val")} == {(32, 16)}
    mode = run_cli(
        "convert", "--data", sample_dir, "--output", out, "--resize", "16x32", "--resize-mode", "center-crop"
    )
    assert "nothing to convert" not in mode.stdout
    # without a resize the fingerprint is what it was before the resize options existed
    assert Options().fingerprint() == {"grayscale": "rgb", "max_pixels": 4096 * 4096, "image_size": ""}
    assert Options(resize="8x8").fingerprint()["resize"] == "8x8" and "shorter_side" not in Options().fingerprint()


@pytest.fixture(scope="module")
def resized(photos, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for fmt in ("seed", "tf-models", "tfds"):
        out[fmt] = tmp_path_factory.mktemp(fmt) / "out"
        run_cli("convert", "--data", photos, "--output", out[fmt], "--format", fmt, "--resize", f"{W}x{H}")
    return out


def test_tfds_reads_the_resized_images(resized):
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds.builder_from_directory(str(resized["tfds"]))
    assert builder.info.features["image"].shape == (H, W, 3)
    images = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
    assert len(images) == 5 * len(PHOTOS) and {ex["image"].shape for ex in images} == {(H, W, 3)}
    info = json.loads((resized["tfds"] / "conversion_info.json").read_text())
    assert info["resize"] == {"mode": "squash", "width": W, "height": H}


def test_model_garden_keys_and_load_read_the_resized_images(resized):
    files = sorted(str(f) for f in resized["tf-models"].glob("*/*.tfrecord"))
    records = [tf.io.parse_single_example(raw, MODEL_GARDEN_SPEC) for raw in tf.data.TFRecordDataset(files)]
    assert len(records) == len(PHOTOS) * len(SIZES)
    for ex in records:
        assert (int(ex["image/height"]), int(ex["image/width"])) == (H, W)
        assert tf.io.decode_jpeg(ex["image/encoded"]).shape == (H, W, 3)
    for fmt in ("seed", "tf-models", "tfds"):
        ds = imagenet_tfrecords.load(str(resized[fmt]), "val", shuffle=False)
        assert ds.element_spec[0].shape == (H, W, 3), fmt  # static: the size is fixed
        assert [tuple(image.shape) for image, _ in ds] == [(H, W, 3)] * len(PHOTOS)


def test_verify_checks_every_size_against_the_resize_and_the_report_says_it(resized, tmp_path):
    for fmt, out in resized.items():
        verify(str(out))
        verify(str(out), use_tf=True)
        run_cli("report", out, "--html", tmp_path / f"{fmt}.html")
        html = (tmp_path / f"{fmt}.html").read_text()
        assert "images resized: 64x48 (width x height, squash)" in html
        assert html.count('<figure data-file="') > 0
    info_file = resized["tf-models"] / "dataset_info.json"
    info = json.loads(info_file.read_text())
    info["resize"]["width"] = 48  # as if the records had another size than recorded
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in resized["tf-models"].rglob("*"):
        if p.is_file():
            (bad / p.relative_to(resized["tf-models"])).parent.mkdir(parents=True, exist_ok=True)
            (bad / p.relative_to(resized["tf-models"])).write_bytes(p.read_bytes())
    (bad / "dataset_info.json").write_text(json.dumps(info))
    for use_tf in (False, True):
        with pytest.raises(VerificationError, match="record 0: image is 64x48 .* made every image 48x48"):
            verify(str(bad), use_tf=use_tf)


def test_the_pipeline_takes_the_resize_parameters():
    spec = yaml.safe_load((ROOT / "pipelines" / "tinyimagenet_to_tfrecords.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["resize"]["defaultValue"] == "" and params["resize"]["parameterType"] == "STRING"
    assert params["resize_mode"]["defaultValue"] == "squash"
    assert params["shorter_side"]["defaultValue"] == 0 and params["shorter_side"]["parameterType"] == "NUMBER_INTEGER"
    tasks = spec["root"]["dag"]["tasks"]
    given = tasks["parse-metadata"]["inputs"]["parameters"]
    for name in ("resize", "resize_mode", "shorter_side"):  # (given once, to the plan step: they travel in the plan)
        assert given[name] == {"componentInputParameter": name}
    loop = next(t for t in tasks.values() if "parameterIterator" in t)
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    for task in (body["convert-shards"], tasks["aggregate-stats"]):
        given = set(task["inputs"].get("parameters", {}))
        assert not {"resize", "resize_mode", "shorter_side"} & given, task["taskInfo"]


def test_archive_and_extracted_imagenet_forms_resize_alike(tmp_path):
    from .test_imagenet_archive import _by_image, write_archives, write_extracted

    outs = {}
    for form, write in {"archives": write_archives, "extracted": write_extracted}.items():
        outs[form] = tmp_path / f"out-{form}"
        convert_small_shards(write(tmp_path / form), outs[form], "--resize", "24x16", "--resize-mode", "center-crop")
    for split in ("train", "val", "test"):
        a, e = _by_image(outs["archives"], split), _by_image(outs["extracted"], split)
        assert a == e and a, split
        assert {r[2] for r in a.values()} == {(16, 24, 3)}, split


def test_bucket_to_bucket_resize_equals_a_local_one(sample_dir, bucket, tmp_path):  # noqa: F811
    """gs:// and s3:// (emulator, moto): the same resized shards and indexes as a local conversion."""
    local_data = tmp_path / "data"
    shutil.copytree(sample_dir, local_data)
    upload(local_data, bucket, "data")
    args = ("--format", "tf-models", "--resize", "40x24", "--resize-mode", "center-crop")
    run_cli("convert", "--data", _url(bucket, "data"), "--output", _url(bucket, "out"), *args)
    run_cli("convert", "--data", local_data, "--output", tmp_path / "local", *args)
    assert verify(_url(bucket, "out")) == verify(str(tmp_path / "local"))
    got = tmp_path / "got"
    names = [n for n in download(bucket, "out", got) if n.endswith((".tfrecord", ".idx"))]
    assert len(names) == 6  # a shard and its index a split
    for name in names:
        assert (got / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    again = run_cli("convert", "--data", _url(bucket, "data"), "--output", _url(bucket, "out"), *args)
    assert "nothing to convert" in again.stdout


@pytest.mark.parametrize("h, w", [(5, 7), (9, 30), (17, 3), (600, 7), (255, 257), (64, 64)])
@pytest.mark.parametrize("resize", [Resize(2, 2), Resize(24, 16), Resize(5, 3, "center-crop"), Resize(shorter_side=4)])
def test_odd_sizes_come_out_exactly_and_close_to_the_reference(h, w, resize):
    """Tiny, thin and odd sizes, enlarged or reduced: the exact target size, pixels near a full decode
    then a Pillow resize of the same window with the same filter (smooth gradients, so any misplaced
    window or scale shows)."""
    from imagenet_tfrecords.image import decode

    y, x = np.mgrid[0:h, 0:w]
    pixels = np.dstack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (h + w)])
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=95)
    got = decode(buf.getvalue(), resize=resize)
    target = resize.target(h, w)
    if target is None:
        assert got.read is None and got.pixels.shape == (h, w, 3)
        return
    assert got.pixels.shape == (*target, 3) and got.read == (h, w)
    window = resize.window(h, w)
    shrinks = target[0] <= window[3] - window[1] and target[1] <= window[2] - window[0]
    filt = Image.HAMMING if shrinks else Image.BILINEAR  # (the filter the converter uses: the window is tested)
    full = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    reference = np.asarray(full.resize((target[1], target[0]), filt, box=window))
    assert np.abs(got.pixels.astype(int) - reference).mean() < 6, (h, w, resize)


@pytest.mark.slow
def test_the_local_pipeline_resizes_as_convert_does(resized, photos, tmp_path):
    """resize and resize_mode reach the convert and aggregate steps: kfp.local's run (2 tasks) writes the
    tfds folder convert wrote, features.json's fixed shape included."""
    out = tmp_path / "run"
    run_cli("run", "--data", photos, "--output", out, "--max-tasks", "2", "--format", "tfds", "--resize", f"{W}x{H}")
    expected = resized["tfds"]
    files = sorted(p.name for p in expected.iterdir() if p.is_file() and p.name != "report.html")
    assert sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "report.html") == files
    for name in files:
        if name != "conversion_info.json":  # (timings, the run)
            assert (out / name).read_bytes() == (expected / name).read_bytes(), name
    assert json.loads((out / "conversion_info.json").read_text())["resize"]["width"] == W
