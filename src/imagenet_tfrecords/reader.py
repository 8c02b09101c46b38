"""Read converted TFRecords back with TensorFlow: a tf.data reader and a full verification."""

from __future__ import annotations

import hashlib
import json
import os
import re

from . import formats
from .credentials import check_access
from .fs import Location, MissingPackageError, install_command, outside_root
from .image import fixed_size
from .output import check_complete
from .plan import SLICES_DIR, SPLITS, Shard
from .recordio import CorruptShard, Hashing, iter_records, parse_example, parse_index
from .records import feature_spec
from .stats import INFO_FILE, read_info


def tensorflow():
    """TensorFlow, imported without its C++ start-up lines (oneDNN, CPU features) unless asked for;
    MissingPackageError saying what to install when it is not installed.

    The variables count only before the first import; a caller's own settings win.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its notice is an INFO line the level above lets through
    try:
        import tensorflow
    except ImportError as e:
        raise MissingPackageError(
            f"reading the records with tf.data needs TensorFlow ({e}): {install_command('tf')} (or read them "
            f"without TensorFlow: imagenet_tfrecords.torch, {install_command('torch')})"
        ) from None
    return tensorflow


NOT_RECORDED = "its content is not the one recorded (SHA-256 differs from dataset_info.json's)"


class VerificationError(RuntimeError):
    """The output does not match what its reports say."""


def _artifact_dir(source) -> Location | None:
    """The directory of a kfp Dataset artifact (anything with .path/.uri), or None."""
    if not (hasattr(source, "path") and hasattr(source, "uri")):
        return None
    for candidate in (source.path, source.uri):
        if candidate and read_info(Location.of(candidate)) is not None:
            return Location.of(candidate)
    raise FileNotFoundError(
        f"the Dataset artifact has no dataset_info.json (looked under path {source.path!r} and uri {source.uri!r}); "
        "pass the output of the aggregate-stats step or the conversion pipeline's 'dataset' output"
    )


def dataset_info(source, allow_rejected: bool = False) -> tuple[dict, Location]:
    """(dataset_info, root of the shards) for an output URL or a kfp Dataset artifact.

    An output URL is its own root, so a converted folder that was moved or copied still reads.
    An artifact holds only the reports; the shards are under the "root" its dataset_info.json
    records (the pipeline's output_url), or the "root" in the artifact's metadata.

    Raises output.IncompleteOutput when a conversion started changing the root and did not finish,
    and output.RejectedOutput when it ended with more inputs rejected than it allowed (unless
    ``allow_rejected``).
    """
    if not (hasattr(source, "path") and hasattr(source, "uri")):
        check_access(str(source))
    artifact = _artifact_dir(source)
    if artifact is not None:
        info = read_info(artifact)
        root = info.get("root") or (getattr(source, "metadata", None) or {}).get("root") or artifact.url
        check_complete(root, allow_rejected)
        return info, Location.of(root)
    loc = Location.of(str(source))
    check_complete(loc.url, allow_rejected)
    info = read_info(loc)
    if info is None:
        info_file = loc.child("dataset_info.json")
        raise FileNotFoundError(f"{info_file.url}: not found; is {loc.url} the output of a finished conversion?")
    return info, loc


def _split_info(info: dict, split: str) -> dict:
    if split not in info["splits"]:
        raise ValueError(f"no split {split!r} in dataset_info.json; the dataset has {sorted(info['splits'])}")
    return info["splits"][split]


def _tf_name(loc: Location) -> str:
    """How TensorFlow should open a file: a plain path when local, else the URL."""
    return loc.path if loc.is_local else loc.url


def _tf_can_open(url: str) -> bool:
    """Whether TensorFlow's own file systems handle this URL (local files, gs://)."""
    tf = tensorflow()

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
    streamed through fsspec and unframed by recordio.iter_records (CRCs checked).
    """
    tf = tensorflow()

    if all(_tf_can_open(f) for f in files):
        return tf.data.TFRecordDataset

    def open_one(name):
        return tf.data.Dataset.from_generator(
            _fsspec_records, args=(name,), output_signature=tf.TensorSpec([], tf.string)
        )

    return open_one


def _image_shape(split: dict, resize: dict | None = None) -> list:
    """[H, W, 3] when every image of the split has one size (the resize's, else per dataset_info.json's
    shapes), else [None, None, 3]."""
    fixed = fixed_size(resize)
    if fixed:
        return [*fixed, 3]
    shapes = [s for s, n in split.get("shapes", {}).items() if n]
    if len(shapes) == 1:
        h, w = (int(v) for v in shapes[0].split("x"))
        return [h, w, 3]
    return [None, None, 3]


def _parse(one_hot: bool, image_shape: list, num_classes: int, fmt: str = formats.SEED, label_offset: int = 0):
    if fmt != formats.SEED:
        return _parse_jpeg(fmt, one_hot, image_shape, num_classes + label_offset)
    tf = tensorflow()

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


def _jpeg_spec(fmt: str) -> dict:
    """The parse spec of the image and label of a JPEG format's records (imports TensorFlow)."""
    tf = tensorflow()

    image_key, label_key, _ = formats.keys(fmt)
    return {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}


def _parse_jpeg(fmt: str, one_hot: bool, image_shape: list, depth: int):
    """Parse a tf-models or tfds record and decode its JPEG in the graph; a one-hot label has ``depth``
    entries (the classes, plus the label offset of tf-models) and is all zero for -1."""
    tf = tensorflow()

    image_key, label_key, _ = formats.keys(fmt)
    spec = _jpeg_spec(fmt)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_jpeg(ex[image_key], channels=3, dct_method="INTEGER_ACCURATE")
        image = tf.ensure_shape(image, image_shape)
        if one_hot:
            return image, tf.one_hot(ex[label_key], depth, dtype=tf.uint8)
        return image, ex[label_key]

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
    allow_rejected: bool = False,
):
    """A tf.data.Dataset of (image, label) for one split of a converted dataset.

    ``source`` is the output URL of a conversion (a local path, gs://, s3://, ...) or the
    pipeline's ``dataset`` artifact (an ``Input[Dataset]``). ``image`` is uint8 [H, W, 3]
    (the static shape is set when every image of the split has the same size, as after
    ``--resize``); ``label``
    is int64 as stored, -1 for the test split. With ``one_hot=True`` the label is the one-hot
    vector instead: uint8 [num_classes] (plus the label offset of tf-models), all zero for the
    test split. Every format reads: seed's pixels are reshaped, the JPEGs of tf-models and tfds
    are decoded in the tf.data graph.

    Every record appears exactly once per pass. With ``shuffle`` (the default; train shards may also
    hold one class each, ``--train-order per-class``) the shard order is shuffled on every pass,
    ``cycle_length`` shards are read interleaved record by record and the records go through a
    shuffle buffer of ``shuffle_buffer``. ``seed`` makes the order reproducible. With
    ``shuffle=False`` shards are read one after the other in file order (val/test order).

    The dataset is neither batched nor repeated: add ``.batch(n)`` and ``.prefetch``.

    An output whose conversion ended with more inputs rejected than its ``--max-reject-fraction``
    allowed is marked rejected and refused (output.RejectedOutput, naming the fraction) unless
    ``allow_rejected=True``.
    """
    tf = tensorflow()

    info, root = dataset_info(source, allow_rejected)
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
    offset = int(info.get("options", {}).get("label_offset", 0))
    shape = _image_shape(split_info, info.get("resize"))
    parse = _parse(one_hot, shape, int(info["num_classes"]), formats.of_info(info), offset)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def _count_records(
    loc: Location, sizes: list[int] | None = None, check=None, digest: list[str] | None = None
) -> tuple[int, str | None]:
    """(records read, the problem that stopped reading or None): framing and CRC32C, no TensorFlow.

    The framed size of each record read is appended to ``sizes`` when given; ``check(number, record)``
    is called with each record when given; the SHA-256 of the bytes read is appended to ``digest`` when
    given.
    """
    n = 0
    try:
        with open(loc.path, "rb") if loc.is_local else loc.fs.open(loc.path, "rb", block_size=8 << 20) as raw:
            f = Hashing(raw)
            for record in iter_records(f):
                if check is not None:
                    check(n, record)
                n += 1
                if sizes is not None:
                    sizes.append(len(record) + 16)
            if digest is not None:
                digest.append(f.hexdigest())
    except FileNotFoundError:
        return n, "file not found"
    except OSError as e:
        return n, f"cannot be read: {e.strerror or e}"
    except CorruptShard as e:
        return n, str(e)
    return n, None


