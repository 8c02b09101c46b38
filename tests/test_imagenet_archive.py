"""The imagenet layout's archive form (ILSVRC2012's original tars read in place) on generated archives:
the same images as an extracted dataset give the same records, read back with TensorFlow; local
and gs://; the plan step reads tar headers only."""

import io
import json
import random
import re
import tarfile
import uuid

import numpy as np
import pytest
import scipy.io
from PIL import Image

from imagenet_tfrecords.archive import BLOCK, RangeReader, list_nested, list_tar
from imagenet_tfrecords.fs import Location
from imagenet_tfrecords.layouts import build_plan, detect, imagenet_archive
from imagenet_tfrecords.plan import MetadataError
from imagenet_tfrecords.records import BOX_SCHEMA, SCHEMA

from .conftest import convert_small_shards, read_split, run_cli
from .tars import tar_of

DATA = "ILSVRC/Data/CLS-LOC"
DEVKIT, TRAIN_TAR, VAL_TAR = "ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
TEST_TAR = "ILSVRC2012_img_test_v10102019.tar"
TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
# ILSVRC2012_ID order (the devkit's) is not the sorted wnid order (the labels')
LEAVES = [
    (1, "n03000000", "zebra"),
    (2, "n01000000", "tench, Tinca tinca"),
    (3, "n04000000", "espresso maker"),
    (4, "n02000000", "goldfish, Carassius auratus"),
]
WNIDS = sorted(w for _, w, _ in LEAVES)
LONG = "n01000000_" + "1" * 120 + ".JPEG"  # over tar's 100-byte name field: a GNU long-name header
TRAIN = {
    "n01000000": {"n01000000_1.JPEG": "RGB", "n01000000_10.JPEG": "RGB", LONG: "RGB"},
    "n02000000": {"n02000000_3.JPEG": "L", "n02000000_4.JPEG": "PNG"},
    "n03000000": {"n03000000_7.JPEG": "RGB", "n03000000_8.JPEG": "TRUNCATED"},
    "n04000000": {"n04000000_2.JPEG": "CMYK"},
}
# val image number -> (kind, ILSVRC2012_ID of its ground truth line); image 7 is missing
VAL = {1: ("RGB", 3), 2: ("L", 1), 3: ("CMYK", 2), 4: ("PNG", 4), 5: ("TRUNCATED", 1), 6: ("RGB", 2)}
TRUTH_IDS = [VAL[i][1] for i in range(1, 7)] + [4]
TEST = {f"ILSVRC2012_test_{i:08d}.JPEG": "RGB" for i in range(1, 4)}


