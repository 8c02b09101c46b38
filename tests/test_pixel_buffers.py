"""A conversion worker reuses the memory of the pixel buffers it frees: converting ImageNet-sized images
does not make the kernel map and zero every buffer's pages anew (counted as page faults, which the
kernel charges as system time)."""

import subprocess
import sys

import numpy as np
import simplejpeg

from imagenet_tfrecords.sample import write_sample

from .conftest import read_split

IMAGES = 24

# In a fresh process: plan the data set, convert its train shard once (imports, caches and the
# heap warmed), then again into another output, counting the minor page faults of the second pass.
MEASURE = """
import json, resource, sys
from imagenet_tfrecords.convert import Job, convert_shard
from imagenet_tfrecords.layouts import build_plan
plan = build_plan(sys.argv[1])
(i, text), = [(i, t) for i, (shard, t) in enumerate(plan.shard_texts()) if shard.split == "train"]
convert_shard(Job.of(plan, sys.argv[2]), i, text)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
stats = convert_shard(Job.of(plan, sys.argv[3]), i, text)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "records": stats["records"]}))
"""


def test_converting_large_images_does_not_fault_in_fresh_pages_for_each(tmp_path):
    data = tmp_path / "data"
    write_sample(str(data), classes=1, train_per_class=0, val=0, test=0)
    wnid = (data / "wnids.txt").read_text().split()[0]
    rng = np.random.default_rng(0)
    for i in range(IMAGES):  # 420,000 bytes of pixels each, as a 400x350 ImageNet image
        pixels = rng.integers(0, 256, size=(350, 400, 3), dtype=np.uint8)
        (data / "train" / wnid / "images" / f"{wnid}_{i}.JPEG").write_bytes(simplejpeg.encode_jpeg(pixels, 90))
    got = subprocess.run(
        [sys.executable, "-c", MEASURE, str(data), str(tmp_path / "warm"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert got.returncode == 0, got.stderr
    measured = __import__("json").loads(got.stdout.splitlines()[-1])
    assert measured["records"] == IMAGES
    per_image = measured["faults"] / IMAGES
    print(f"\nminor page faults per 400x350 image converted: {per_image:.1f}")
    # each image's buffers span ~100 pages apiece (decoded pixels, their bytes): mapped anew, they fault
    # in every page; reused, a few faults per image remain (the page cache's, Python's small objects)
    assert per_image < 20, measured
    assert len(read_split(tmp_path / "out", "train")) == IMAGES  # (and the records read back)
