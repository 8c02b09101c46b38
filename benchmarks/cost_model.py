"""The cost model of full ImageNet on Kubeflow, and what it takes from this machine: the converter's
cost per image on one core (its hot path, ``convert_shard``, and of that the decode alone) and the
start-up of a task's process (import times)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

from data import LARGE, OUT, ROOT, shard_jobs, train_files
from measure import PY

# The shape of the data set, and what cannot be measured here.
IMAGENET = {"train": 1_281_167, "classes": 1000, "val": 50_000, "test": 100_000, "shard_size": 500}
ASSUMED = {
    "pod_start_s": 15.0,  # scheduling + KFP v2 driver + container start + launcher, image already on the node
    "image_pull_s": 60.0,  # first pull of the ~1.5 GB image (tensorflow-cpu inside) on a node; cached after
    "overhead_share": 0.10,  # start-up may cost at most this share of a task
    "pod_cpus": 2,  # TASK_CPUS in pipelines/tinyimagenet_to_tfrecords.py
    "pod_network_mb_s": 200.0,  # object-store throughput of one pod, reads and writes together
}
PODS = (1, 4, 16, 64, 256)
# The archive form (ILSVRC2012's tars read in place), for the plan step's listing of tar headers.
ARCHIVES = {"train_tar_gb": 147.0, "val_tar_gb": 6.4, "test_tar_gb": 13.0, "largest_class": 1300}
ASSUMED_RANGE_READS = {
    "latency_s": 0.030,  # one small range read of GCS/S3 from a pod in the bucket's region
    "in_flight": 100,  # before pipelining: a round's requests in flight (aiohttp's pool; botocore's held 10)
    "s3_gets_per_s": 5500,  # S3's documented request rate per prefix (GET/HEAD): one archive object is one
}
# Measured by benchmarks/archive_latency.py against moto behind a latency proxy: the most range reads the
# listing keeps in flight (the default of archive.in_flight_reads, seen at the proxy); moto's own rate
# (66 requests/s here) bounds its seconds, so the model takes the concurrency from it, not the seconds.
MEASURED_LATENCY_RESULTS = Path(__file__).resolve().parent / "results" / "archive_latency.json"


def measured_in_flight() -> int:
    """The reads in flight that benchmarks/archive_latency.py saw at 100 ms (its results file), else
    the code's default."""
    from imagenet_tfrecords.archive import DEFAULT_IN_FLIGHT

    try:
        figures = json.loads(MEASURED_LATENCY_RESULTS.read_text())
        return int(figures["100ms"]["after"]["peak_in_flight"])
    except (OSError, ValueError, KeyError):
        return DEFAULT_IN_FLIGHT


def archive_plan_pipelined(in_flight: int | None = None, segment_mib: int = 16) -> dict:
    """Minutes of listing the archives' headers with pipelined walks (archive.py now): the outer train
    tar's 1,001 headers are one chain; then every class tar walks with one read in flight, up to
    ``in_flight`` of them at once (the layout's group is at least as large), so the train listing takes
    the longer of its requests over the reads in flight and the largest class tar's chain; on S3 no
    faster than the per-prefix request rate. Val and test: their segments' walks run together, each a
    chain of the members between two starting points."""
    in_flight = in_flight or measured_in_flight()
    latency = ASSUMED_RANGE_READS["latency_s"]
    outer = (IMAGENET["classes"] + 1) * latency
    inner_requests = IMAGENET["train"] + IMAGENET["classes"]
    inner = max(inner_requests * latency / in_flight, (ARCHIVES["largest_class"] + 1) * latency)
    flat = {split: ARCHIVES[f"{split}_tar_gb"] * 1e9 / (segment_mib << 20) for split in ("val", "test")}
    flat_s = sum(max(IMAGENET[s] * latency / in_flight, (IMAGENET[s] / n + 2) * latency) for s, n in flat.items())
    s3_floor = (inner_requests + IMAGENET["val"] + IMAGENET["test"]) / ASSUMED_RANGE_READS["s3_gets_per_s"]
    seconds = outer + inner + flat_s
    return {
        "in_flight": in_flight,
        "outer_chain_s": round(outer, 1),
        "class_tars_s": round(inner, 1),
        "val_test_s": round(flat_s, 1),
        "minutes": round(seconds / 60, 1),
        "minutes_s3_rate_bound": round(max(seconds, outer + s3_floor) / 60, 1),
        "chains_only_minutes": round((outer + (ARCHIVES["largest_class"] + 1) * latency) / 60, 1),
    }