def _index_problem(index: Location, sizes: list[int], sha256: str | None = None) -> str | None:
    """What is wrong with a shard's index given the framed sizes of the shard's records (and its
    recorded SHA-256, when there is one), or None."""
    name = index.url.rsplit("/", 1)[-1]
    try:
        data = index.read_bytes()
        entries = parse_index(data.decode("ascii"))
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
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        return f"index {name}: {NOT_RECORDED}"
    return None


def _parse_with_tf(
    loc: Location, num_classes: int, fmt: str = formats.SEED, resize: dict | None = None
) -> tuple[int, list[str]]:
    """Read one shard with tf.data and parse every record with tf.io.parse_example; plain-word problems.
    With ``resize`` (dataset_info.json's) every image's size is checked against it."""
    tf = tensorflow()

    name = _tf_name(loc)
    n, problems = 0, []
    try:
        for batch in _opener([name])(tf.constant(name)).batch(1024):
            if fmt != formats.SEED:
                encoded = tf.io.parse_example(batch, _jpeg_spec(fmt))[formats.keys(fmt)[0]]
                problems += _jpeg_problems(encoded, n, resize)
                n += int(tf.shape(batch)[0])
                continue
            ex = tf.io.parse_example(batch, feature_spec())
            if resize:
                sizes = zip(ex["height"].numpy().tolist(), ex["width"].numpy().tolist(), strict=True)
                problems += _size_problems(resize, sizes, n)
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


