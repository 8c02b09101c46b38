"""The decode-only bound: read and decode every JPEG of a dataset on every core, write nothing.

simplejpeg (libjpeg-turbo) is the fastest JPEG decoder available here. A pool of forked
processes takes the files in chunks; each file is read and decoded to RGB, and the pixels
are dropped. No converter can be faster than this on the same files and cores.

Usage: python benchmarks/decode_bound.py DATA_DIR [WORKERS]   (0 or absent: every CPU)
Prints one JSON line: {"images": N, "seconds": time after start-up, "workers": W}.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import sys
import time

import simplejpeg

CHUNK = 256


def _decode(paths: list[str]) -> int:
    for path in paths:
        with open(path, "rb") as f:
            simplejpeg.decode_jpeg(f.read(), colorspace="RGB")
    return len(paths)


def main(data: str, workers: int = 0) -> int:
    started = time.perf_counter()
    workers = workers or len(os.sched_getaffinity(0))
    patterns = ("train/*/images/*", "val/images/*", "test/images/*")
    paths = sorted(p for pattern in patterns for p in glob.glob(os.path.join(data, pattern)))
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        count = sum(pool.imap_unordered(_decode, chunks))
    print(json.dumps({"images": count, "seconds": time.perf_counter() - started, "workers": workers}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