def archive_plan_cost(segment_mib: int = 16, window_kib: int = 256) -> dict:
    """Requests, bytes and minutes of listing the archives' headers at plan time (archive.py):
    one 512-byte read per member and per end marker, one window per ``segment_mib`` of a flat
    tar; rounds are the reads that wait for the one before (the outer train tar's 1,001 headers,
    then per group of ``GROUP`` class tars listed together the largest class tar's headers, then
    the flat tars' walks between two starting points)."""
    from imagenet_tfrecords.layouts.imagenet_archive import GROUP

    flat = {split: ARCHIVES[f"{split}_tar_gb"] * 1e9 / (segment_mib << 20) for split in ("val", "test")}
    requests = (IMAGENET["classes"] + 1) + (IMAGENET["train"] + IMAGENET["classes"])
    requests += sum(IMAGENET[split] + 2 * n for split, n in flat.items())
    rounds = (IMAGENET["classes"] + 1) + math.ceil(IMAGENET["classes"] / GROUP) * (ARCHIVES["largest_class"] + 1)
    rounds += sum(IMAGENET[split] / n + 2 for split, n in flat.items())
    window_bytes = sum(flat.values()) * window_kib * 1024
    latency, in_flight = ASSUMED_RANGE_READS["latency_s"], ASSUMED_RANGE_READS["in_flight"]
    seconds = max(rounds * latency, requests * latency / in_flight)
    return {
        "requests": round(requests),
        "rounds": round(rounds),
        "header_mb": round(requests * 512 / 1e6),
        "window_mb": round(window_bytes / 1e6),
        "minutes": round(seconds / 60, 1),
        "bound": "rounds" if rounds * latency >= requests * latency / in_flight else "requests in flight",
    }


def per_image_costs(data: Path, passes: int = 3, **options) -> dict:
    """Microseconds per image on one core, in this process: ``convert.convert_shard`` over every shard of
    ``data`` (read, decode, encode, frame, write, publish: what a conversion worker runs) with these
    conversion options, and the decode alone (``image.decode`` on bytes already in memory, resized as the
    options say). CPU time of this process (``time.process_time``: other work on a shared machine disturbs
    it less than wall time), the fastest of ``passes``: contention only adds time. Also the records' bytes
    per image."""
    from imagenet_tfrecords.convert import Options

    files = train_files(data)
    blobs = [p.read_bytes() for p in files]
    convert_s, decode_s = math.inf, math.inf
    for _ in range(passes):
        seconds, records, shards, written = _convert_pass(data, OUT / "per-image", **options)
        convert_s = min(convert_s, seconds)
        decode_s = min(decode_s, _decode_pass(blobs, Options(**options).resizing()))
    if records != len(files):
        raise RuntimeError(f"convert_shard wrote {records} records of {len(files)} files in {data}")
    return {
        "total_us": round(convert_s / records * 1e6, 1),
        "decode_us": round(decode_s / records * 1e6, 1),
        "other_us": round((convert_s - decode_s) / records * 1e6, 1),
        "images": records,
        "shards": shards,
        "mean_jpeg_kb": round(sum(map(len, blobs)) / len(blobs) / 1000, 1),
        "record_bytes": round(written / records, 1),
    }


