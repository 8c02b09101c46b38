"""Benchmark of the converter: every figure measured in one run, on the same files.

    python benchmarks/bench.py            # full TinyImageNet size: 200 x 500 train, 10,000 val, 10,000 test
    python benchmarks/bench.py --small    # 20 x 100 train, 1,000 val, 1,000 test (under two minutes)

Measured, each as its own subprocess (whole-process wall time, peak resident memory of the
largest process of its tree, polled from /proc):

- decode-only bound: simplejpeg over every file on every core, nothing written (decode_bound.py);
- naive baseline: single-process TensorFlow 2 port of the 2018 notebook (baseline_tf.py);
- ``imagenet-tfrecords convert`` with 1 .. N workers (1 and every core are the headline rows), train
  shards mixed (the default), and with every core and ``--train-order per-class`` (the cost of mixing);
- ``convert --format tf-models`` with every core (its speed against the decode bound, its shards'
  bytes against the seed format's);
- ``imagenet-tfrecords run``: the whole Kubeflow pipeline under kfp.local;
- kfp.local per-task overhead: ``run`` with as many tasks as allowed against one task;
- the same train and val pictures as class folders, Hugging Face parquet files and WebDataset shards
  (forms.py), each converted with every core: the two download forms' speed against the class folders'
  (goal: within 0.9);
- peak RSS of the conversion workers on classes of two sizes (flat in the class size);
- for the cost model: per-image cost of ``convert_shard`` (and of the decode alone) on ~110 KB
  400x350 JPEGs, in this process, and import times; on those JPEGs too, ``convert`` with 1 and every
  worker, and the decode-only bound (at full size) against ``convert --format tf-models`` (the tf-models
  target where images are the size of ImageNet's), against ``convert`` in the seed format (full size, the
  bytes path) and against ``convert --resize 64x64`` and ``32x32`` (the resize targets), side by side in
  every round; per-image cost and records' bytes at full size, 64x64 and shorter side 256, for the cost
  model's resize rows;
- the shards' SHA-256: ``convert`` in one process with it and without it, in turn, and SHA-256
  alone in seconds per GB (checksum_cost.py).

Writes benchmarks/results/<small|full>.json and <small|full>-workers.png, prints a table.
Datasets are generated once under build/bench-data/<name> and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import checksum_cost
from cost_model import ASSUMED, IMAGENET, RESIZE_SETTINGS, cost_model, import_times, per_image_costs, resize_rows
from data import HERE, LARGE, OUT, SIZES, count_images, dataset, large_dataset, num_tasks
from measure import CLI, NPROC, PY, Bench, machine
from report import (
    BASELINE,
    DECODE_LARGE,
    PER_CLASS,
    RESIZE32_LARGE,
    RESIZE_LARGE,
    SEED_LARGE,
    TF_MODELS,
    TF_MODELS_LARGE,
    checks,
    plot,
    ratios,
    report,
)

RESULTS = HERE / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="20 classes x 100 + 1,000 + 1,000 images")
    p.add_argument(
        "--repeat", type=int, default=0, help="runs of each measurement, fastest kept (default: 3 with --small, else 1)"
    )
    p.add_argument("--max-workers", type=int, default=NPROC + 2, help="convert with 1..N workers (default nproc+2)")
    p.add_argument("--rss-classes", default="500,2000", help="class sizes for the RSS flatness check")
    p.add_argument("--skip-baseline", action="store_true", help="leave out the TensorFlow baseline")
    p.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/<small|full>.json)")
    return p.parse_args(argv)


def convert_cmd(data: Path, out: Path, workers: int) -> list:
    return [*CLI, "convert", "--data", data, "--output", out, "--workers", str(workers)]


def measure_round(bench: Bench, data: Path, out: Path, workers: list[int], baseline: bool) -> None:
    """The headline rows: decode bound, baseline, convert with each number of workers, run."""
    bench.measure("decode-only bound", [PY, HERE / "decode_bound.py", data, str(NPROC)], kind="decode")
    if baseline:
        bench.measure(BASELINE, [PY, HERE / "baseline_tf.py", data, out / "baseline"], kind="baseline", out=out)
    for w in workers:
        bench.measure(
            f"convert --workers {w}", convert_cmd(data, out / "convert", w), kind="convert", out=out / "convert"
        )
    per_class = [*convert_cmd(data, out / "convert", NPROC), "--train-order", "per-class"]
    bench.measure(PER_CLASS, per_class, kind="convert", out=out / "convert")
    tf_models = [*convert_cmd(data, out / "tf-models", NPROC), "--format", "tf-models"]
    bench.measure(TF_MODELS, tf_models, kind="convert", out=out / "tf-models")
    run = [*CLI, "run", "--data", data, "--output", out / "run"]
    bench.measure("run (kfp.local)", run, kind="run", out=out / "run")
    bench.measure("run, one task per split", [*run, "--max-tasks", "3"], kind="run", out=out / "run")


def measure_task_overhead(bench: Bench) -> dict:
    """kfp.local's cost per task: the small data set in as many tasks as allowed against one task."""
    from imagenet_tfrecords.plan import MAX_TASKS

    print("kfp.local per-task overhead", flush=True)
    small = dataset("small", **SIZES["small"])
    runs = {}
    for max_tasks in (MAX_TASKS, 1):
        cmd = [*CLI, "run", "--data", small, "--output", OUT / "spt", "--max-tasks", str(max_tasks)]
        row = bench.measure(
            f"run small, at most {max_tasks} tasks", cmd, kind="run", out=OUT / "spt", images=count_images(small)
        )
        runs[max_tasks] = {"tasks": num_tasks(small, max_tasks), "wall_s": row["wall_s"]}
    per_task = (runs[MAX_TASKS]["wall_s"] - runs[1]["wall_s"]) / (runs[MAX_TASKS]["tasks"] - runs[1]["tasks"])
    return {"runs": runs, "seconds_per_task": round(per_task, 3)}