def _jpeg_problems(encoded, first: int, resize: dict | None = None) -> list[str]:
    """The records of a batch (numbered from ``first``) whose image TensorFlow cannot decode as a JPEG,
    or, with ``resize``, decodes to another size than the resize made."""
    tf = tensorflow()

    problems, sizes = [], []
    for i, data in enumerate(encoded):
        try:
            sizes.append(tuple(tf.io.decode_jpeg(data, channels=3).shape[:2]))
        except tf.errors.InvalidArgumentError:
            problems.append(f"record {first + i}: the image does not decode as a JPEG")
            sizes.append(None)
    return problems + (_size_problems(resize, sizes, first) if resize else [])


def _size_problems(resize: dict, sizes, first: int) -> list[str]:
    """The records (numbered from ``first``) whose (height, width) in ``sizes`` (None: not known) the
    resize did not make."""
    found = ((i, formats.size_problem(resize, *hw)) for i, hw in enumerate(sizes) if hw is not None)
    return [f"record {first + i}: {p}" for i, p in found if p]


def _tfds_problems(out: Location, info: dict) -> list[str]:
    """Where TFDS's dataset_info.json of a tfds-format output disagrees with the shards' counts."""
    tfds_info = json.loads(out.child(INFO_FILE).read_text()) if out.child(INFO_FILE).exists() else {}
    listed = {s["name"]: [int(n) for n in s.get("shardLengths", [])] for s in tfds_info.get("splits", [])}
    problems = []
    for split, s in info["splits"].items():
        lengths = [shard["records"] for shard in s["shards"]]
        if lengths and listed.get(split) != lengths:
            got = listed.get(split)
            problems.append(f"{INFO_FILE} (TFDS's): split {split} lists shard lengths {got}, not {lengths}")
    return problems


