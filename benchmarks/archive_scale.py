"""Peak memory and wall time of the plan step on the imagenet layout's archive form at scale.

    python benchmarks/archive_scale.py                          # 128,000 and 1,281,167 train members
    python benchmarks/archive_scale.py --members 128000 512000 --src /path/to/other/src
    python benchmarks/archive_scale.py --members 1281167 --group 10 --out /tmp/group10.json

Builds, once per size, under /tmp/imagenet-tfrecords-archive-scale/<members> (kept for the next
run): ILSVRC2012_img_train.tar, a tar of 1,000 class tars streamed out with ``tarfile`` (each
member a few bytes, so a member takes 1 KiB of the file: 1.3 GB at full size), a devkit with a
meta.mat of the 1,000 leaf synsets and its ground truth, and a val tar of 1,000 members. Then
runs ``tasks.plan_step`` (64 tasks, mixed train shards) in a fresh Python process and prints its
wall time, peak resident memory (``getrusage`` of the child) and rounds of range reads (calls of
``RangeReader.read``), with the sources of ``--src`` (default: this checkout's) on the path and
``--group`` class tars listed at a time (default: the layout's ``GROUP``). Writes
benchmarks/results/archive_scale.json (or the ``--out`` file).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BASE = Path("/tmp/imagenet-tfrecords-archive-scale")
CLASSES = 1000
VAL = 1000
DEVKIT, TRAIN_TAR, VAL_TAR = "ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"

CHILD = """
import json, sys, time
from imagenet_tfrecords import archive, tasks
from imagenet_tfrecords.layouts import imagenet_archive
data, out, work, group = sys.argv[1:5]
if int(group) and hasattr(imagenet_archive, "GROUP"):
    imagenet_archive.GROUP = int(group)
rounds, requests, read = [0], [0], archive.RangeReader.read
def counted(self, spans):
    rounds[0] += 1
    requests[0] += len(spans)
    return read(self, spans)
archive.RangeReader.read = counted
t = time.perf_counter()
_, summary = tasks.plan_step(data, out, 500, 64, f"{work}/plan.json", f"{work}/labels.txt")
seconds = time.perf_counter() - t
print(json.dumps({"seconds": round(seconds, 1), "rounds": rounds[0], "requests": requests[0], "summary": summary}))
"""


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _meta_mat(wnids: list[str]) -> bytes:
    """A meta.mat in the devkit's structure: one leaf synset (num_children 0) per wnid."""
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height"]
    synsets = np.zeros((len(wnids), 1), dtype=[(f, "O") for f in fields])
    for n, w in enumerate(wnids):
        synsets[n, 0] = (float(n + 1), w, f"class {n}", f"gloss of {w}", 0.0, np.zeros((1, 0)), 0.0)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def generate(root: Path, members: int) -> None:
    """The archives, once: ``members`` train members spread evenly over CLASSES class tars."""
    done = root / "complete"
    if done.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    wnids = [f"n{i:08d}" for i in range(CLASSES)]
    with tarfile.open(root / TRAIN_TAR, "w", format=tarfile.USTAR_FORMAT) as outer:
        for c, w in enumerate(wnids):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as inner:
                for n in range(members // CLASSES + (c < members % CLASSES)):
                    _add(inner, f"{w}_{n}.JPEG", b"%d" % n)
            _add(outer, f"{w}.tar", buf.getvalue())
    truth = "".join(f"{n % CLASSES + 1}\n" for n in range(VAL)).encode()
    with tarfile.open(root / DEVKIT, "w:gz") as devkit:
        _add(devkit, "ILSVRC2012_devkit_t12/data/meta.mat", _meta_mat(wnids))
        _add(devkit, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)
    with tarfile.open(root / VAL_TAR, "w") as val:
        for n in range(1, VAL + 1):
            _add(val, f"ILSVRC2012_val_{n:08d}.JPEG", b"%d" % n)
    done.touch()


def measure(root: Path, src: Path, group: int) -> dict:
    out, work = root.parent / f"{root.name}-out", root.parent / f"{root.name}-work"
    shutil.rmtree(out, ignore_errors=True)
    work.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", CHILD, str(root), str(out), str(work), str(group)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024  # KiB -> MiB
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, nargs="*", default=[128_000, 1_281_167], help="train members of each size")
    p.add_argument("--src", type=Path, default=HERE.parent / "src", help="the sources to measure")
    p.add_argument("--group", type=int, default=0, help="class tars listed at a time (0: the layout's GROUP)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "archive_scale.json")
    args = p.parse_args(argv)
    results = []
    for members in sorted(args.members):  # RUSAGE_CHILDREN is the largest child so far: smallest first
        root = BASE / str(members)
        started = time.perf_counter()
        generate(root, members)
        print(f"{members} train members in {CLASSES} class tars: ready in {time.perf_counter() - started:.0f} s")
        r = measure(root, args.src.resolve(), args.group)
        print(
            f"  plan: {r['seconds']} s, peak RSS {r['rss_mib']} MiB, {r['rounds']} rounds of range reads"
            f" ({r['requests']} requests); {json.dumps(r['summary'])}"
        )
        results.append({"train_members": members, "classes": CLASSES, "group": args.group, "plan": r})
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