FORMS = ("folders", "parquet", "webdataset")


def measure_forms(bench: Bench, data: Path, repeat: int) -> dict:
    """convert of the same pictures as class folders, parquet and WebDataset shards (forms.py), in turn;
    each download form's images/s over the class folders'."""
    from forms import write_forms

    print("the same pictures as class folders, parquet, WebDataset", flush=True)
    where = OUT / "forms-data"
    write_forms(data, where)
    images = sum(1 for p in (where / "folders").rglob("*") if p.is_file())
    for _ in range(repeat):
        for form in FORMS:
            cmd = convert_cmd(where / form, OUT / "forms", NPROC)
            bench.measure(f"convert {form}", cmd, kind="convert", out=OUT / "forms", images=images)
    rows = {form: bench.rows[f"convert {form}"] for form in FORMS}
    shutil.rmtree(where, ignore_errors=True)
    speed = {form: row["images_per_s"] for form, row in rows.items()}
    for form in FORMS[1:]:
        print(f"  {form}: {speed[form] / speed['folders']:.2f} of the class folders' images/s", flush=True)
    return {
        "images": images,
        "images_per_s": speed,
        "against_folders": {f: round(speed[f] / speed["folders"], 3) for f in FORMS[1:]},
        "peak_rss_mb": {form: row["peak_rss_mb"] for form, row in rows.items()},
    }


def _pick(row: dict) -> dict:
    keep = ("images", "wall_s", "images_per_s", "peak_rss_mb", "peak_rss_children_mb")
    return {k: row[k] for k in keep}


def measure_worker_rss(bench: Bench, class_sizes: str) -> list[dict]:
    """Peak RSS of conversion workers against the size of a class directory."""
    print("peak RSS per worker against class size", flush=True)
    rss = []
    for n in [int(x) for x in class_sizes.split(",")]:
        d = dataset(f"rss-{n}", classes=NPROC, train_per_class=n, val=10, test=10)
        cmd = convert_cmd(d, OUT / "rss", NPROC)
        row = bench.measure(f"convert, classes of {n}", cmd, kind="convert", out=OUT / "rss", images=count_images(d))
        rss.append({"class_images": n, "worker_peak_rss_mb": row["peak_rss_children_mb"], **_pick(row)})
    return rss


