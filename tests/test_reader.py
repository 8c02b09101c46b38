"""imagenet_tfrecords.load on a converted sample, checked against TensorFlow's own reader."""

import hashlib
import os
import shutil
from collections import Counter
from types import SimpleNamespace

import fsspec
import numpy as np
import pytest
import tensorflow as tf

import imagenet_tfrecords
from imagenet_tfrecords.reader import VerificationError, verify
from imagenet_tfrecords.tasks import aggregate_step, convert_dataset

from .conftest import read_split

CLASSES, PER_CLASS = 6, 12  # the sample_dir fixture: 6 classes x 12 train images, 30 val, 20 test
COUNTS = {"train": CLASSES * PER_CLASS, "val": 30, "test": 20}


@pytest.fixture(scope="module")
def conversion(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    plan, _ = convert_dataset(str(sample_dir), str(out), shard_size=8, workers=2, train_order="per-class")
    return SimpleNamespace(out=out, plan=plan)


@pytest.fixture(scope="module")
def converted(conversion):
    return conversion.out


def _key(image, label) -> tuple:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest(), int(label)


def _expected(out, split) -> Counter:
    """(pixel digest, label) of every record, read with TFRecordDataset + parse_single_example."""
    return Counter((hashlib.sha256(r["image_raw"]).hexdigest(), int(r["label"])) for r in read_split(out, split))


def _first_labels(ds, n=20) -> list[int]:
    return [int(label) for _, label in ds.take(n)]


def test_shapes_and_dtypes(converted):
    for split in ("train", "val", "test"):
        ds = imagenet_tfrecords.load(converted, split, seed=0)
        image_spec, label_spec = ds.element_spec
        # every sample image is 64x64, so the static shape is known (Keras can build from it)
        assert image_spec.shape.as_list() == [64, 64, 3] and image_spec.dtype == tf.uint8
        assert label_spec.shape.as_list() == [] and label_spec.dtype == tf.int64
        n = 0
        for image, label in ds:
            n += 1
            assert image.shape == (64, 64, 3) and image.dtype == tf.uint8
            if split == "test":
                assert int(label) == -1
            else:
                assert 0 <= int(label) < CLASSES
        assert n == COUNTS[split]


def test_every_record_exactly_once_per_epoch(converted):
    for split in ("train", "val", "test"):
        expected = _expected(converted, split)
        assert sum(expected.values()) == COUNTS[split]
        assert max(expected.values()) == 1  # the sample's images are all distinct
        for shuffle in (True, False):
            ds = imagenet_tfrecords.load(converted, split, shuffle=shuffle, seed=7)
            epochs = [[_key(image, label) for image, label in ds] for _ in range(2)]
            for epoch in epochs:
                assert Counter(epoch) == expected, (split, shuffle)
            if shuffle and split == "train":
                assert epochs[0] != epochs[1]  # reshuffled on every pass
            if not shuffle:
                assert epochs[0] == epochs[1]  # file order, stable


def test_unshuffled_order_is_file_order(converted):
    for split in ("train", "val", "test"):
        got = [_key(image, label) for image, label in imagenet_tfrecords.load(converted, split, shuffle=False)]
        want = [(hashlib.sha256(r["image_raw"]).hexdigest(), int(r["label"])) for r in read_split(converted, split)]
        assert got == want


# Criterion for "well mixed": at least 4 distinct classes among the first 20 train labels.
# Read in file order, the first 20 come from 2 classes (12 + 8), since each train shard holds
# one class. For a uniformly random order of 6 classes x 12 images, 20 labels from at most 3
# classes has probability C(6,3) * C(36,20) / C(72,20) < 1e-7, so a fixed-seed shuffle that
# mixes properly passes, and one that keeps shards together fails.
MIN_CLASSES_IN_FIRST_20 = 4


def test_shuffle_mixes_the_one_class_train_shards(converted):
    naive = _first_labels(imagenet_tfrecords.load(converted, "train", shuffle=False))
    assert len(set(naive)) < MIN_CLASSES_IN_FIRST_20  # the criterion does catch file order
    for seed in range(5):
        labels = _first_labels(imagenet_tfrecords.load(converted, "train", seed=seed))
        assert len(set(labels)) >= MIN_CLASSES_IN_FIRST_20, (seed, labels)
    # interleaving alone (no shuffle buffer) already mixes shards record by record
    labels = _first_labels(imagenet_tfrecords.load(converted, "train", seed=0, shuffle_buffer=1))
    assert len(set(labels)) >= MIN_CLASSES_IN_FIRST_20, labels


def test_seed_makes_the_order_reproducible(converted):
    def order(seed):
        return [_key(i, label) for i, label in imagenet_tfrecords.load(converted, "train", seed=seed)]

    assert order(3) == order(3)
    assert order(3) != order(4)


def test_one_hot_matches_label(converted):
    for split in ("train", "val", "test"):
        plain = imagenet_tfrecords.load(converted, split, shuffle=False)
        hot = imagenet_tfrecords.load(converted, split, shuffle=False, one_hot=True)
        assert hot.element_spec[1].shape.as_list() == [CLASSES] and hot.element_spec[1].dtype == tf.uint8
        n = 0
        for (image_a, label), (image_b, vector) in zip(plain, hot, strict=True):
            n += 1
            np.testing.assert_array_equal(image_a, image_b)
            vector = vector.numpy()
            if split == "test":
                assert int(label) == -1 and not vector.any()
            else:
                assert vector.sum() == 1 and vector[int(label)] == 1
        assert n == COUNTS[split]


def test_one_hot_pairs_feed_keras_directly(converted):
    """(image, one_hot) is an (x, y) pair, so fit() does not take the labels for sample weights."""
    ds = imagenet_tfrecords.load(converted, "train", one_hot=True, seed=0).batch(8)
    x, y = next(iter(ds))
    assert x.shape == (8, 64, 64, 3) and y.shape == (8, CLASSES)


@pytest.fixture(scope="module")
def artifact(conversion, tmp_path_factory):
    """A Dataset artifact directory written by the code the aggregate-stats component runs."""
    tmp = tmp_path_factory.mktemp("artifact")
    plan_path = tmp / "plan.json"
    plan_path.write_text(conversion.plan.to_json())
    dataset_dir = tmp / "dataset"
    info = aggregate_step(str(plan_path), [], str(dataset_dir), str(tmp / "sizes"), str(tmp / "r"))
    assert not list(dataset_dir.rglob("*.tfrecord"))  # the artifact holds no shards, only their root
    return dataset_dir, info


def test_kfp_dataset_artifact(converted, artifact):
    from kfp import dsl

    dataset_dir, info = artifact
    ds_artifact = dsl.Dataset(name="dataset", uri=str(dataset_dir), metadata={"root": info["root"]})
    assert ds_artifact.path == str(dataset_dir)
    for split in ("train", "val", "test"):
        got = Counter(_key(i, label) for i, label in imagenet_tfrecords.load(ds_artifact, split, seed=1))
        assert got == _expected(converted, split)


def test_artifact_whose_path_is_not_mounted_reads_from_its_uri(converted, artifact):
    """Outside a pipeline pod a gs:// artifact's /gcs/... path may not exist; its uri still reads."""
    dataset_dir, _ = artifact
    source = SimpleNamespace(path=str(dataset_dir / "not-mounted"), uri=str(dataset_dir), metadata={})
    got = Counter(_key(i, label) for i, label in imagenet_tfrecords.load(source, "val", shuffle=False))
    assert got == _expected(converted, "val")
    missing = SimpleNamespace(path="/nonexistent/a", uri="/nonexistent/b", metadata={})
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        imagenet_tfrecords.load(missing, "train")


def test_a_moved_output_folder_still_reads(converted, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(converted, moved)
    got = Counter(_key(i, label) for i, label in imagenet_tfrecords.load(moved, "train", seed=0))
    assert got == _expected(converted, "train")


def test_file_systems_tensorflow_cannot_open_are_read_through_fsspec(converted):
    """memory:// (like s3:// without tensorflow-io) is streamed through fsspec; CRCs are checked."""
    fs = fsspec.filesystem("memory")
    root = "/reader-test"
    for dirpath, _, names in os.walk(converted):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                fs.pipe(f"{root}/{os.path.relpath(path, converted)}", f.read())
    try:
        for split in ("train", "test"):
            got = Counter(_key(i, label) for i, label in imagenet_tfrecords.load(f"memory://{root}", split, seed=0))
            assert got == _expected(converted, split)
        assert verify(f"memory://{root}") == COUNTS
        # a flipped byte inside a record is caught by the CRC and reported by verify
        shard = f"{root}/train/train-00002-of-00006.tfrecord"
        data = bytearray(fs.cat(shard))
        data[100] ^= 0xFF
        fs.pipe(shard, bytes(data))
        with pytest.raises(VerificationError, match="train-00002-of-00006.tfrecord"):
            verify(f"memory://{root}")
    finally:
        fs.rm(root, recursive=True)


def test_errors_name_the_problem(converted, tmp_path):
    with pytest.raises(ValueError, match="no split 'training'"):
        imagenet_tfrecords.load(converted, "training")
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        imagenet_tfrecords.load(tmp_path, "train")