def _unlisted_files(root: Location, info: dict) -> list[str]:
    """Shard-like files present that dataset_info.json does not list: every file in the split
    folders, and files named ``*.tfrecord*`` in the root (hidden files aside: no glob reads them)."""
    listed = {f for s in info["splits"].values() for shard in s["shards"] for f in (shard["file"], shard.get("index"))}
    present = [e.name for e in root.list_dir() if e.kind == "file" and ".tfrecord" in e.name]
    for split in SPLITS:
        folder = root.child(split)
        present += [f"{split}/{name}" for name in _files_below(folder)] if folder.isdir() else []
    return sorted(f for f in present if f not in listed and not f.rsplit("/", 1)[-1].startswith("."))


def _files_below(folder: Location) -> list[str]:
    out = []
    for e in folder.list_dir():
        out += [f"{e.name}/{name}" for name in _files_below(folder.child(e.name))] if e.kind == "dir" else [e.name]
    return out


def _outside(root: Location, rel) -> bool:
    """Whether a file name dataset_info.json gives is not a path inside the output: not a string, absolute,
    going up (``..``), holding a NUL, or (local) reached through a link leaving the output."""
    parts = rel.split("/") if isinstance(rel, str) else []
    if not parts or "\x00" in rel or "" in parts or ".." in parts or "." in parts:
        return True
    return root.is_local and outside_root(root.child(rel).path, root.path) is not None


def _planned_inputs(out: Location, info: dict, fmt: str) -> dict[str, frozenset[str]]:
    """Per shard file, the inputs (paths under the dataset root) its plan converts, from the plan's
    slices under ``_work/plan/``; empty when they are not there (or cannot be read: an output copied
    without ``_work/``, or made before slices existed)."""
    folder = out.child(SLICES_DIR)
    planned: dict[str, frozenset[str]] = {}
    try:
        names = [e.name for e in folder.list_dir() if re.fullmatch(r"task-\d{5}\.jsonl", e.name)]
        for name in names:
            for line in folder.child(name).read_text().splitlines():
                shard = Shard.from_json(json.loads(line)["shard"])
                inputs = frozenset(f"{shard.dir}/{s.name}" for s in shard.sources or () if s.reason is None)
                planned[formats.shard_file(shard, fmt, info.get("source", ""))] = inputs
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return planned


def _name_check(fmt: str, inputs: frozenset[str], odd: list[tuple[int, str]]):
    """A check for _count_records: each record's file name against the inputs its shard was planned
    from; (record number, name) of those that are not one of them are appended to ``odd``."""
    key = formats.keys(fmt)[2]

    def check(n: int, record: bytes) -> None:
        try:
            name = parse_example(record)[key][0].decode(errors="replace")
        except (KeyError, IndexError, ValueError):
            name = ""
        if name not in inputs:
            odd.append((n, name))

    return check


def _both(*checks):
    checks = [c for c in checks if c is not None]
    if not checks:
        return None

    def check(n: int, record: bytes) -> None:
        for c in checks:
            c(n, record)

    return check


def _size_check(fmt: str, resize: dict, problems: list[str]):
    """A check for _count_records: each record's image size (formats.record_size, from the record and
    the JPEG header, no decoding) against dataset_info.json's resize; problems are appended."""

    def check(n: int, record: bytes) -> None:
        try:
            problem = formats.size_problem(resize, *formats.record_size(fmt, record))
        except (KeyError, IndexError, ValueError) as e:
            problem = f"no image size: {e}"
        if problem:
            problems.append(f"record {n}: {problem}")

    return check


