"""Peak memory of the plan step and of one conversion task at ImageNet's file count.

    python benchmarks/scale.py                       # 1,281,167 train files in 1,000 classes, and 128 k
    python benchmarks/scale.py --files 128116 --classes 100

Generates an ImageNet-layout dataset (LOC_synset_mapping.txt, LOC_val_solution.csv,
ILSVRC/Data/CLS-LOC/{train,val}) whose files are hard links to a few tiny JPEGs (no disk space
but the directory entries), under /tmp/imagenet-tfrecords-scale/<files> (kept for the next run).
Then runs, each in a fresh Python process: ``tasks.plan_step`` (64 tasks) with per-class train
shards, then with mixed ones (the default), and ``tasks.convert_step`` of task 0 (2 workers) of
the mixed plan, at the images' size and with ``--resize 64x64``, and prints each one's wall time and peak
resident memory (``getrusage``: the process itself and its largest child, the pool's workers).
Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
BASE = Path("/tmp/imagenet-tfrecords-scale")
DATA = "ILSVRC/Data/CLS-LOC"
VAL = 1000

CHILD = """
import json, resource, sys, time
from imagenet_tfrecords import tasks
step, data, out, work = sys.argv[1:5]
t = time.perf_counter()
if step.startswith("plan"):
    order = "per-class" if step == "plan per-class" else "mixed"
    _, summary = tasks.plan_step(data, out, 500, 64, f"{work}/plan.json", f"{work}/labels.txt", train_order=order)
else:
    # the options and workers travel in plan.json (the plan step's): this step's own, set there
    plan = json.load(open(f"{work}/plan.json"))
    plan["options"]["resize"], plan["workers"] = ("64x64" if step == "convert 64x64" else ""), 2
    with open(f"{work}/plan.json", "w") as f:
        json.dump(plan, f)
    summary = tasks.convert_step(f"{work}/plan.json", 0, f"{work}/manifest.json")
seconds = time.perf_counter() - t
rss = lambda who: resource.getrusage(who).ru_maxrss // 1024  # KiB -> MiB
print(json.dumps({"seconds": round(seconds, 1), "rss_mib": rss(resource.RUSAGE_SELF),
                  "children_rss_mib": rss(resource.RUSAGE_CHILDREN), "summary": summary}))
"""


def tiny_jpegs(n: int = 4) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def generate(root: Path, files: int, classes: int) -> None:
    """The dataset, once: ``files`` train files spread evenly over ``classes`` folders, VAL val files."""
    done = root / "complete"
    if done.exists():
        return
    sources = root / "sources"  # one file per class (a file takes at most 65,000 links on ext4)
    sources.mkdir(parents=True, exist_ok=True)
    jpegs = tiny_jpegs()
    wnids = [f"n{i:08d}" for i in range(classes)]
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {i}\n" for i, w in enumerate(wnids)))
    for c, w in enumerate(wnids):
        source = sources / f"{w}.JPEG"
        source.write_bytes(jpegs[c % len(jpegs)])
        folder = root / DATA / "train" / w
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(files // classes + (c < files % classes)):
            if not (folder / f"{w}_{n}.JPEG").exists():
                os.link(source, folder / f"{w}_{n}.JPEG")
    val = root / DATA / "val"
    val.mkdir(parents=True, exist_ok=True)
    lines = ["ImageId,PredictionString"]
    for n in range(VAL):
        name = f"ILSVRC2012_val_{n + 1:08d}"
        if not (val / f"{name}.JPEG").exists():
            os.link(sources / f"{wnids[n % classes]}.JPEG", val / f"{name}.JPEG")
        lines.append(f"{name},{wnids[n % classes]} 0 0 7 7")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    done.touch()


def measure(step: str, root: Path) -> dict:
    out, work = root.parent / f"{root.name}-out", root.parent / f"{root.name}-work"
    if step.startswith("plan"):  # a fresh output: nothing resumed
        shutil.rmtree(out, ignore_errors=True)
    work.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    started = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(root), str(out), str(work)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, nargs="*", default=[1_281_167, 128_116], help="train files of each dataset")
    p.add_argument("--classes", type=int, nargs="*", default=[1000, 100], help="classes of each dataset")
    args = p.parse_args(argv)
    results = []
    for files, classes in zip(args.files, args.classes, strict=True):
        root = BASE / str(files)
        started = time.perf_counter()
        generate(root, files, classes)
        print(f"{files} train files in {classes} classes: generated in {time.perf_counter() - started:.0f} s")
        row = {"train_files": files, "classes": classes}
        for step in ("plan per-class", "plan", "convert", "convert 64x64"):
            row[step] = measure(step, root)
            r = row[step]
            print(
                f"  {step}: {r['seconds']} s, peak RSS {r['rss_mib']} MiB (largest child {r['children_rss_mib']} MiB)"
                f"; {json.dumps(r['summary'])}"
            )
        results.append(row)
    (HERE / "results" / "scale.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
