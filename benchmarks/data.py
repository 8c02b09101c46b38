"""The benchmark's data sets (generated once under build/bench-data/<name>, reused) and where it works.

Also the one place that knows the shape of the converter's plan (``shard_jobs``), so that the
benchmark follows a change of ``layout.build_plan`` / ``convert.Job.of`` in a few lines.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "build" / "bench-data"
OUT = ROOT / "build" / "bench-out"  # every output; deleted after each measurement and at the end

SIZES = {
    "full": {"classes": 200, "train_per_class": 500, "val": 10_000, "test": 10_000},
    "small": {"classes": 20, "train_per_class": 100, "val": 1_000, "test": 1_000},
}
LARGE = {"images": 4000, "classes": 4, "height": 350, "width": 400}  # 4 train shards: 2 a worker on 2 cores


def _cached(path: Path, spec: dict) -> bool:
    """Whether ``path`` holds a complete data set made from ``spec``; if not, clear it."""
    stamp = path / ".bench-complete"
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return True
    shutil.rmtree(path, ignore_errors=True)
    return False


def dataset(name: str, **counts) -> Path:
    """A TinyImageNet-layout sample under build/bench-data/<name>, generated once."""
    from imagenet_tfrecords.sample import write_sample

    path = DATA / name
    if _cached(path, counts):
        return path
    started = time.perf_counter()
    print(f"generating {name} dataset {counts} ...", flush=True)
    write_sample(str(path), **counts)
    (path / ".bench-complete").write_text(json.dumps(counts))
    print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def large_dataset(images: int = LARGE["images"]) -> Path:
    """A few classes of ~110 KB 400x350 JPEGs, about the average full ImageNet image (train only); ``images``
    of them (the same first ones whatever the count)."""
    import numpy as np
    import simplejpeg

    from imagenet_tfrecords.sample import write_sample

    spec = LARGE | {"images": images}
    path = DATA / ("large-400x350" if images == LARGE["images"] else f"large-400x350-{images}")
    if _cached(path, spec):
        return path
    write_sample(str(path), classes=LARGE["classes"], train_per_class=0, val=0, test=0)
    wnids = (path / "wnids.txt").read_text().split()
    rng = np.random.default_rng(1)
    for i in range(images):
        wnid = wnids[i % len(wnids)]
        jpeg = simplejpeg.encode_jpeg(_photo_like(rng), quality=90, colorspace="RGB")
        (path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG").write_bytes(jpeg)
    (path / ".bench-complete").write_text(json.dumps(spec))
    return path


def _photo_like(rng):
    """Blocks of colour, a stripe pattern and noise: about 110 KB at quality 90, like a photo."""
    import numpy as np

    h, w = LARGE["height"], LARGE["width"]
    yy, xx = np.mgrid[0:h, 0:w]
    low = rng.integers(0, 256, size=(h // 25 + 1, w // 25 + 1, 3)).astype(np.float32)
    base = np.kron(low, np.ones((25, 25, 1), np.float32))[:h, :w]
    stripes = np.sin(xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.05, 0.2)) * 30
    noise = rng.normal(0, rng.uniform(8, 12), size=(h, w, 3))
    return np.clip(base + stripes[..., None] + noise, 0, 255).astype(np.uint8)


def count_images(data: Path) -> int:
    return sum(len(files) for d, _, files in os.walk(data) if d.endswith("images"))


def train_files(data: Path) -> list[Path]:
    return sorted((data / "train").glob("*/images/*"))


# The converter's plan: the only code here that knows its shape (the Plan of imagenet_tfrecords.plan).


def shard_jobs(data: Path, out: Path, **options) -> list[tuple]:
    """``(job, shard_id, shard_text)`` for every shard the converter plans for ``data``, written under ``out``:
    the arguments of ``imagenet_tfrecords.convert.convert_shard``, with these options (default: none)."""
    from imagenet_tfrecords.convert import Job, Options
    from imagenet_tfrecords.layouts import build_plan

    plan = build_plan(str(data))
    job = Job.of(plan, str(out), Options(**options))
    return [(job, i, text) for i, (_, text) in enumerate(plan.shard_texts())]


def num_tasks(data: Path, max_tasks: int) -> int:
    """Conversion tasks of ``imagenet-tfrecords run --max-tasks max_tasks`` on ``data``."""
    from imagenet_tfrecords.plan import group_tasks

    return len(group_tasks(len(shard_jobs(data, OUT)), max_tasks))
