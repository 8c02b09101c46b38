"""The cost of holding the output (lock.hold): the sample dataset converted in one process with the
real lock, and with lock.hold replaced by a no-op, in alternating order; then lock.hold alone.

    .venv/bin/python benchmarks/lock_cost.py [--repeat 9]

Take the figures on a quiet machine: the difference is far below the run-to-run noise of a shared one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time

from imagenet_tfrecords import lock, tasks
from imagenet_tfrecords.convert import Options
from imagenet_tfrecords.sample import write_sample


class _Unlocked:
    run = "unlocked"

    def check(self) -> None:
        pass


@contextlib.contextmanager
def _no_lock(*args, **kwargs):
    yield _Unlocked()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=9, help="conversions of each kind")
    args = p.parse_args()
    real = lock.hold
    root = tempfile.mkdtemp(prefix="lock-cost-")
    try:
        data = os.path.join(root, "sample")
        write_sample(data)  # the `sample` command's dataset: 280 images
        times: dict[str, list[float]] = {"with the lock": [], "without": []}
        for i in range(args.repeat):
            for name in ("with the lock", "without") if i % 2 else ("without", "with the lock"):
                lock.hold = real if name == "with the lock" else _no_lock
                out = os.path.join(root, f"out-{i}-{name[0]}")
                started = time.perf_counter()
                tasks.convert_dataset(data, out, Options(), workers=2)
                times[name].append(time.perf_counter() - started)
                shutil.rmtree(out)
        lock.hold = real
        for name, ts in times.items():
            print(
                f"convert, {name}: median {statistics.median(ts) * 1000:.1f} ms, "
                f"min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f} ({len(ts)} runs)"
            )
        out = os.path.join(root, "bare")
        os.makedirs(out)
        n = 200
        started = time.perf_counter()
        for _ in range(n):
            with lock.hold(out) as writer:
                writer.check()
        print(f"lock.hold, check and release alone (local): {(time.perf_counter() - started) / n * 1e6:.0f} us")
    finally:
        lock.hold = real
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