def measure_cost_inputs(bench: Bench, repeat: int) -> dict:
    """Per-image cost of large images, convert on them with 1 and every worker (and, ``repeat`` times
    in turn, in tf-models against their decode bound), import times; the model."""
    print("cost model: 400x350 JPEGs, import times", flush=True)
    large = large_dataset()
    costs = per_image_costs(large)
    n = LARGE["images"]
    rows = [
        bench.measure(
            "convert 400x350, 1 worker",
            convert_cmd(large, OUT / "large", 1),
            kind="convert",
            out=OUT / "large",
            images=n,
        )
    ]
    bound = [PY, HERE / "decode_bound.py", large, str(NPROC)]
    seed = convert_cmd(large, OUT / "large", NPROC)
    tf_models = [*seed, "--format", "tf-models"]
    # each against the decode-only bound, side by side in every round
    for _ in range(repeat):
        bench.measure(DECODE_LARGE, bound, kind="decode", images=n)
        rows[1:] = [bench.measure(SEED_LARGE, seed, kind="convert", out=OUT / "large", images=n)]
        bench.measure(TF_MODELS_LARGE, tf_models, kind="convert", out=OUT / "large", images=n)
        for name, size in ((RESIZE_LARGE, "64x64"), (RESIZE32_LARGE, "32x32")):
            bench.measure(name, [*seed, "--resize", size], kind="convert", out=OUT / "large", images=n)
    imports = import_times(3)
    # A pod's CPUs are its own (request = limit): what parallel work costs is the extra CPU time per image,
    # which other work on this shared machine disturbs less than it disturbs wall time.
    efficiency = min(1.0, rows[0]["cpu_s"] / rows[-1]["cpu_s"])
    model = cost_model(costs["total_us"], efficiency, imports["kfp executor + tasks"], costs["mean_jpeg_kb"] * 1000)
    by_setting = {
        name: per_image_costs(large, **options) if options else costs for name, options in RESIZE_SETTINGS.items()
    }
    return {
        "large_images": {"per_image": costs, "convert": [_pick(r) for r in rows], "resize_per_image": by_setting},
        "imports_s": imports,
        "cost_model": model,
        "resize_cost_model": resize_rows(by_setting, efficiency, imports["kfp executor + tasks"]),
    }


def write_results(result: dict, json_path: Path, sweep: list[dict]) -> None:
    """The JSON, the plot, the tables on stdout; the outputs under build/bench-out go."""
    rows = {r["name"]: r for r in result["rows"]}
    png_path = json_path.with_name(json_path.stem + "-workers.png")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    cpu, best = result["machine"]["cpu"], result["repeat"]
    title = f"{result['size']}: {result['images']} JPEGs of 64x64, {NPROC} cores of {cpu}, best of {best}"
    plot(png_path, sweep, rows["decode-only bound"], rows.get(BASELINE), title)
    shutil.rmtree(OUT, ignore_errors=True)
    print()
    print(report(result))
    print(f"\nwrote {json_path} and {png_path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = "small" if args.small else "full"
    repeat = args.repeat or (3 if args.small else 1)
    started = time.perf_counter()
    info = machine()
    print(
        f"benchmark {size}: {info['cpu']}, {NPROC} cores, {info['memory_gb']} GB, load {info['load_average_at_start']}"
    )

    data = dataset(size, **SIZES[size])
    bench = Bench(count_images(data))
    workers = list(range(1, max(args.max_workers, NPROC) + 1))
    for r in range(repeat):
        print(f"round {r + 1}/{repeat} on {bench.images} images", flush=True)
        measure_round(bench, data, OUT / size, workers, baseline=not args.skip_baseline)
    per_task = measure_task_overhead(bench)
    forms = measure_forms(bench, data, repeat)
    rss = measure_worker_rss(bench, args.rss_classes)
    cost = measure_cost_inputs(bench, repeat)
    print("the shards' SHA-256: convert with and without it", flush=True)
    checksum = checksum_cost.measure(str(data), max(repeat, 3), workers=NPROC)

    rows = bench.rows
    rows["decode-only bound"]["workers"] = NPROC
    sweep = [dict(rows[f"convert --workers {w}"], workers=w) for w in workers]
    ratio = ratios(rows)
    result = {
        "size": size,
        "counts": SIZES[size],
        "images": bench.images,
        "repeat": repeat,
        "machine": info,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "rows": list(rows.values()),
        "ratios": ratio,
        "checks": checks(ratio, rss, sweep, size),
        "kfp_local_per_task": per_task,
        "download_forms": forms,
        "rss_vs_class_size": rss,
        "large_images": cost["large_images"],
        "imports_s": cost["imports_s"],
        "assumed": ASSUMED,
        "imagenet": IMAGENET,
        "cost_model": cost["cost_model"],
        "resize_cost_model": cost["resize_cost_model"],
        "checksum_cost": checksum,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    write_results(result, (args.output or RESULTS / f"{size}.json").resolve(), sweep)
    print(checksum_cost.line(checksum))
    return 0


if __name__ == "__main__":
    sys.exit(main())