def _image(kind: str, n: int) -> bytes:
    rng = np.random.default_rng(n)
    img = Image.fromarray(rng.integers(0, 256, size=(9 + n, 13 + n, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    if kind == "PNG":
        img.save(buf, "PNG")  # a PNG named .JPEG
        return buf.getvalue()
    img.convert("RGB" if kind == "TRUNCATED" else kind).save(buf, "JPEG", quality=90)
    return buf.getvalue()[: len(buf.getvalue()) // 2] if kind == "TRUNCATED" else buf.getvalue()


def _meta_mat() -> bytes:
    """A meta.mat in the devkit's structure: the leaves (num_children 0) first, then a parent."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height"]
    rows = [(float(i), w, words, f"gloss of {w}", 0.0, np.zeros((1, 0)), 0.0) for i, w, words in LEAVES]
    rows.append((5.0, "n00000001", "animal", "a parent", 4.0, np.array([[1.0, 2.0, 3.0, 4.0]]), 1.0))
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for n, row in enumerate(rows):
        synsets[n, 0] = row
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def _images() -> tuple[dict, dict, dict]:
    """(wnid -> name -> bytes), (val number -> bytes), (test name -> bytes): the same for both forms."""
    n = iter(range(1000))
    train = {w: {name: _image(kind, next(n)) for name, kind in files.items()} for w, files in TRAIN.items()}
    val = {i: _image(kind, next(n)) for i, (kind, _) in VAL.items()}
    test = {name: _image(kind, next(n)) for name, kind in TEST.items()}
    return train, val, test


def write_archives(root, *, truth_lines=None, test=True, train_extra=None):
    train, val, test_images = _images()
    root.mkdir(parents=True, exist_ok=True)
    truth = "".join(f"{x}\n" for x in (truth_lines or TRUTH_IDS))
    devkit = {"ILSVRC2012_devkit_t12/data/meta.mat": _meta_mat(), TRUTH: truth.encode()}
    (root / DEVKIT).write_bytes(tar_of(devkit, gz=True))
    class_tars = {f"{w}.tar": tar_of(files) for w, files in train.items()} | (train_extra or {})
    (root / TRAIN_TAR).write_bytes(tar_of(class_tars, fmt=tarfile.USTAR_FORMAT))
    val_members = {f"ILSVRC2012_val_{i:08d}.JPEG": data for i, data in val.items()} | {"README": b"not an image"}
    (root / VAL_TAR).write_bytes(tar_of(val_members, fmt=tarfile.PAX_FORMAT))
    if test:
        (root / TEST_TAR).write_bytes(tar_of({f"test/{name}": data for name, data in test_images.items()}))
    return root


def write_extracted(root):
    """The same images as write_archives, as the extracted form (Kaggle's layout)."""
    train, val, test = _images()
    wnid = {i: w for i, w, _ in LEAVES}
    files = {f"train/{w}/{name}": data for w, images in train.items() for name, data in images.items()}
    files |= {f"val/ILSVRC2012_val_{i:08d}.JPEG": data for i, data in val.items()}
    files |= {f"test/{name}": data for name, data in test.items()}
    for rel, data in files.items():
        (root / DATA / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / DATA / rel).write_bytes(data)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {words}\n" for _, w, words in LEAVES))
    lines = [f"ILSVRC2012_val_{i:08d},{wnid[sid]} 0 0 5 5\n" for i, sid in enumerate(TRUTH_IDS, 1)]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(lines))
    return root


def _by_image(out, split) -> dict[str, tuple]:
    """Each record by its image's file name: label, wnid, shape and pixels."""
    return {
        r["filename"].decode().rsplit("/", 1)[1]: (
            int(r["label"]),
            r["wnid"].decode(),
            (int(r["height"]), int(r["width"]), int(r["channel"])),
            r["image_raw"].tobytes() if hasattr(r["image_raw"], "tobytes") else bytes(r["image_raw"]),
        )
        for r in read_split(out, split)
    }


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same images converted from the archive form and from the extracted form."""
    base = tmp_path_factory.mktemp("forms")
    archives, extracted = write_archives(base / "archives"), write_extracted(base / "extracted")
    out_a, out_e = base / "out-archives", base / "out-extracted"
    p = convert_small_shards(archives, out_a, "--workers", "2")
    convert_small_shards(extracted, out_e, "--workers", "2")
    return archives, out_a, out_e, p.stdout


def test_archive_and_extracted_forms_give_the_same_records(both):
    archives, out_a, out_e, stdout = both
    assert "layout: imagenet (detected)" in stdout.splitlines()
    assert (out_a / "labels.txt").read_text() == (out_e / "labels.txt").read_text()
    assert (out_a / "labels.txt").read_text().splitlines()[0] == "n01000000\ttench, Tinca tinca"
    for split in ("train", "val", "test"):
        a, e = _by_image(out_a, split), _by_image(out_e, split)
        assert a == e, split
        assert a, split
    val = _by_image(out_a, "val")
    wnid = {i: w for i, w, _ in LEAVES}
    for i, (_, sid) in VAL.items():
        if f"ILSVRC2012_val_{i:08d}.JPEG" in val:  # by ground truth line i, labelled by the sorted wnids
            assert val[f"ILSVRC2012_val_{i:08d}.JPEG"][:2] == (WNIDS.index(wnid[sid]), wnid[sid])
    train = _by_image(out_a, "train")
    assert {name: r[1] for name, r in train.items()} == {
        name: w for w, files in TRAIN.items() for name, kind in files.items() if kind != "TRUNCATED"
    }
    decoded = np.asarray(Image.open(io.BytesIO(_images()[0]["n04000000"]["n04000000_2.JPEG"])).convert("RGB"))
    assert train["n04000000_2.JPEG"][2:] == (decoded.shape, decoded.tobytes())  # CMYK, converted to RGB


def test_both_forms_records_have_the_same_keys_and_the_archives_no_boxes(both):
    _, out_a, out_e, stdout = both
    assert "the archive form holds no bounding boxes" in stdout
    for split in ("train", "val"):
        a, e = (_examples(out / split) for out in (out_a, out_e))
        assert {frozenset(x.features.feature) for x in a} == {frozenset(x.features.feature) for x in e}, split
        assert {frozenset(x.features.feature) for x in a} == {frozenset({*SCHEMA, *BOX_SCHEMA})}, split
        assert all(not x.features.feature["image/object/bbox/xmin"].float_list.value for x in a), split
    assert any(x.features.feature["image/object/bbox/xmin"].float_list.value for x in _examples(out_e / "val"))


def _examples(folder) -> list:
    """Every record of a split folder as a tf.train.Example (TensorFlow's own parser)."""
    import tensorflow as tf

    files = sorted(str(f) for f in folder.glob("*.tfrecord"))
    return [tf.train.Example.FromString(raw.numpy()) for raw in tf.data.TFRecordDataset(files)]


def test_rejects_name_the_archive_members_and_counts_reconcile(both):
    _, out_a, out_e, _ = both
    rejects = dict(line.split("\t") for line in (out_a / "rejects.tsv").read_text().splitlines())
    assert set(rejects) == {
        f"{TRAIN_TAR}/n03000000.tar/n03000000_8.JPEG",
        f"{VAL_TAR}/ILSVRC2012_val_00000005.JPEG",
        f"{VAL_TAR}/ILSVRC2012_val_00000007.JPEG",
        f"{VAL_TAR}/README",
    }
    assert re.fullmatch(
        r".*/" + re.escape(TRUTH) + ":7: listed but missing", rejects[f"{VAL_TAR}/ILSVRC2012_val_00000007.JPEG"]
    )
    assert "no line of" in rejects[f"{VAL_TAR}/README"]
    extracted = dict(line.split("\t") for line in (out_e / "rejects.tsv").read_text().splitlines())
    truncated = f"{DATA}/train/n03000000/n03000000_8.JPEG"
    assert rejects[f"{TRAIN_TAR}/n03000000.tar/n03000000_8.JPEG"] == extracted[truncated]  # the same decoder reason
    info_a, info_e = (json.loads((o / "dataset_info.json").read_text()) for o in (out_a, out_e))
    for split, s in info_a["splits"].items():
        assert s["found"] == s["num_records"] + s["rejected"] + s["skipped"], split
        assert s["num_records"] == info_e["splits"][split]["num_records"], split
        assert s["label_counts"] == info_e["splits"][split]["label_counts"], split
    run_cli("verify", out_a)
    report = (out_a / "report.html").read_text()
    assert f"{TRAIN_TAR}/n03000000.tar/n03000000_8.JPEG" in report


def test_output_is_byte_identical_and_resumes_until_an_archive_changes(both, tmp_path):
    archives, out_a, _, _ = both
    out = tmp_path / "out"
    convert_small_shards(archives, out, "--workers", "1")
    written = {p.relative_to(out).as_posix(): p for p in out.rglob("*.tfrecord")}
    assert written and all(p.read_bytes() == (out_a / rel).read_bytes() for rel, p in written.items())
    again = convert_small_shards(archives, out, "--workers", "1")
    assert "nothing to convert: all" in again.stdout
    before = {rel: p.stat().st_mtime_ns for rel, p in written.items()}
    (archives / VAL_TAR).write_bytes((archives / VAL_TAR).read_bytes())  # same bytes, a new change stamp
    convert_small_shards(archives, out, "--workers", "1")
    rewritten = {rel for rel, p in written.items() if p.stat().st_mtime_ns != before[rel]}
    assert rewritten == {rel for rel in written if rel.startswith("val/")}
    assert all(p.read_bytes() == (out_a / rel).read_bytes() for rel, p in written.items())


@pytest.mark.slow
def test_the_kubeflow_pipeline_over_the_archives_writes_what_convert_writes(both, tmp_path):
    """`run` (kfp.local, three conversion tasks) on the archive form: the same shards, byte for
    byte, and the same split sizes as `convert`; verify passes."""
    archives, out_a, _, _ = both
    out = tmp_path / "run"
    small = ["--shard-size", "2", "--max-reject-fraction", "1"]  # as convert_small_shards
    p = run_cli("run", "--data", archives, "--output", out, *small, "--max-tasks", "3")
    assert "layout: imagenet (detected)" in p.stdout.splitlines()
    shards = {q.relative_to(out).as_posix(): q.read_bytes() for q in out.rglob("*.tfrecord")}
    assert len(shards) == len(list(out_a.rglob("*.tfrecord"))) > 3
    assert all(data == (out_a / rel).read_bytes() for rel, data in shards.items())
    assert (out / "sizes.txt").read_text() == (out_a / "sizes.txt").read_text() == "train,7\nval,5\ntest,3"
    assert (out / "rejects.tsv").read_text() == (out_a / "rejects.tsv").read_text()
    run_cli("verify", out)


def test_plan_of_the_archive_form(tmp_path):
    data = write_archives(tmp_path / "data", test=False)
    assert detect(str(data)) == "imagenet"
    plan = build_plan(str(data), layout="imagenet", shard_size=2, train_order="per-class")
    assert [c.wnid for c in plan.classes] == WNIDS and plan.classes[0].words == "tench, Tinca tinca"
    train = [s for s in plan.all_shards() if s.split == "train"]
    assert [(s.index, s.count, s.dir) for s in train] == [(i, 4, TRAIN_TAR) for i in range(4)]
    assert [s.name.split("/")[0] for s in train[0].sources] == ["n01000000.tar"] * 3
    raw = (data / TRAIN_TAR).read_bytes()
    for s in train[1].sources:
        offset, size = s.span
        assert raw[offset : offset + size] == _images()[0]["n02000000"][s.name.split("/")[1]]
    assert any("no test split" in w for w in plan.warnings)


def test_metadata_errors_name_file_and_line(tmp_path):
    data = write_archives(tmp_path / "bad-truth", truth_lines=[3, 1, 2, 9])
    with pytest.raises(MetadataError, match=re.escape(f"{data / DEVKIT}/{TRUTH}:4: expected the ILSVRC2012_ID")):
        build_plan(str(data))
    data = write_archives(tmp_path / "no-class-tar")
    train = {m.name: m for m in list_tar(Location.of(str(data / TRAIN_TAR)))}
    raw = (data / TRAIN_TAR).read_bytes()
    members = {n: raw[m.offset : m.offset + m.size] for n, m in train.items() if n != "n02000000.tar"}
    (data / TRAIN_TAR).write_bytes(tar_of(members))
    with pytest.raises(
        MetadataError, match=re.escape(f"{data / TRAIN_TAR}: no member n02000000.tar") + ".*synsets\\(4\\)"
    ):
        build_plan(str(data))
    data = write_archives(tmp_path / "stray", train_extra={"n09999999.tar": tar_of({"x.JPEG": b"x"})})
    plan = build_plan(str(data))
    stray = {"path": f"{TRAIN_TAR}/n09999999.tar", "reason": f"not the tar of a class of {DEVKIT} (data/meta.mat)"}
    assert plan.rejects[0] == stray
    (data / VAL_TAR).unlink()
    p = convert_small_shards(data, tmp_path / "out", check=False)
    assert p.returncode == 3 and f"{data / VAL_TAR}: file not found" in p.stderr


def test_a_bad_synset_entry_of_meta_mat_is_named(tmp_path):
    data = write_archives(tmp_path / "data")
    with tarfile.open(data / DEVKIT) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    meta = scipy.io.loadmat(io.BytesIO(files["ILSVRC2012_devkit_t12/data/meta.mat"]))
    meta["synsets"][2, 0]["WNID"] = np.array(["n0 bad"])
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": meta["synsets"]})
    files["ILSVRC2012_devkit_t12/data/meta.mat"] = buf.getvalue()
    (data / DEVKIT).write_bytes(tar_of(files, gz=True))
    url = f"{data / DEVKIT}/ILSVRC2012_devkit_t12/data/meta.mat"
    with pytest.raises(MetadataError, match=re.escape(f"{url}: synsets(3): expected a wnid and words, got 'n0 bad'")):
        build_plan(str(data))


@pytest.mark.parametrize("order", ["mixed", "per-class"])
def test_train_classes_listed_in_groups_of_any_size_give_the_same_sources_and_plan(tmp_path, monkeypatch, order):
    """Class tars listed a group at a time (1, some, all, more than there are) list what tarfile
    lists, and the plan does not depend on the group size."""
    stray = {"n09999999.tar": tar_of({"x.JPEG": b"x"}), "README": b"not a tar"}
    data = write_archives(tmp_path / "data", train_extra=stray)
    root = Location.of(str(data))
    expected = {}
    with tarfile.open(data / TRAIN_TAR) as outer:
        for m in (m for m in outer.getmembers() if m.name.removesuffix(".tar") in WNIDS):
            with tarfile.open(fileobj=outer.extractfile(m)) as t:
                spans = {f"{m.name}/{x.name}": (m.offset_data + x.offset_data, x.size) for x in t.getmembers()}
            expected[m.name.removesuffix(".tar")] = spans
    synsets, _, _ = imagenet_archive.read_devkit(root.child(DEVKIT))
    by_wnid = {s.wnid: s for s in synsets.values()}
    labels = {w: i for i, w in enumerate(WNIDS)}
    plans = {}
    for group in (1, 3, len(WNIDS), 1000):
        rejects = []
        listed = imagenet_archive.train_sources(root, by_wnid, labels, rejects, group)
        got = {w: {s.name: s.span for s in sources} for w, sources in listed}
        assert list(got) == WNIDS and got == expected, group
        assert [r["path"] for r in rejects] == [f"{TRAIN_TAR}/README", f"{TRAIN_TAR}/n09999999.tar"], group
        monkeypatch.setattr(imagenet_archive, "GROUP", group)
        plan = build_plan(str(data), layout="imagenet", shard_size=2, train_order=order, train_shards=0)
        plans[group] = (list(plan.all_shards()), plan.rejects, plan.problems)
    assert all(p == plans[1] for p in plans.values())
    with pytest.raises(ValueError, match="group must be 1 or more"):
        list(imagenet_archive.train_sources(root, by_wnid, labels, [], 0))


def test_listing_reads_headers_only_pax_and_gnu_long_names(tmp_path):
    big = np.random.default_rng(0).bytes(50_000)
    inner = {f"{'x' * 130}_{i}.JPEG": big for i in range(3)}
    outer = {"a.tar": tar_of(inner, fmt=tarfile.GNU_FORMAT), "b.tar": tar_of(inner, fmt=tarfile.PAX_FORMAT)}
    path = tmp_path / "nested.tar"
    path.write_bytes(tar_of(outer))
    reader = RangeReader(Location.of(str(path)))
    tops, nested = list_nested(Location.of(str(path)), reader)
    raw = path.read_bytes()
    assert [m.name for m in tops] == ["a.tar", "b.tar"]
    for name in ("a.tar", "b.tar"):
        assert {m.name: raw[m.offset : m.offset + m.size] for m in nested[name]} == inner
    # per inner member its header, the long-name (or pax) header and that header's payload; the end markers
    assert reader.bytes <= (2 + 1 + 2 * (3 * 3 + 1)) * 512 < len(raw) / 20


def test_a_flat_tar_listed_from_many_starting_points_equals_tarfiles_listing(tmp_path):
    """Starting points inside members (a member that is itself a tar has headers inside) and
    after pax headers (whose long names the next header needs) do not change the listing."""
    rng = np.random.default_rng(1)
    inner = tar_of({f"inner_{i}.JPEG": rng.bytes(3000) for i in range(20)})
    members = {}
    for i in range(200):
        name = f"ILSVRC2012_val_{i:08d}.JPEG" if i % 7 else "\u00e9" * (60 + i % 50) + f"_{i}.JPEG"
        members[name] = inner if i % 31 == 0 else rng.bytes(int(rng.integers(100, 20_000)))
    path = tmp_path / "flat.tar"
    path.write_bytes(tar_of(members, fmt=tarfile.PAX_FORMAT))
    with tarfile.open(path) as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar.getmembers()]
    rounds = {}
    for segment in (0, 4096, 65536):
        reader = RangeReader(Location.of(str(path)))
        got = [(m.name, m.offset, m.size) for m in list_tar(reader.loc, reader, segment=segment)]
        assert got == expected, segment
        rounds[segment] = reader.rounds
    assert rounds[65536] < rounds[0] / 4  # the walks advance together


@pytest.fixture()
def gcs_archives(store_env, gcs_server, tmp_path):
    from .test_object_stores import GcsBucket, upload

    bucket = GcsBucket(gcs_server, f"it-{uuid.uuid4().hex[:12]}")
    upload(write_archives(tmp_path / "archives"), bucket, "imagenet")
    return f"gs://{bucket.name}/imagenet"


def test_gs_archives_convert_like_local_ones_reading_headers_only(gcs_archives, both, tmp_path):
    _, out_a, _, _ = both
    reader = RangeReader(Location.of(f"{gcs_archives}/{TRAIN_TAR}"))
    outer, inner = list_nested(reader.loc, reader)
    size = reader.loc.size()
    members = len(outer) + sum(map(len, inner.values()))
    assert reader.bytes <= (members + 1 + len(inner)) * 512 + 1024 < size
    out = tmp_path / "out"
    convert_small_shards(gcs_archives, out, "--workers", "2")
    for split in ("train", "val", "test"):
        for f in sorted((out_a / split).glob("*.tfrecord")):
            assert (out / split / f.name).read_bytes() == f.read_bytes(), f.name
    rejects = (out / "rejects.tsv").read_text()
    assert rejects.replace(gcs_archives, "") == (out_a / "rejects.tsv").read_text().replace(str(both[0]), "")


@pytest.mark.parametrize("bad", [b"xx", b"00", b"99"])
def test_a_malformed_pax_header_is_an_error_naming_the_tar(tmp_path, bad):
    """A pax record whose length is no number, zero, or past the header's data: an error naming the
    tar and the header's byte, never a hang or a bare ValueError."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("é" * 60 + ".JPEG")  # a non-ASCII name: tarfile writes a pax path record
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    raw = buf.getvalue()
    at = raw.index(b" path=") - 3  # the record's length: three digits
    assert raw[at : at + 3].isdigit()
    path = tmp_path / "bad.tar"
    path.write_bytes(raw[:at] + b"0" + bad + raw[at + 3 :])
    with pytest.raises(MetadataError, match=re.escape(f"{path}: the extended header at byte 0: malformed pax record")):
        list_tar(Location.of(str(path)))


def _headers() -> list[bytes]:
    """Headers as tar writers write them: files, folders, links, every format, old V7 folders."""
    out = []
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        for name, kind, size in (("a/b.jpg", tarfile.REGTYPE, 1234), ("x/", tarfile.DIRTYPE, 0),
                                 ("l", tarfile.SYMTYPE, 0), ("n" * 99, tarfile.REGTYPE, 8**11 - 1),
                                 ("dir/" * 30 + "f.cls", tarfile.REGTYPE, 3)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime, info.mode = kind, size, 1_700_000_000, 0o644
            info.linkname = "target" if kind == tarfile.SYMTYPE else ""
            out.append(info.tobuf(fmt, "utf-8", "surrogateescape")[-BLOCK:])
    v7 = bytearray(out[0])
    v7[0:100] = b"old/".ljust(100, b"\0")
    v7[156:157] = tarfile.AREGTYPE
    return [*out, bytes(v7)]


def _with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % (sum(block) & 0o777777)
    return bytes(block)


def _read(block: bytes, read) -> tuple:
    try:
        info = read(block)
    except tarfile.HeaderError as e:
        return ("error", str(e))
    return (info.name, info.size, info.type, info.isreg(), info.isdir())


def test_the_header_reader_reads_every_header_as_tarfile_does():
    from imagenet_tfrecords.archive import _header

    tarfile_read = lambda b: tarfile.TarInfo.frombuf(b, "utf-8", "surrogateescape")  # noqa: E731
    rng = random.Random(7)
    headers, members = _headers(), 0
    for n in range(30_000):
        block = bytearray(rng.choice(headers))
        for _ in range(rng.choice((0, 1, 1, 2, 4))):  # bytes forged, anywhere, from what tar fields hold
            block[rng.randrange(BLOCK)] = rng.choice(b"0123456789 \0/x\xff-+_\t")
        data = _with_checksum(block) if n % 10 else bytes(block)  # (a tenth keep a stale checksum)
        got, want = _read(data, _header), _read(data, tarfile_read)
        assert got == want, (data, got, want)
        members += want[0] != "error"
    assert members > 15_000  # (most are headers, not only errors)
