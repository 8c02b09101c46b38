"""Range reads of tar archives against the GCS emulator (the one the tests start), for the archive
form's cost model: the latency of one small range read, the listing of a flat tar and of a tar of
tars from headers alone (rounds, requests, bytes, seconds), and reading members as byte ranges of
one object against reading them as separate objects.

    PYTHONPATH=src .venv/bin/python benchmarks/archive_ranges.py [--json benchmarks/results/archive.json]

The emulator is one Python process on 127.0.0.1 serving one request at a time: its figures are
the client's per-request cost plus the emulator's, not GCS's latency or bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imagenet_tfrecords.archive import RangeReader, list_nested, list_tar, read_sources  # noqa: E402
from imagenet_tfrecords.fs import Location  # noqa: E402
from imagenet_tfrecords.plan import Source  # noqa: E402
from tests.servers import gcs_emulator  # noqa: E402
from tests.tars import tar_of  # noqa: E402

RNG = np.random.default_rng(0)


def _timed(fn):
    started = time.perf_counter()
    got = fn()
    return got, time.perf_counter() - started


def _listing(reader: RangeReader, seconds: float, members: int) -> dict:
    return {
        "members": members,
        "rounds": reader.rounds,
        "requests": reader.requests,
        "bytes": reader.bytes,
        "seconds": round(seconds, 3),
        "ms_per_round": round(seconds / reader.rounds * 1e3, 2),
    }


def measure(bucket: str, fs) -> dict:
    out: dict = {}
    blob = RNG.bytes(1 << 20)
    fs.pipe(f"{bucket}/blob", blob)
    _, s = _timed(lambda: [fs.cat_file(f"{bucket}/blob", start=i * 512, end=i * 512 + 512) for i in range(200)])
    out["sequential_512B_read_ms"] = round(s / 200 * 1e3, 2)
    starts = [i * 512 for i in range(256)]
    _, s = _timed(lambda: fs.cat_ranges([f"{bucket}/blob"] * 256, starts, [x + 512 for x in starts]))
    out["batched_512B_reads_256_s"] = round(s, 3)

    val = {f"ILSVRC2012_val_{i:08d}.JPEG": RNG.bytes(int(RNG.integers(10_000, 30_000))) for i in range(1, 2001)}
    fs.pipe(f"{bucket}/val.tar", tar_of(val))
    loc = Location.of(f"gs://{bucket}/val.tar")
    for name, segment in (("flat_tar_one_walk", 0), ("flat_tar_1MiB_segments", 1 << 20)):
        reader = RangeReader(loc)
        got, s = _timed(lambda r=reader, g=segment: list_tar(loc, r, segment=g))
        out[name] = _listing(reader, s, len(got)) | {"archive_bytes": loc.size()}

    classes = {f"n{c:08d}.tar": tar_of({f"n{c:08d}_{i}.JPEG": RNG.bytes(2000) for i in range(100)}) for c in range(20)}
    fs.pipe(f"{bucket}/train.tar", tar_of(classes))
    loc = Location.of(f"gs://{bucket}/train.tar")
    reader = RangeReader(loc)
    (outer, inner), s = _timed(lambda: list_nested(loc, reader))
    out["tar_of_20_tars_of_100"] = _listing(reader, s, len(outer) + sum(map(len, inner.values())))

    # JPEG-like ends: the emulator drops an object's last byte when it is a newline
    images = {f"img_{i:04d}.JPEG": RNG.bytes(109_998) + b"\xff\xd9" for i in range(300)}
    fs.pipe(f"{bucket}/images.tar", tar_of(images))
    fs.pipe({f"{bucket}/images/{n}": d for n, d in images.items()})
    loc = Location.of(f"gs://{bucket}/images.tar")
    sources = [Source(m.name, 0, None, m.span) for m in list_tar(loc)]
    got, s = _timed(lambda: list(read_sources(loc, sources)))
    assert all(data == images[name] for name, data in got)
    mb = sum(map(len, images.values())) / 1e6
    out["read_300x110KB_as_ranges"] = {"seconds": round(s, 3), "MB_per_s": round(mb / s, 1)}
    got, s = _timed(lambda: list(Location.of(f"gs://{bucket}/images").read_many(sorted(images))))
    assert all(data == images[name] for name, data in got)
    out["read_300x110KB_as_objects"] = {"seconds": round(s, 3), "MB_per_s": round(mb / s, 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        server = gcs_emulator(Path(logs))
        try:
            os.environ |= {"STORAGE_EMULATOR_HOST": server.url, "FSSPEC_GS_TOKEN": "anon", "NO_GCE_CHECK": "true"}
            os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
            import gcsfs

            fs = gcsfs.GCSFileSystem(token="anon")
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            fs.mkdir(bucket)
            figures = measure(bucket, fs)
        finally:
            server.stop()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
