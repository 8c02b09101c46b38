"""The cost of the shards' SHA-256 (taken as the bytes are written, see convert.py): a dataset converted
in one process with it and with it replaced by a no-op, in alternating order; then SHA-256 alone, in
seconds per GB.

    .venv/bin/python benchmarks/checksum_cost.py [--repeat 5] [--data DIR]

bench.py runs ``measure`` on its dataset and reports the row "SHA-256 of shards".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
import types

from imagenet_tfrecords import convert, tasks
from imagenet_tfrecords.convert import Options
from imagenet_tfrecords.sample import write_sample


class _NoDigest:
    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 64


_WITHOUT = types.SimpleNamespace(sha256=lambda data=b"": _NoDigest())


def hash_seconds_per_gb(megabytes: int = 256) -> float:
    """SHA-256 of ``megabytes`` of data in 64 KB writes (as shards are written), in seconds per GB."""
    block = os.urandom(1 << 16)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(megabytes * 16):
        digest.update(block)
    return (time.perf_counter() - started) * 1024 / megabytes


def measure(data: str, repeat: int = 5, workers: int = 2) -> dict:
    """Convert ``data`` ``repeat`` times with the checksum and without it, in turn; median wall times,
    the shards' bytes, and SHA-256's own cost per GB."""
    root = tempfile.mkdtemp(prefix="checksum-cost-")
    times: dict[str, list[float]] = {"with": [], "without": []}
    shard_bytes = 0
    try:
        for i in range(repeat):
            for name in ("with", "without") if i % 2 else ("without", "with"):
                convert.hashlib = hashlib if name == "with" else _WITHOUT
                out = os.path.join(root, f"out-{i}-{name}")
                started = time.perf_counter()
                _, info = tasks.convert_dataset(data, out, Options(), workers=workers)
                times[name].append(time.perf_counter() - started)
                shard_bytes = sum(s["num_bytes"] for s in info["splits"].values())
                shutil.rmtree(out)
    finally:
        convert.hashlib = hashlib
        shutil.rmtree(root, ignore_errors=True)
    with_s, without_s = statistics.median(times["with"]), statistics.median(times["without"])
    per_gb = hash_seconds_per_gb()
    return {
        "runs": repeat,
        "workers": workers,
        "shard_bytes": shard_bytes,
        "convert_with_s": round(with_s, 3),
        "convert_without_s": round(without_s, 3),
        "ratio": round(with_s / without_s, 3),
        "sha256_s_per_gb": round(per_gb, 3),
        "sha256_share_of_convert": round(per_gb * shard_bytes / 2**30 / workers / with_s, 4),
    }


def line(r: dict) -> str:
    return (
        f"SHA-256 of shards: convert {r['convert_with_s']:.2f} s with, {r['convert_without_s']:.2f} s without "
        f"(x{r['ratio']:.3f}, median of {r['runs']}); SHA-256 alone {r['sha256_s_per_gb']:.2f} s/GB, "
        f"{r['sha256_share_of_convert']:.1%} of the conversion's CPU for {r['shard_bytes'] / 1e6:.0f} MB of shards"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="conversions of each kind")
    p.add_argument("--data", help="the dataset (default: the `sample` command's, 280 images)")
    args = p.parse_args()
    data = args.data
    scratch = None
    if not data:
        scratch = tempfile.mkdtemp(prefix="checksum-data-")
        data = os.path.join(scratch, "sample")
        write_sample(data)
    try:
        r = measure(data, args.repeat)
    finally:
        if scratch:
            shutil.rmtree(scratch)
    print(line(r))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
