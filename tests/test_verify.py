"""`imagenet-tfrecords verify`: framing, CRC32C checksums and counts without TensorFlow; with --tf, parsing."""

import json
import struct
import subprocess
import sys

import pytest

from imagenet_tfrecords.recordio import parse_example
from imagenet_tfrecords.records import SCHEMA, encode_example, frame

from .conftest import run_cli

VAL = "val/val-00000-of-00001.tfrecord"
TRAIN = "train/train-00002-of-00006.tfrecord"


def _framing(data: bytes) -> list[tuple[int, int]]:
    """(offset, data length) of every record: 8-byte length, 4-byte CRC, data, 4-byte CRC."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, length))
        pos += 8 + 4 + length + 4
    assert pos == len(data)
    return out


def _verify(output, *flags):
    p = run_cli("verify", output, *flags, check=False)
    assert "function_node" not in p.stderr and "{{" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    return p


@pytest.mark.parametrize("flags", [(), ("--tf",)], ids=["default", "tf"])
def test_good_output_verifies(converted, flags):
    p = _verify(converted, *flags)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:3] == ["train,72", "val,30", "test,20"]
    checked = (
        "TensorFlow read and parsed every record" if flags else "framing, CRC32C checksums, indexes and counts match"
    )
    assert lines[3].startswith("ok: 8 shards, 122 records: ") and checked in lines[3], lines[3]


@pytest.mark.parametrize("flags", [(), ("--tf",)], ids=["default", "tf"])
def test_flipped_byte_names_the_shard_and_the_record(output, flags):
    shard = output / VAL
    data = bytearray(shard.read_bytes())
    offset, length = _framing(bytes(data))[17]
    data[offset + 12 + length // 2] ^= 0x01  # inside the pixels of record 17
    shard.write_bytes(bytes(data))
    p = _verify(output, *flags)
    assert p.returncode == 4
    assert f"{VAL}: record 17 at byte {offset}: data checksum (CRC32C) mismatch" in p.stderr, p.stderr
    assert "val: 17 records read, sizes.txt says 30" in p.stderr


def test_flipped_length_byte_stops_the_shard(output):
    shard = output / TRAIN
    data = bytearray(shard.read_bytes())
    offset, _ = _framing(bytes(data))[5]
    data[offset + 1] ^= 0x01
    shard.write_bytes(bytes(data))
    p = _verify(output)
    assert p.returncode == 4
    assert f"{TRAIN}: record 5 at byte {offset}: length checksum (CRC32C) mismatch" in p.stderr, p.stderr
    assert "train: 65 records read, sizes.txt says 72" in p.stderr


@pytest.mark.parametrize("cut", ["data", "header"])
def test_truncated_shard_names_the_shard_and_the_record(output, cut):
    shard = output / TRAIN
    data = shard.read_bytes()
    records = _framing(data)
    offset, length = records[7]
    shard.write_bytes(data[: offset + (12 + length // 3 if cut == "data" else 5)])
    p = _verify(output)
    assert p.returncode == 4
    assert f"{TRAIN}: ends inside record 7 at byte {offset} (truncated file" in p.stderr, p.stderr
    assert "train: 67 records read, sizes.txt says 72" in p.stderr  # 12 records per train shard: 5 lost


def test_truncated_shard_with_tf_names_the_record(output):
    shard = output / VAL
    data = shard.read_bytes()
    offset, length = _framing(data)[12]
    shard.write_bytes(data[: offset + 100])
    p = _verify(output, "--tf")
    assert p.returncode == 4
    assert f"{VAL}: ends inside record 12 at byte {offset} (truncated file" in p.stderr, p.stderr


def test_record_count_disagreeing_with_dataset_info(output):
    info = json.loads((output / "dataset_info.json").read_text())
    shard = next(s for s in info["splits"]["train"]["shards"] if s["file"] == TRAIN)
    shard["records"] += 1
    (output / "dataset_info.json").write_text(json.dumps(info))
    p = _verify(output)
    assert p.returncode == 4
    assert p.stderr.splitlines()[1:] == [f"{TRAIN}: 12 records, dataset_info.json says 13"], p.stderr


def test_record_of_the_wrong_size_is_reported_with_tf(output):
    """A well-framed record whose pixels or one-hot vector do not match its header fields."""
    shard = output / VAL
    data = shard.read_bytes()
    records = [data[o + 12 : o + 12 + n] for o, n in _framing(data)]
    ex = {k: v[0] for k, v in parse_example(records[3]).items() if k in SCHEMA}
    records[3] = encode_example(**{**ex, "image_raw": ex["image_raw"][:-3]})
    records[9] = encode_example(**{**ex, "label_one_hot": ex["label_one_hot"] + b"\0"})
    shard.write_bytes(b"".join(map(frame, records)))
    offsets = [sum(len(r) + 16 for r in records[:i]) for i in range(len(records))]  # and its index to match
    (output / (VAL + ".idx")).write_text("".join(f"{o} {len(records[i]) + 16}\n" for i, o in enumerate(offsets)))
    p = _verify(output)  # framing, CRC32Cs and index agree: the shard's size and the index's SHA-256 tell
    size = sum(len(r) + 16 for r in records)
    index = VAL.rsplit("/", 1)[-1] + ".idx"
    assert p.stderr.splitlines()[1:] == [
        f"{VAL}: index {index}: its content is not the one recorded (SHA-256 differs from dataset_info.json's)",
        f"{VAL}: {size} bytes, dataset_info.json says {len(data)}",
    ], p.stderr
    p = _verify(output, "--tf")
    assert p.returncode == 4
    assert p.stderr.splitlines()[1:] == [
        f"{VAL}: record 3: image_raw is not height*width*channel bytes",
        f"{VAL}: record 9: label_one_hot is not 6 bytes (one per class)",
    ], p.stderr


def test_record_that_is_not_an_example_is_reported_with_tf(output):
    shard = output / VAL
    data = shard.read_bytes()
    records = [data[o + 12 : o + 12 + n] for o, n in _framing(data)]
    records[11] = records[11][:-1]  # the last byte cut off: not a valid Example
    shard.write_bytes(b"".join(map(frame, records)))
    p = _verify(output, "--tf")
    assert p.returncode == 4
    assert p.stderr.splitlines()[1:] == [
        f"{VAL}: TensorFlow cannot parse records 0 to 29: not all are tf.train.Examples of the schema"
    ], p.stderr


def test_missing_shard(output):
    (output / TRAIN).unlink()
    p = _verify(output)
    assert p.returncode == 4
    assert f"{TRAIN}: file not found" in p.stderr


def test_folder_that_is_not_a_converted_output(sample_dir, output):
    p = _verify(sample_dir)
    assert p.returncode == 3
    assert p.stderr == f"error: {sample_dir}/dataset_info.json not found: {sample_dir} is not a converted output\n"
    (output / "sizes.txt").unlink()
    p = _verify(output)
    assert p.returncode == 3
    assert p.stderr == f"error: {output}/sizes.txt not found: {output} is not a converted output\n"


def test_default_verify_never_imports_tensorflow(converted):
    code = (
        "import sys\n"
        "from imagenet_tfrecords.reader import verify\n"
        f"assert verify({str(converted)!r}) == {{'train': 72, 'val': 30, 'test': 20}}\n"
        "from imagenet_tfrecords import cli\n"
        "assert cli.main(['verify', sys.argv[1]]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(converted)], capture_output=True, text=True, check=True)
    assert p.stdout.splitlines()[-1] == "[]", p.stdout + p.stderr