def _convert_pass(data: Path, out: Path, **options) -> tuple[float, int, int, int]:
    """Seconds to convert every shard into a fresh ``out`` (a shard already there would be skipped), records,
    shards, bytes written."""
    from imagenet_tfrecords.convert import convert_shard

    shutil.rmtree(out, ignore_errors=True)
    jobs = shard_jobs(data, out, **options)
    started = time.process_time()
    stats = [convert_shard(job, shard_id, text) for job, shard_id, text in jobs]
    seconds = time.process_time() - started
    shutil.rmtree(out, ignore_errors=True)
    if any(s.get("resumed") for s in stats):
        raise RuntimeError(f"convert_shard resumed a shard in {out} instead of converting it")
    return seconds, sum(s["records"] for s in stats), len(stats), sum(s["bytes"] for s in stats)


def _decode_pass(blobs: list[bytes], resize=None) -> float:
    from imagenet_tfrecords.image import decode

    started = time.process_time()
    for blob in blobs:
        decode(blob, resize=resize)
    return time.process_time() - started


def import_times(repeat: int) -> dict:
    """Best wall time of a fresh interpreter doing only these imports."""
    cases = {
        "python": "pass",
        "imagenet_tfrecords.tasks": "import imagenet_tfrecords.tasks",
        "kfp": "import kfp",
        "kfp executor + tasks": "import kfp.dsl.executor_main, imagenet_tfrecords.tasks",
    }
    got = {}
    for name, code in cases.items():
        best = math.inf
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run([PY, "-c", code], check=True, cwd=ROOT)
            best = min(best, time.perf_counter() - started)
        got[name] = round(best, 3)
    return got


def _imagenet_shards() -> tuple[int, int]:
    """(shards, images) of full ImageNet: mixed train shards of about 1,000 images (the default), val and
    test in shards of shard_size."""
    from imagenet_tfrecords.listing import default_train_shards

    val_shards = math.ceil(IMAGENET["val"] / IMAGENET["shard_size"])
    test_shards = math.ceil(IMAGENET["test"] / IMAGENET["shard_size"])
    images = IMAGENET["train"] + IMAGENET["val"] + IMAGENET["test"]
    return default_train_shards(IMAGENET["train"]) + val_shards + test_shards, images


def _best_grouping(pods: int, shards: int, task_start_s: float, shard_s: float) -> dict:
    """The group size with the shortest run among those keeping start-up within its share (any, if none
    can): all tasks should finish in as few full waves of ``pods`` tasks as possible."""
    share, pull = ASSUMED["overhead_share"], ASSUMED["image_pull_s"]
    options = []
    for k in range(1, shards + 1):
        tasks = math.ceil(shards / k)
        task_s = task_start_s + k * shard_s
        makespan = pull + math.ceil(tasks / pods) * task_s
        options.append((task_start_s / task_s > share, makespan, -k, k, tasks, task_s))
    _, makespan, _, k, tasks, task_s = min(options)
    return {
        "pods": pods,
        "shards_per_task": k,
        "tasks": tasks,
        "task_s": round(task_s, 1),
        "startup_share": round(task_start_s / task_s, 3),
        "makespan_min": round(makespan / 60, 1),
        "pods_busy": min(pods, tasks),
        "pod_hours": round((tasks * task_s + min(pods, tasks) * pull) / 3600, 2),
    }


