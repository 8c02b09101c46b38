"""The naive baseline: a straightforward TensorFlow 2 port of the 2018 conversion notebook.

One process, one image at a time: ``tf.io.read_file`` + ``tf.io.decode_jpeg(channels=3)``,
a ``tf.train.Example`` with the project's keys, ``tf.io.TFRecordWriter``; one file per class,
one for val, one for test. Grayscale images become RGB (``channels=3``), so it writes as many
records as ``imagenet-tfrecords convert``. Labels are indices in the sorted class ids; the test
split gets label -1 and an all-zero one-hot.

Usage: python benchmarks/baseline_tf.py DATA_DIR OUTPUT_DIR
Prints one JSON line: {"images": N, "seconds": time after TensorFlow was imported}.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _write(writer: tf.io.TFRecordWriter, path: str, rel: str, label: int, wnid: str, one_hot: bytes) -> None:
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy()
    height, width, channel = image.shape
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "height": _int64(height),
                "width": _int64(width),
                "channel": _int64(channel),
                "label": _int64(label),
                "label_one_hot": _bytes(one_hot),
                "image_raw": _bytes(image.tobytes()),
                "filename": _bytes(rel.encode()),
                "wnid": _bytes(wnid.encode()),
            }
        )
    )
    writer.write(example.SerializeToString())


def main(data: str, out: str) -> int:
    started = time.perf_counter()
    with open(os.path.join(data, "wnids.txt")) as f:
        wnids = sorted(line.strip() for line in f if line.strip())
    labels = {w: i for i, w in enumerate(wnids)}
    one_hot = np.eye(len(wnids), dtype=np.uint8)
    no_label = bytes(len(wnids))
    count = 0
    os.makedirs(out, exist_ok=True)

    for wnid in wnids:
        directory = os.path.join(data, "train", wnid, "images")
        with tf.io.TFRecordWriter(os.path.join(out, f"train_{wnid}.tfrecords")) as writer:
            for name in sorted(os.listdir(directory)):
                rel = f"train/{wnid}/images/{name}"
                _write(writer, os.path.join(data, rel), rel, labels[wnid], wnid, one_hot[labels[wnid]].tobytes())
                count += 1

    with open(os.path.join(data, "val", "val_annotations.txt")) as f:
        annotations = [line.split("\t")[:2] for line in f if line.strip()]
    with tf.io.TFRecordWriter(os.path.join(out, "val.tfrecords")) as writer:
        for name, wnid in annotations:
            rel = f"val/images/{name}"
            _write(writer, os.path.join(data, rel), rel, labels[wnid], wnid, one_hot[labels[wnid]].tobytes())
            count += 1

    with tf.io.TFRecordWriter(os.path.join(out, "test.tfrecords")) as writer:
        for name in sorted(os.listdir(os.path.join(data, "test", "images"))):
            rel = f"test/images/{name}"
            _write(writer, os.path.join(data, rel), rel, -1, "", no_label)
            count += 1

    print(json.dumps({"images": count, "seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