def verify(output_url: str, *, use_tf: bool = False) -> dict:
    """Check every shard of a conversion against sizes.txt and dataset_info.json.

    By default without TensorFlow: the TFRecord framing and both CRC32C checksums of every record,
    each shard's index (``<shard file>.idx``: one line per record with its offset and framed size)
    and the record counts, per shard against dataset_info.json and per split against sizes.txt and
    dataset_info.json (conversion_info.json in the tfds format, whose TFDS dataset_info.json must list
    the same shard lengths); each shard's size in bytes, and that no file is present that
    dataset_info.json does not list (a ``*.tfrecord`` glob would read it). With ``use_tf``
    TensorFlow reads and parses every record (tf.data, tf.io.parse_example) and checks the image
    and one-hot sizes (seed) or decodes every JPEG (tf-models, tfds). Each shard's and index's
    SHA-256, when dataset_info.json records them, must be the recorded ones (a shard copied over
    another of the same size is found), and every record's file name must be one of the inputs its
    shard was planned from (the plan's slices under ``_work/plan/``, when the output holds them). A
    file name dataset_info.json gives outside the output
    (``..``, an absolute path, a link leaving it) is a problem, never opened. When dataset_info.json
    records a resize, every record's image size is checked against it (from the record and the JPEG
    header; with ``use_tf`` from the decoded image).

    Returns records per split; raises VerificationError listing every mismatch, each naming the
    shard and, where known, the record (numbered from 0); FileNotFoundError when ``output_url`` is
    not a converted output; output.IncompleteOutput when a conversion did not finish it.
    """
    out = Location.of(output_url)
    info, root = dataset_info(output_url)
    if not out.child("sizes.txt").exists():
        raise FileNotFoundError(f"{out.child('sizes.txt').url}: not found; is {out.url} a converted output?")
    sizes = dict(line.split(",", 1) for line in out.child("sizes.txt").read_text().splitlines() if line.strip())
    fmt = formats.of_info(info)
    problems = _tfds_problems(out, info) if fmt == formats.TFDS else []
    problems += [f"{f}: a file dataset_info.json does not list" for f in _unlisted_files(root, info)]
    planned = _planned_inputs(root, info, fmt)
    counted = {}
    for split in SPLITS:
        total = 0
        for shard in info["splits"][split]["shards"]:
            named = [shard.get("file"), *([shard["index"]] if "index" in shard else [])]
            if away := [rel for rel in named if _outside(root, rel)]:
                problems += [f"{rel!r}: named in dataset_info.json, outside the output; not opened" for rel in away]
                continue
            loc = root.child(shard["file"])
            digest: list[str] = []
            odd: list[tuple[int, str]] = []
            names = _name_check(fmt, planned[shard["file"]], odd) if shard["file"] in planned else None
            if use_tf:
                n, found = _parse_with_tf(loc, int(info["num_classes"]), fmt, info.get("resize"))
                if not found and (shard.get("sha256") or names):
                    _count_records(loc, check=names, digest=digest)
            else:
                framed: list[int] = []
                sized: list[str] = []
                check = _size_check(fmt, info["resize"], sized) if info.get("resize") else None
                n, problem = _count_records(loc, framed, _both(check, names), digest)
                found = sized + ([problem] if problem else [])
                if not problem and "index" in shard:  # (outputs converted before indexes existed have none)
                    index_problem = _index_problem(root.child(shard["index"]), framed, shard.get("index_sha256"))
                    problems += [f"{shard['file']}: {index_problem}"] if index_problem else []
            problems += [f"{shard['file']}: {p}" for p in found]
            if n != shard["records"] and not found:
                problems.append(f"{shard['file']}: {n} records, dataset_info.json says {shard['records']}")
            elif not found and "bytes" in shard and (size := loc.size()) != shard["bytes"]:
                problems.append(f"{shard['file']}: {size} bytes, dataset_info.json says {shard['bytes']}")
            elif not found and shard.get("sha256") and digest and digest[0] != shard["sha256"]:
                problems.append(f"{shard['file']}: {NOT_RECORDED}")
            if odd and not found:
                first, name = odd[0]
                problems.append(
                    f"{shard['file']}: {len(odd)} of {n} records are not of this shard's planned inputs (record "
                    f"{first}: {name!r}, see {SLICES_DIR}/)"
                )
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