def cost_model(c_us: float, efficiency: float, startup_s: float, jpeg_bytes: float, out_bytes: float = 0) -> dict:
    """Full ImageNet on N pods of ASSUMED['pod_cpus'] CPUs: task time, shards_per_task, makespan.

    A pod converts at the lower of its CPU rate (measured per-image cost, measured parallel
    efficiency) and its network rate (JPEG in, records out, at the assumed bandwidth). ``out_bytes``:
    the records' bytes per image (default: the raw pixels of a 400x350 image, the seed format).
    """
    shards, images = _imagenet_shards()
    raw_bytes = out_bytes or LARGE["height"] * LARGE["width"] * 3
    cpu_rate = ASSUMED["pod_cpus"] * efficiency / (c_us * 1e-6)  # images/s of one pod
    net_rate = ASSUMED["pod_network_mb_s"] * 1e6 / (jpeg_bytes + raw_bytes)
    pod_rate = min(cpu_rate, net_rate)
    shard_s = images / shards / pod_rate
    task_start_s = ASSUMED["pod_start_s"] + startup_s
    share = ASSUMED["overhead_share"]
    return {
        "shards": shards,
        "images": images,
        "per_image_core_us": round(c_us, 1),
        "pod_efficiency": round(efficiency, 3),
        "pod_cpu_images_per_s": round(cpu_rate, 1),
        "pod_network_images_per_s": round(net_rate, 1),
        "pod_images_per_s": round(pod_rate, 1),
        "bound": "cpu" if cpu_rate <= net_rate else "network",
        "shard_s": round(shard_s, 2),
        "task_start_s": round(task_start_s, 2),
        # start-up <= share of the task: task_start <= share * (task_start + k * shard_s)
        "shards_per_task_for_overhead": math.ceil(task_start_s * (1 - share) / (share * shard_s)),
        "cpu_core_hours": round(images * c_us * 1e-6 / 3600, 2),
        "input_gb": round(images * jpeg_bytes / 1e9),
        "output_gb": round(images * raw_bytes / 1e9),
        "table": [_best_grouping(pods, shards, task_start_s, shard_s) for pods in PODS],
    }


# The resize rows of the cost model: conversion options of each, against the full size.
RESIZE_SETTINGS = {
    "full size": {},
    "--resize 64x64": {"resize": "64x64"},
    "--shorter-side 256": {"shorter_side": 256},
    "--shorter-side 256 --format tf-models": {"shorter_side": 256, "format": "tf-models"},
}


def resize_rows(costs: dict[str, dict], efficiency: float, startup_s: float) -> list[dict]:
    """Full ImageNet at each of RESIZE_SETTINGS (``costs``: per_image_costs of each, on the 400x350 set):
    records' bytes out, the pod rate and what bounds it, and the makespan on each number of PODS."""
    rows = []
    for name, c in costs.items():
        m = cost_model(c["total_us"], efficiency, startup_s, c["mean_jpeg_kb"] * 1000, c["record_bytes"])
        rows.append(
            {
                "setting": name,
                "per_image_core_us": c["total_us"],
                "record_bytes": c["record_bytes"],
                "output_gb": round(m["images"] * c["record_bytes"] / 1e9, 1),
                "pod_images_per_s": m["pod_images_per_s"],
                "bound": m["bound"],
                "makespan_min": {t["pods"]: t["makespan_min"] for t in m["table"]},
                "pod_hours": {t["pods"]: t["pod_hours"] for t in m["table"]},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """The resize rows alone, without the whole benchmark: per-image costs measured here on the first
    ``--images`` of the 400x350 set, the parallel efficiency and task start-up of a benchmark's results."""
    import argparse
    import json

    from data import HERE, large_dataset
    from report import resize_table

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--images", type=int, default=300, help="400x350 images timed (the first of the benchmark's set)")
    p.add_argument("--results", type=Path, default=HERE / "results" / "full.json", help="efficiency and start-up")
    p.add_argument("--archive", action="store_true", help="the archive form's plan-step listing alone: before, after")
    args = p.parse_args(argv)
    if args.archive:
        before, after = archive_plan_cost(), archive_plan_pipelined()
        wide = archive_plan_pipelined(1000)
        print(json.dumps({"lock_step_groups": before, "pipelined": after, "pipelined_1000_in_flight": wide}, indent=1))
        return 0
    earlier = json.loads(args.results.read_text())
    efficiency, startup = earlier["cost_model"]["pod_efficiency"], earlier["imports_s"]["kfp executor + tasks"]
    data = large_dataset(args.images)
    costs = {name: per_image_costs(data, **options) for name, options in RESIZE_SETTINGS.items()}
    rows = resize_rows(costs, efficiency, startup)
    print(json.dumps({"per_image": costs, "efficiency": efficiency, "task_start_s": startup, "rows": rows}, indent=1))
    print("\n".join(resize_table(rows)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
