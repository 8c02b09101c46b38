"""Read converted TFRecords back with TensorFlow: a tf.data reader and a full verification."""

from __future__ import annotations

import json
import os

from .fs import Location
from .layout import SPLITS
from .records import feature_spec, iter_records


class VerificationError(RuntimeError):
    """The output does not match what its reports say."""


def _artifact_dir(source) -> Location | None:
    """The directory of a kfp Dataset artifact (anything with .path/.uri), or None."""
    if not (hasattr(source, "path") and hasattr(source, "uri")):
        return None
    for candidate in (source.path, source.uri):
        if candidate and Location.of(candidate).child("dataset_info.json").exists():
            return Location.of(candidate)
    raise FileNotFoundError(
        f"the Dataset artifact has no dataset_info.json (looked under path {source.path!r} and uri {source.uri!r}); "
        "pass the output of the aggregate-stats step or the conversion pipeline's 'dataset' output"
    )


def dataset_info(source) -> tuple[dict, Location]:
    """(dataset_info, root of the shards) for an output URL or a kfp Dataset artifact.

    An output URL is its own root, so a converted folder that was moved or copied still reads.
    An artifact holds only the reports; the shards are under the "root" its dataset_info.json
    records (the pipeline's output_url), or the "root" in the artifact's metadata.
    """
    artifact = _artifact_dir(source)
    if artifact is not None:
        info = json.loads(artifact.child("dataset_info.json").read_text())
        root = info.get("root") or (getattr(source, "metadata", None) or {}).get("root") or artifact.url
        return info, Location.of(root)
    loc = Location.of(str(source))
    info_file = loc.child("dataset_info.json")
    if not info_file.exists():
        raise FileNotFoundError(f"{info_file.url}: not found; is {loc.url} the output of a finished conversion?")
    return json.loads(info_file.read_text()), loc


def _split_info(info: dict, split: str) -> dict:
    if split not in info["splits"]:
        raise ValueError(f"no split {split!r} in dataset_info.json; the dataset has {sorted(info['splits'])}")
    return info["splits"][split]


def shard_urls(source, split: str) -> list[str]:
    """The shard files of a split that hold records, as URLs (plain paths for local files)."""
    info, root = dataset_info(source)
    return [_tf_name(root.child(s["file"])) for s in _split_info(info, split)["shards"] if s["records"]]


def _tf_name(loc: Location) -> str:
    """How TensorFlow should open a file: a plain path when local, else the URL."""
    return loc.path if loc.is_local else loc.url


def _tf_can_open(url: str) -> bool:
    """Whether TensorFlow's own file systems handle this URL (local files, gs://)."""
    import tensorflow as tf

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
        return False  # TensorFlow's GCS client always talks to Google; gcsfs follows the emulator
    return scheme in tf.io.gfile.get_registered_schemes()


def _fsspec_records(url):
    """Yield the serialized records of one shard read through fsspec (s3://, memory://, ...)."""
    url = url.decode() if isinstance(url, bytes) else str(url)
    loc = Location.of(url)
    with loc.fs.open(loc.path, "rb") as f:
        yield from iter_records(f)


def _opener(files: list[str]):
    """A function: shard name (a string tensor) -> tf.data.Dataset of its serialized records.

    TensorFlow's TFRecordDataset when TensorFlow can open every file; otherwise the shards are
    streamed through fsspec and unframed by records.iter_records (CRCs checked).
    """
    import tensorflow as tf

    if all(_tf_can_open(f) for f in files):
        return tf.data.TFRecordDataset

    def open_one(name):
        return tf.data.Dataset.from_generator(
            _fsspec_records, args=(name,), output_signature=tf.TensorSpec([], tf.string)
        )

    return open_one


def _image_shape(split: dict) -> list:
    """[H, W, 3] when every image of the split has one size (per dataset_info.json), else [None, None, 3]."""
    shapes = [s for s, n in split.get("shapes", {}).items() if n]
    if len(shapes) == 1:
        h, w = (int(v) for v in shapes[0].split("x"))
        return [h, w, 3]
    return [None, None, 3]


def _parse(one_hot: bool, image_shape: list, num_classes: int):
    import tensorflow as tf

    spec = feature_spec()

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        shape = tf.stack([ex["height"], ex["width"], ex["channel"]])
        image = tf.reshape(tf.io.decode_raw(ex["image_raw"], tf.uint8), shape)
        image = tf.ensure_shape(image, image_shape)
        if one_hot:
            return image, tf.ensure_shape(tf.io.decode_raw(ex["label_one_hot"], tf.uint8), [num_classes])
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
    cycle_length: int = 16,
):
    """A tf.data.Dataset of (image, label) for one split of a converted dataset.

    ``source`` is the output URL of a conversion (a local path, gs://, s3://, ...) or the
    pipeline's ``dataset`` artifact (an ``Input[Dataset]``). ``image`` is uint8 [H, W, 3]
    (the static shape is set when every image of the split has the same size); ``label``
    is int64, -1 for the test split. With ``one_hot=True`` the label is the one-hot vector
    instead: uint8 [num_classes], all zero for the test split.

    Every record appears exactly once per pass. Train shards hold one class each, so with
    ``shuffle`` (the default) the shard order is shuffled on every pass, ``cycle_length``
    shards are read interleaved record by record and the records go through a shuffle
    buffer of ``shuffle_buffer``. ``seed`` makes the order reproducible. With
    ``shuffle=False`` shards are read one after the other in file order (val/test order).

    The dataset is neither batched nor repeated: add ``.batch(n)`` and ``.prefetch``.
    """
    import tensorflow as tf

    info, root = dataset_info(source)
    split_info = _split_info(info, split)
    files = [_tf_name(root.child(s["file"])) for s in split_info["shards"] if s["records"]]
    names = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
    open_one = _opener(files)
    deterministic = not shuffle or seed is not None
    if shuffle:
        names = names.shuffle(max(1, len(files)), seed=seed, reshuffle_each_iteration=True)
        ds = names.interleave(
            open_one,
            cycle_length=max(1, min(cycle_length, len(files))),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        ds = ds.shuffle(max(1, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    else:
        ds = names.flat_map(open_one)
    parse = _parse(one_hot, _image_shape(split_info), int(info["num_classes"]))
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


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
            name = _tf_name(root.child(shard["file"]))
            n = 0
            try:
                ds = _opener([name])(tf.constant(name)).batch(1024)
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
