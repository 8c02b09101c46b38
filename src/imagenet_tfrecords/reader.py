"""Read converted TFRecords back with TensorFlow: a tf.data reader and a full verification."""

from __future__ import annotations

import json
import os

from .fs import Location
from .plan import SPLITS
from .records import CorruptShard, feature_spec, iter_records, parse_index


def _tensorflow():
    """TensorFlow, imported without its C++ start-up lines (oneDNN, CPU features) unless asked for.

    The variables count only before the first import; a caller's own settings win.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its notice is an INFO line the level above lets through
    import tensorflow

    return tensorflow


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


def _tf_name(loc: Location) -> str:
    """How TensorFlow should open a file: a plain path when local, else the URL."""
    return loc.path if loc.is_local else loc.url


def _tf_can_open(url: str) -> bool:
    """Whether TensorFlow's own file systems handle this URL (local files, gs://)."""
    tf = _tensorflow()

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
    tf = _tensorflow()

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
    tf = _tensorflow()

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
    tf = _tensorflow()

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


def _count_records(loc: Location, sizes: list[int] | None = None) -> tuple[int, str | None]:
    """(records read, the problem that stopped reading or None): framing and CRC32C, no TensorFlow.

    The framed size of each record read is appended to ``sizes`` when given.
    """
    n = 0
    try:
        with open(loc.path, "rb") if loc.is_local else loc.fs.open(loc.path, "rb", block_size=8 << 20) as f:
            for record in iter_records(f):
                n += 1
                if sizes is not None:
                    sizes.append(len(record) + 16)
    except FileNotFoundError:
        return n, "file not found"
    except OSError as e:
        return n, f"cannot be read: {e.strerror or e}"
    except CorruptShard as e:
        return n, str(e)
    return n, None


def _index_problem(index: Location, sizes: list[int]) -> str | None:
    """What is wrong with a shard's index given the framed sizes of the shard's records, or None."""
    name = index.url.rsplit("/", 1)[-1]
    try:
        entries = parse_index(index.read_bytes().decode("ascii"))
    except FileNotFoundError:
        return f"index {name}: file not found"
    except OSError as e:
        return f"index {name}: cannot be read: {e.strerror or e}"
    except UnicodeDecodeError:
        return f"index {name}: not a text file of 'offset length' lines"
    except ValueError as e:
        return f"index {name}: {e}"
    offset = 0
    for n, size in enumerate(sizes):
        if n >= len(entries):
            return f"index {name}: {len(entries)} lines, the shard has {len(sizes)} records"
        if entries[n] != (offset, size):
            got = "{} {}".format(*entries[n])
            return f"index {name}: line {n + 1} is '{got}', record {n} is at byte {offset}, {size} bytes"
        offset += size
    if len(entries) > len(sizes):
        return f"index {name}: {len(entries)} lines, the shard has {len(sizes)} records"
    return None


def _parse_with_tf(loc: Location, num_classes: int) -> tuple[int, list[str]]:
    """Read one shard with tf.data and parse every record with tf.io.parse_example; plain-word problems."""
    tf = _tensorflow()

    name = _tf_name(loc)
    n, problems = 0, []
    try:
        for batch in _opener([name])(tf.constant(name)).batch(1024):
            ex = tf.io.parse_example(batch, feature_spec())
            pixels = tf.cast(ex["height"] * ex["width"] * ex["channel"], tf.int32)
            for i in tf.where(tf.strings.length(ex["image_raw"]) != pixels)[:, 0].numpy():
                problems.append(f"record {n + i}: image_raw is not height*width*channel bytes")
            for i in tf.where(tf.strings.length(ex["label_one_hot"]) != num_classes)[:, 0].numpy():
                problems.append(f"record {n + i}: label_one_hot is not {num_classes} bytes (one per class)")
            n += int(tf.shape(batch)[0])
    except (tf.errors.OpError, UnicodeDecodeError):  # (its text may hold a record's bytes)
        counted, problem = _count_records(loc)  # TensorFlow's text names its ops; this names the record
        batch = f"records {n} to {min(n + 1023, counted - 1)}"
        return counted, [problem or f"TensorFlow cannot parse {batch}: not all are tf.train.Examples of the schema"]
    return n, problems


def verify(output_url: str, *, use_tf: bool = False) -> dict:
    """Check every shard of a conversion against sizes.txt and dataset_info.json.

    By default without TensorFlow: the TFRecord framing and both CRC32C checksums of every record,
    each shard's index (``<shard file>.idx``: one line per record with its offset and framed size)
    and the record counts, per shard against dataset_info.json and per split against sizes.txt and
    dataset_info.json. With ``use_tf`` TensorFlow reads and parses every record (tf.data,
    tf.io.parse_example) and the image and one-hot sizes are checked too.

    Returns records per split; raises VerificationError listing every mismatch, each naming the
    shard and, where known, the record (numbered from 0); FileNotFoundError when ``output_url`` is
    not a converted output.
    """
    out = Location.of(output_url)
    info, root = dataset_info(output_url)
    if not out.child("sizes.txt").exists():
        raise FileNotFoundError(f"{out.child('sizes.txt').url}: not found; is {out.url} a converted output?")
    sizes = dict(line.split(",", 1) for line in out.child("sizes.txt").read_text().splitlines() if line.strip())
    problems = []
    counted = {}
    for split in SPLITS:
        total = 0
        for shard in info["splits"][split]["shards"]:
            loc = root.child(shard["file"])
            if use_tf:
                n, found = _parse_with_tf(loc, int(info["num_classes"]))
            else:
                framed: list[int] = []
                n, problem = _count_records(loc, framed)
                found = [problem] if problem else []
                if not problem and "index" in shard:  # (outputs converted before indexes existed have none)
                    index_problem = _index_problem(root.child(shard["index"]), framed)
                    problems += [f"{shard['file']}: {index_problem}"] if index_problem else []
            problems += [f"{shard['file']}: {p}" for p in found]
            if n != shard["records"] and not found:
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
