"""Read converted TFRecords back with TensorFlow: a tf.data reader and a full verification."""

from __future__ import annotations

import json

from .fs import Location
from .layout import SPLITS
from .records import feature_spec


class VerificationError(RuntimeError):
    """The output does not match what its reports say."""


def dataset_info(source) -> tuple[dict, Location]:
    """(dataset_info, root of the shards) for an output URL or a kfp Dataset artifact."""
    if hasattr(source, "path") and hasattr(source, "uri"):  # a kfp Input[Dataset]
        info = json.loads(Location.of(source.path).child("dataset_info.json").read_text())
        root = info.get("root") or source.metadata.get("root") or source.path
        return info, Location.of(root)
    loc = Location.of(str(source))
    return json.loads(loc.child("dataset_info.json").read_text()), loc


def shard_urls(source, split: str) -> list[str]:
    info, root = dataset_info(source)
    if split not in info["splits"]:
        raise KeyError(f"no split {split!r}; the dataset has {sorted(info['splits'])}")
    return [root.child(s["file"]).url for s in info["splits"][split]["shards"] if s["records"]]


def _parse(one_hot: bool):
    import tensorflow as tf

    spec = feature_spec()

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        shape = tf.stack([ex["height"], ex["width"], ex["channel"]])
        image = tf.reshape(tf.io.decode_raw(ex["image_raw"], tf.uint8), shape)
        if one_hot:
            return image, ex["label"], tf.io.decode_raw(ex["label_one_hot"], tf.uint8)
        return image, ex["label"]

    return parse


def load(
    source,
    split: str,
    *,
    shuffle: bool = True,
    one_hot: bool = False,
    seed: int | None = None,
    shuffle_buffer: int = 10_000,
):
    """A tf.data.Dataset of (image uint8 [H, W, 3], label) for one split.

    ``source`` is an output URL or the pipeline's Dataset artifact. Train shards hold one
    class each, so with ``shuffle`` the shard order is shuffled, shards are interleaved and
    records pass through a shuffle buffer. ``one_hot=True`` adds the one-hot label (uint8).
    """
    import tensorflow as tf

    files = shard_urls(source, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(16, max(1, len(files))),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=seed is not None,
        )
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    else:
        ds = tf.data.TFRecordDataset(ds)
    return ds.map(_parse(one_hot), num_parallel_calls=tf.data.AUTOTUNE)


def verify(output_url: str) -> dict:
    """Read every shard with tf.data and check it against sizes.txt and dataset_info.json.

    Returns records per split; raises VerificationError listing every mismatch.
    """
    import tensorflow as tf

    out = Location.of(output_url)
    info, root = dataset_info(output_url)
    problems = []
    sizes = dict(line.split(",") for line in out.child("sizes.txt").read_text().splitlines())
    spec = feature_spec()
    num_classes = info["num_classes"]
    counted = {}
    for split in SPLITS:
        total = 0
        for shard in info["splits"][split]["shards"]:
            url = root.child(shard["file"]).url
            n = 0
            try:
                ds = tf.data.TFRecordDataset(url).batch(1024)
                for batch in ds:
                    ex = tf.io.parse_example(batch, spec)
                    n += int(tf.shape(batch)[0])
                    pixels = ex["height"] * ex["width"] * ex["channel"]
                    if not bool(tf.reduce_all(tf.strings.length(ex["image_raw"]) == tf.cast(pixels, tf.int32))):
                        problems.append(f"{shard['file']}: image_raw length does not match height*width*channel")
                    if not bool(tf.reduce_all(tf.strings.length(ex["label_one_hot"]) == num_classes)):
                        problems.append(f"{shard['file']}: label_one_hot is not {num_classes} bytes")
            except tf.errors.OpError as e:
                problems.append(f"{shard['file']}: unreadable: {e.message}")
            if n != shard["records"]:
                problems.append(f"{shard['file']}: {n} records, dataset_info.json says {shard['records']}")
            total += n
        counted[split] = total
        if int(sizes.get(split, -1)) != total:
            problems.append(f"{split}: {total} records read, sizes.txt says {sizes.get(split)}")
        if info["splits"][split]["num_records"] != total:
            problems.append(
                f"{split}: {total} records read, dataset_info.json says {info['splits'][split]['num_records']}"
            )
    if problems:
        raise VerificationError("\n".join(problems))
    return counted
