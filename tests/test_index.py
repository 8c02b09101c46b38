"""The index beside every shard (`<shard file>.idx`), checked against the PyPI `tfrecord` package
(its torch-free reader and `create_index`, the same format as DALI's tfrecord2idx) and TensorFlow.

The tfrecord package is used in a child process only: its example_pb2 registers tensorflow.Example
in protobuf's default pool, as TensorFlow does, and whichever is imported second fails ("duplicate
symbol 'tensorflow.BytesList'"), so importing it here would break TensorFlow for the whole session.
"""

import hashlib
import importlib.util
import json
import subprocess
import sys

import pytest

from .conftest import read_records, run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tfrecord") is None, reason="the tfrecord package is not installed (dev extra)"
)

VAL = "val/val-00000-of-00001.tfrecord"
TRAIN = "train/train-00002-of-00006.tfrecord"
DESCRIPTION = {"label": "int", "height": "int", "width": "int", "channel": "int", "image_raw": "byte"}
_TFRECORD = """
import hashlib, json, sys
sys.modules["torch"] = None  # tfrecord imports its torch parts when torch is installed ([torch] extra): block them
from tfrecord.reader import tfrecord_loader
from tfrecord.tools.tfrecord2idx import create_index

calls, description = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = []
for fn, args in calls:
    if fn == "create_index":
        out.append(create_index(*args))
        continue
    path, index, parts = args  # tfrecord_loader over shard=(i, parts), i = 0..parts-1: every record
    records = [r for i in range(parts) for r in tfrecord_loader(path, index, description, shard=(i, parts))]
    ints = [k for k, v in description.items() if v == "int"]
    out.append(
        [{**{k: int(r[k][0]) for k in ints}, "image_raw": hashlib.sha256(r["image_raw"]).hexdigest(),
          "image_raw_bytes": len(r["image_raw"])} for r in records]
    )
print(json.dumps(out))
assert "tensorflow" not in sys.modules and sys.modules["torch"] is None
"""


def _tfrecord(calls: list) -> list:
    """Results of the tfrecord package's create_index(...) or ("load", [path, index, parts]) calls."""
    args = [sys.executable, "-c", _TFRECORD, json.dumps(calls), json.dumps(DESCRIPTION)]
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


def _shards(out) -> list[dict]:
    info = json.loads((out / "dataset_info.json").read_text())
    return [s for split in info["splits"].values() for s in split["shards"]]


def _index(path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split(" "))) for line in path.read_text().splitlines()]


def _stamps(out) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every shard and index: a rewritten file gets new ones (a rename into place)."""
    files = [*out.rglob("*.tfrecord"), *out.rglob("*.tfrecord.idx")]
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


def test_every_shard_has_the_index_create_index_writes(converted, tmp_path):
    shards = _shards(converted)
    assert len(shards) == 8
    made = [tmp_path / f"theirs-{i}.idx" for i in range(len(shards))]
    _tfrecord([("create_index", [str(converted / s["file"]), str(t)]) for s, t in zip(shards, made, strict=True)])
    for shard, theirs in zip(shards, made, strict=True):
        assert shard["index"] == shard["file"] + ".idx"  # dataset_info.json names it
        ours = (converted / shard["index"]).read_bytes()
        assert ours == theirs.read_bytes(), shard["file"]
        assert len(ours.splitlines()) == shard["records"] > 1


@pytest.mark.parametrize("parts", [1, 3])
def test_the_tfrecord_package_reads_every_record_through_our_index(converted, parts):
    """tfrecord_loader seeks to the offsets of our index (shard=(i, parts) starts mid-file)."""
    shards = _shards(converted)
    loaded = _tfrecord([("load", [str(converted / s["file"]), str(converted / s["index"]), parts]) for s in shards])
    for shard, got in zip(shards, loaded, strict=True):
        want = read_records(converted / shard["file"])  # TensorFlow's reader and parser
        assert len(got) == len(want) == shard["records"], shard["file"]
        for g, w in zip(got, want, strict=True):
            assert g["label"] == int(w["label"]), shard["file"]
            assert g["image_raw_bytes"] == len(w["image_raw"]) == w["height"] * w["width"] * w["channel"]
            assert g["image_raw"] == hashlib.sha256(w["image_raw"]).hexdigest()


def test_a_byte_range_read_by_the_index_is_records_tensorflow_parses(converted, tmp_path):
    path = converted / VAL
    entries = _index(converted / (VAL + ".idx"))
    first, last = 5, 11
    start, end = entries[first][0], entries[last][0] + entries[last][1]
    with open(path, "rb") as f:
        f.seek(start)
        piece = f.read(end - start)
    (tmp_path / "range.tfrecord").write_bytes(piece)
    got = read_records(tmp_path / "range.tfrecord")
    want = read_records(path)[first : last + 1]
    assert len(got) == last + 1 - first
    for g, w in zip(got, want, strict=True):
        assert {k: bytes(v) if isinstance(v, bytes) else int(v) for k, v in g.items()} == {
            k: bytes(v) if isinstance(v, bytes) else int(v) for k, v in w.items()
        }


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_rerun_converts_again_the_shard_whose_index_is_damaged_and_only_it(sample_dir, output, damage):
    index = output / (TRAIN + ".idx")
    good = index.read_bytes()
    if damage == "deleted":
        index.unlink()
    else:
        index.write_bytes(good[: len(good) // 2])
    before = _stamps(output)
    p = run_cli("convert", "--data", sample_dir, "--output", output, "--workers", "2", "--train-order", "per-class")
    after = _stamps(output)
    changed = sorted(name for name in after if after[name] != before.get(name))
    assert changed == [TRAIN, TRAIN + ".idx"], p.stdout
    assert index.read_bytes() == good
    assert run_cli("verify", output).returncode == 0


def _verify(output):
    p = run_cli("verify", output, check=False)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_verify_names_the_shard_and_line_of_a_wrong_index_entry(output):
    index = output / (VAL + ".idx")
    entries = _index(index)
    offset, size = entries[3]
    entries[3] = (offset + 1, size)
    index.write_text("".join(f"{o} {n}\n" for o, n in entries))
    p = _verify(output)
    assert p.returncode == 4
    assert p.stderr.splitlines()[1:] == [
        f"{VAL}: index val-00000-of-00001.tfrecord.idx: line 4 is '{offset + 1} {size}', "
        f"record 3 is at byte {offset}, {size} bytes"
    ], p.stderr


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("missing line", "29 lines, the shard has 30 records"),
        ("extra line", "31 lines, the shard has 30 records"),
        ("not numbers", "line 1 is 'zero {size}', not 'offset length'"),
        ("deleted", "file not found"),
    ],
)
def test_verify_reports_a_damaged_index(output, damage, problem):
    index = output / (VAL + ".idx")
    lines = index.read_text().splitlines(keepends=True)
    problem = problem.format(size=lines[0].split()[1])
    if damage == "missing line":
        index.write_text("".join(lines[:-1]))
    elif damage == "extra line":
        index.write_text("".join(lines) + "0 1\n")
    elif damage == "not numbers":
        index.write_text("zero" + "".join(lines)[1:])
    else:
        index.unlink()
    p = _verify(output)
    assert p.returncode == 4
    assert p.stderr.splitlines()[1:] == [f"{VAL}: index val-00000-of-00001.tfrecord.idx: {problem}"], p.stderr
