"""imagenet_tfrecords.torch on the converted sample, checked against TensorFlow's own reader."""

import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter

import fsspec
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from imagenet_tfrecords.torch import TFRecordImages, part_ranges  # noqa: E402

from .conftest import read_split  # noqa: E402


def _key(image, label) -> tuple:
    image = np.asarray(image)
    return tuple(image.shape), hashlib.sha256(image.tobytes()).hexdigest(), int(label)


@pytest.fixture(scope="module")
def expected(converted):
    """Multiset of (shape, pixels hash, label) per split, read and decoded by TensorFlow."""
    out = {}
    for split in ("train", "test"):
        recs = read_split(converted, split)
        out[split] = [
            _key(np.frombuffer(r["image_raw"], np.uint8).reshape(r["height"], r["width"], r["channel"]), r["label"])
            for r in recs
        ]
    return out


def _read(dataset, num_workers=2) -> list[tuple]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    items = []
    for image, label in loader:
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert isinstance(label, int)
        items.append(_key(image.numpy(), label))
    return items


def test_two_workers_read_every_record_once(converted, expected):
    got = _read(TFRecordImages(converted, "train"))
    assert len(got) == len(expected["train"]) == 72
    assert Counter(got) == Counter(expected["train"])


def test_unshuffled_equals_tensorflow_in_file_order(converted, expected):
    got = _read(TFRecordImages(converted, "train", shuffle=False), num_workers=0)
    assert got == expected["train"]  # pixels, shape and label of each record, in file order


def test_two_ranks_two_workers_together_read_every_record_once(converted, expected):
    per_rank = [_read(TFRecordImages(converted, "train", rank=r, world_size=2, seed=3)) for r in (0, 1)]
    assert all(per_rank)
    assert Counter(per_rank[0]) + Counter(per_rank[1]) == Counter(expected["train"])
    # the four parts (rank x worker) are disjoint record ranges that cover the split, near-equal in size
    shards = json.loads((converted / "dataset_info.json").read_text())["splits"]["train"]["shards"]
    seen = [(n, i) for p in range(4) for n, lo, hi in part_ranges(shards, p, 4) for i in range(lo, hi)]
    assert len(seen) == len(set(seen)) == 72
    assert {sum(hi - lo for _, lo, hi in part_ranges(shards, p, 4)) for p in range(4)} == {18}
    assert any(lo or hi < shards[n]["records"] for p in range(4) for n, lo, hi in part_ranges(shards, p, 4))


def test_without_indexes_whole_shards_are_split(converted, expected, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(converted, out)
    info = json.loads((out / "dataset_info.json").read_text())
    for split in info["splits"].values():
        for shard in split["shards"]:
            shard.pop("index", None)
    (out / "dataset_info.json").write_text(json.dumps(info))
    for idx in out.glob("*/*.idx"):
        idx.unlink()
    per_rank = [_read(TFRecordImages(out, "train", rank=r, world_size=2)) for r in (0, 1)]
    assert Counter(per_rank[0]) + Counter(per_rank[1]) == Counter(expected["train"])
    shards = info["splits"]["train"]["shards"]
    assert all(lo == 0 and hi == shards[n]["records"] for p in range(4) for n, lo, hi in part_ranges(shards, p, 4))


def test_seed_and_epoch_set_the_order(converted):
    def order(epoch=None, **kw):
        ds = TFRecordImages(converted, "train", **kw)
        if epoch is not None:
            ds.set_epoch(epoch)
        return [_key(i.numpy(), label) for i, label in ds]

    first = order(seed=7)
    assert first == order(seed=7)
    assert Counter(first) == Counter(order(seed=7, epoch=1))
    assert first != order(seed=7, epoch=1)
    assert first != order(seed=8)
    ds = TFRecordImages(converted, "train", seed=7)  # set_epoch reaches the DataLoader's workers
    a = _read(ds)
    ds.set_epoch(1)
    assert a != _read(ds) and Counter(a) == Counter(_read(ds))


def test_test_split_labels_are_minus_one(converted, expected):
    got = _read(TFRecordImages(converted, "test"))
    assert Counter(got) == Counter(expected["test"])
    assert len(got) == 20 and {label for *_, label in got} == {-1}


def test_reads_through_fsspec(converted, expected):
    fs = fsspec.filesystem("memory")
    fs.put(str(converted), "/torch-out", recursive=True)
    try:
        per_rank = [_read(TFRecordImages("memory://torch-out", "train", rank=r, world_size=3), 0) for r in range(3)]
    finally:
        fs.rm("/torch-out", recursive=True)
    assert sum(map(Counter, per_rank), Counter()) == Counter(expected["train"])


def test_import_does_not_import_tensorflow():
    code = "import sys, imagenet_tfrecords.torch; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
