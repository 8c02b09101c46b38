"""Benchmark of the converter: every figure measured in one run, on the same files.

    python benchmarks/bench.py            # full TinyImageNet size: 200 x 500 train, 10,000 val, 10,000 test
    python benchmarks/bench.py --small    # 20 x 100 train, 1,000 val, 1,000 test (under two minutes)

Measured, each as its own subprocess (whole-process wall time, peak resident memory of the
largest process of its tree, polled from /proc):

- decode-only bound: simplejpeg over every file on every core, nothing written (decode_bound.py);
- naive baseline: single-process TensorFlow 2 port of the 2018 notebook (baseline_tf.py);
- ``imagenet-tfrecords convert`` with 1 .. N workers (1 and every core are the headline rows);
- ``imagenet-tfrecords run``: the whole Kubeflow pipeline under kfp.local;
- kfp.local per-task overhead: ``run`` with one shard per task against one task per split;
- peak RSS of the conversion workers on classes of two sizes (flat in the class size);
- for the cost model: per-image cost on ~110 KB 400x350 JPEGs, and import times.

Writes benchmarks/results/<small|full>.json and <small|full>-workers.png, prints a table.
Datasets are generated once under build/bench-data/<name> and reused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = ROOT / "build"
DATA = BUILD / "bench-data"
OUT = BUILD / "bench-out"
RESULTS = HERE / "results"
PY = sys.executable
CLI = [PY, "-m", "imagenet_tfrecords.cli"]
NPROC = len(os.sched_getaffinity(0))

SIZES = {
    "full": {"classes": 200, "train_per_class": 500, "val": 10_000, "test": 10_000},
    "small": {"classes": 20, "train_per_class": 100, "val": 1_000, "test": 1_000},
}
TARGETS = {"decode_fraction": 0.6, "baseline_speedup": 4.0, "run_over_convert": 1.3, "worker_rss_mb": 250.0}

# Cost model of full ImageNet on Kubeflow: the shape of the data set, and what cannot be measured here.
IMAGENET = {"train": 1_281_167, "classes": 1000, "val": 50_000, "test": 100_000, "shard_size": 500}
ASSUMED = {
    "pod_start_s": 15.0,  # scheduling + KFP v2 driver + container start + launcher, image already on the node
    "image_pull_s": 60.0,  # first pull of the ~1.5 GB image (tensorflow-cpu inside) on a node; cached after
    "overhead_share": 0.10,  # start-up may cost at most this share of a task
    "pod_cpus": 2,  # TASK_CPUS in pipelines/tinyimagenet_to_tfrecords.py
    "pod_network_mb_s": 200.0,  # object-store throughput of one pod, reads and writes together
}
LARGE = {"images": 300, "classes": 4, "height": 350, "width": 400}


# --------------------------------------------------------------------------- measuring


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _tree(root: int) -> list[int]:
    children = _ppid_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def _peak_kb(pid: int) -> int | None:
    """VmHWM: the peak resident set of a process so far."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_measured(cmd: list[str], *, poll: float = 0.05, env: dict | None = None) -> dict:
    """Run ``cmd``; return wall time, CPU time, stdout and the peak RSS of every process of its tree.

    Each poll of /proc costs about a millisecond of CPU: every 50 ms, a few per cent of one core.
    """
    log, stdout = OUT / "last-stderr.txt", OUT / "last-stdout.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    peaks: dict[int, dict] = {}
    busy_before, (self_before, kids_before) = _busy_cpu_s(), _own_cpu_s()
    with open(log, "w") as err, open(stdout, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        while proc.poll() is None:
            for pid in _tree(proc.pid):
                cmdline = _cmdline(pid)  # before the peak: an exec in between then only lowers the reading
                kb = _peak_kb(pid)
                if kb is None:
                    continue
                seen = peaks.setdefault(pid, {"pid": pid, "kb": 0, "cmd": cmdline, "root": pid == proc.pid})
                if cmdline != seen["cmd"]:  # exec'd since (fork, then exec): the parent's pages are gone
                    seen.update(cmd=cmdline, kb=0)
                seen["kb"] = max(seen["kb"], kb)
            time.sleep(poll)
        wall = time.perf_counter() - started
    # Children: every waited-for descendant, pool workers too. Whatever else the machine did meanwhile
    # is other work, which slows the measurement down.
    busy_after, (self_after, kids_after) = _busy_cpu_s(), _own_cpu_s()
    cpu = kids_after - kids_before
    other = (busy_after - busy_before) - cpu - (self_after - self_before)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    procs = sorted(peaks.values(), key=lambda p: -p["kb"])
    others = [p["kb"] for p in procs if not p["root"]]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "other_cores": max(0.0, other / wall),
        "stdout": stdout.read_text(),
        "peak_rss_mb": procs[0]["kb"] / 1024 if procs else None,
        "peak_rss_root_mb": next((p["kb"] / 1024 for p in procs if p["root"]), None),
        "peak_rss_children_mb": max(others) / 1024 if others else None,
        "processes": len(procs),
    }


def _json_line(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def _printed_seconds(text: str) -> float | None:
    m = re.search(r"^\d+ records in ([\d.]+) s \(", text, re.M)
    return float(m.group(1)) if m else None


class Bench:
    def __init__(self, data: Path, images: int, repeat: int):
        self.data, self.images, self.repeat = data, images, repeat
        self.rows: dict[str, dict] = {}

    def measure(self, name: str, cmd: list[str], *, kind: str, out: Path | None = None, images: int | None = None):
        """Run once more; keep the fastest run of each name (noise on a shared machine only adds time)."""
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)  # convert resumes finished shards: start from nothing
        m = run_measured(cmd)
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        n = images or self.images
        inner = None
        if kind in ("decode", "baseline"):
            got = _json_line(m["stdout"])
            n, inner = got["images"], got["seconds"]
        elif kind in ("convert", "run"):
            inner = _printed_seconds(m["stdout"])
            m2 = re.search(r"^(\d+) records in", m["stdout"], re.M)
            if not m2 or int(m2.group(1)) != n:
                raise RuntimeError(f"{name}: expected {n} records, got:\n{m['stdout']}")
        row = {
            "name": name,
            "kind": kind,
            "cmd": " ".join(str(c) for c in cmd).replace(str(ROOT) + "/", ""),
            "images": n,
            "wall_s": round(m["wall_s"], 3),
            "images_per_s": round(n / m["wall_s"], 1),
            "inner_s": round(inner, 3) if inner is not None else None,
            "cpu_s": round(m["cpu_s"], 3),
            "cpu_us_per_image": round(m["cpu_s"] / n * 1e6, 1),
            "peak_rss_mb": _r(m["peak_rss_mb"]),
            "peak_rss_root_mb": _r(m["peak_rss_root_mb"]),
            "peak_rss_children_mb": _r(m["peak_rss_children_mb"]),
            "processes": m["processes"],
            "other_cores": round(m["other_cores"], 2),
        }
        old = self.rows.get(name)
        row["runs"] = (old["runs"] if old else []) + [row["wall_s"]]
        if old is None or row["wall_s"] < old["wall_s"]:
            self.rows[name] = row
        else:
            old["runs"] = row["runs"]
        print(f"  {name:<28} {row['wall_s']:8.2f} s  {row['images_per_s']:9.0f} img/s", flush=True)
        return self.rows[name]


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


# --------------------------------------------------------------------------- data


def dataset(name: str, **counts) -> Path:
    """A TinyImageNet-layout sample under build/bench-data/<name>, generated once."""
    from imagenet_tfrecords.sample import write_sample

    path = DATA / name
    stamp = path / ".bench-complete"
    if stamp.exists() and json.loads(stamp.read_text()) == counts:
        return path
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    print(f"generating {name} dataset {counts} ...", flush=True)
    write_sample(str(path), **counts)
    stamp.write_text(json.dumps(counts))
    print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def large_dataset() -> Path:
    """A few classes of ~110 KB 400x350 JPEGs, about the average full ImageNet image."""
    import numpy as np
    import simplejpeg

    from imagenet_tfrecords.sample import write_sample

    path = DATA / "large-400x350"
    stamp = path / ".bench-complete"
    if stamp.exists() and json.loads(stamp.read_text()) == LARGE:
        return path
    shutil.rmtree(path, ignore_errors=True)
    write_sample(str(path), classes=LARGE["classes"], train_per_class=0, val=0, test=0)
    wnids = (path / "wnids.txt").read_text().split()
    rng = np.random.default_rng(1)
    h, w = LARGE["height"], LARGE["width"]
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(LARGE["images"]):
        wnid = wnids[i % len(wnids)]
        # Blocks of colour, a stripe pattern and noise: about 110 KB at quality 90, like a photo.
        low = rng.integers(0, 256, size=(h // 25 + 1, w // 25 + 1, 3)).astype(np.float32)
        base = np.kron(low, np.ones((25, 25, 1), np.float32))[:h, :w]
        stripes = np.sin(xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.05, 0.2)) * 30
        noise = rng.normal(0, rng.uniform(8, 12), size=(h, w, 3))
        pixels = np.clip(base + stripes[..., None] + noise, 0, 255).astype(np.uint8)
        jpeg = simplejpeg.encode_jpeg(pixels, quality=90, colorspace="RGB")
        (path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG").write_bytes(jpeg)
    stamp.write_text(json.dumps(LARGE))
    return path


def count_images(data: Path) -> int:
    return sum(len(files) for d, _, files in os.walk(data) if d.endswith("images"))


# --------------------------------------------------------------------------- parts


def per_image_costs(data: Path, passes: int = 3) -> dict:
    """Microseconds per image of each step of convert_shard, in this process, on one core."""
    import numpy as np

    from imagenet_tfrecords import records
    from imagenet_tfrecords.image import decode

    paths = sorted((data / "train").glob("*/images/*"))
    out = OUT / "per-image.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    one_hot = records.one_hot(0, IMAGENET["classes"])
    best = {"read": math.inf, "decode": math.inf, "encode_frame": math.inf, "write": math.inf}
    sizes = [p.stat().st_size for p in paths]
    for _ in range(passes):  # the fastest pass of each step: contention only adds time
        t = dict.fromkeys(best, 0.0)
        with open(out, "wb", buffering=1 << 20) as f:
            for p in paths:
                t0 = time.perf_counter()
                data_bytes = p.read_bytes()
                t1 = time.perf_counter()
                img = decode(data_bytes)
                t2 = time.perf_counter()
                h, w, c = img.pixels.shape
                framed = records.frame(
                    records.encode_example(
                        height=h,
                        width=w,
                        channel=c,
                        label=0,
                        label_one_hot=one_hot,
                        image_raw=img.pixels.tobytes(),
                        filename=str(p.relative_to(data)).encode(),
                        wnid=b"n00000000",
                    )
                )
                t3 = time.perf_counter()
                f.write(framed)
                t4 = time.perf_counter()
                for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    t[k] += dt
        best = {k: min(best[k], t[k]) for k in best}
        os.remove(out)
    t = best
    n = len(paths)
    costs = {f"{k}_us": round(v / n * 1e6, 1) for k, v in t.items()}
    costs["total_us"] = round(sum(t.values()) / n * 1e6, 1)
    costs["images"] = n
    costs["mean_jpeg_kb"] = round(float(np.mean(sizes)) / 1000, 1)
    return costs


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


def cost_model(c_us: float, efficiency: float, startup_s: float, jpeg_bytes: float) -> dict:
    """Full ImageNet on N pods of ASSUMED['pod_cpus'] CPUs: task time, shards_per_task, makespan.

    A pod converts at the lower of its CPU rate (measured per-image cost, measured parallel
    efficiency) and its network rate (JPEG in, raw pixels out, at the assumed bandwidth).
    """
    train_shards = IMAGENET["classes"]
    val_shards = math.ceil(IMAGENET["val"] / IMAGENET["shard_size"])
    test_shards = math.ceil(IMAGENET["test"] / IMAGENET["shard_size"])
    shards = train_shards + val_shards + test_shards
    images = IMAGENET["train"] + IMAGENET["val"] + IMAGENET["test"]
    per_shard_images = images / shards
    raw_bytes = LARGE["height"] * LARGE["width"] * 3
    cpu_rate = ASSUMED["pod_cpus"] * efficiency / (c_us * 1e-6)  # images/s of one pod
    net_rate = ASSUMED["pod_network_mb_s"] * 1e6 / (jpeg_bytes + raw_bytes)
    pod_rate = min(cpu_rate, net_rate)
    shard_s = per_shard_images / pod_rate
    task_start_s = ASSUMED["pod_start_s"] + startup_s
    share = ASSUMED["overhead_share"]
    # start-up <= share of the task: task_start <= share * (task_start + k * shard_s)
    k_overhead = math.ceil(task_start_s * (1 - share) / (share * shard_s))
    table = []
    for pods in (1, 4, 16, 64, 256):
        # The group size with the shortest run among those keeping start-up within its share (any, if none
        # can): all tasks should finish in as few full waves of ``pods`` tasks as possible.
        options = []
        for k in range(1, shards + 1):
            tasks = math.ceil(shards / k)
            task_s = task_start_s + k * shard_s
            makespan = ASSUMED["image_pull_s"] + math.ceil(tasks / pods) * task_s
            options.append((task_start_s / task_s > share, makespan, -k, k, tasks, task_s))
        _, makespan, _, k, tasks, task_s = min(options)
        table.append(
            {
                "pods": pods,
                "shards_per_task": k,
                "tasks": tasks,
                "task_s": round(task_s, 1),
                "startup_share": round(task_start_s / task_s, 3),
                "makespan_min": round(makespan / 60, 1),
                "pods_busy": min(pods, tasks),
                "pod_hours": round((tasks * task_s + min(pods, tasks) * ASSUMED["image_pull_s"]) / 3600, 2),
            }
        )
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
        "shards_per_task_for_overhead": k_overhead,
        "cpu_core_hours": round(images * c_us * 1e-6 / 3600, 2),
        "input_gb": round(images * jpeg_bytes / 1e9),
        "output_gb": round(images * raw_bytes / 1e9),
        "table": table,
    }


def plot(path: Path, sweep: list[dict], decode: dict, baseline: dict | None, title: str) -> None:
    """Throughput against workers, and CPU time per image (less disturbed by other work on the machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [r["workers"] for r in sweep]
    fig, (ax, cx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    ax.plot(workers, [r["images_per_s"] for r in sweep], "o-", label="convert (whole-process wall time)")
    ax.axhline(decode["images_per_s"], color="grey", ls="--", label=f"decode-only bound, {decode['workers']} procs")
    ax.axhline(
        TARGETS["decode_fraction"] * decode["images_per_s"],
        color="grey",
        ls=":",
        label=f"{TARGETS['decode_fraction']} x decode bound",
    )
    if baseline:
        ax.axhline(baseline["images_per_s"], color="tab:red", ls="-.", label="naive TF baseline, 1 process")
    ax.axvline(NPROC, color="black", lw=0.8, alpha=0.3, label=f"{NPROC} cores")
    ax.set_xlabel("convert --workers")
    ax.set_ylabel("images / s")
    ax.set_title("throughput", fontsize=10)
    cx.plot(workers, [r["cpu_us_per_image"] for r in sweep], "o-", label="convert")
    cx.axhline(decode["cpu_us_per_image"], color="grey", ls="--", label="decode-only bound")
    cx.set_xlabel("convert --workers")
    cx.set_ylabel("CPU microseconds / image (all processes)")
    cx.set_title("CPU time per image", fontsize=10)
    for a in (ax, cx):
        a.set_xticks(workers)
        a.set_ylim(bottom=0)
        a.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def machine() -> dict:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "nproc": NPROC,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="20 classes x 100 + 1,000 + 1,000 images")
    p.add_argument(
        "--repeat", type=int, default=0, help="runs of each measurement, fastest kept (default: 3 with --small, else 1)"
    )
    p.add_argument("--max-workers", type=int, default=NPROC + 2, help="convert with 1..N workers (default nproc+2)")
    p.add_argument("--rss-classes", default="500,2000", help="class sizes for the RSS flatness check")
    p.add_argument("--skip-baseline", action="store_true", help="leave out the TensorFlow baseline")
    p.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/<small|full>.json)")
    args = p.parse_args(argv)

    size = "small" if args.small else "full"
    repeat = args.repeat or (3 if args.small else 1)
    json_path = (args.output or RESULTS / f"{size}.json").resolve()
    png_path = json_path.with_name(json_path.stem + "-workers.png")
    started = time.perf_counter()
    info = machine()
    load = info["load_average_at_start"]
    print(f"benchmark {size}: {info['cpu']}, {NPROC} cores, {info['memory_gb']} GB, load {load}")

    data = dataset(size, **SIZES[size])
    images = count_images(data)
    bench = Bench(data, images, repeat)
    out = OUT / size
    sweep_workers = list(range(1, max(args.max_workers, NPROC) + 1))

    for r in range(repeat):
        print(f"round {r + 1}/{repeat} on {images} images", flush=True)
        bench.measure("decode-only bound", [PY, HERE / "decode_bound.py", data, str(NPROC)], kind="decode")
        if not args.skip_baseline:
            bench.measure(
                "naive TF baseline", [PY, HERE / "baseline_tf.py", data, out / "baseline"], kind="baseline", out=out
            )
        for w in sweep_workers:
            bench.measure(
                f"convert --workers {w}",
                [*CLI, "convert", "--data", data, "--output", out / "convert", "--workers", str(w)],
                kind="convert",
                out=out / "convert",
            )
        bench.measure(
            "run (kfp.local)", [*CLI, "run", "--data", data, "--output", out / "run"], kind="run", out=out / "run"
        )
        bench.measure(
            "run, one task per split",
            [*CLI, "run", "--data", data, "--output", out / "run", "--max-tasks", "1"],
            kind="run",
            out=out / "run",
        )

    # kfp.local's cost per task: the small data set in as many tasks as allowed vs in one task.
    small = dataset("small", **SIZES["small"])
    small_images = count_images(small)
    print("kfp.local per-task overhead", flush=True)
    from imagenet_tfrecords.layout import MAX_TASKS, build_plan, plan_tasks

    per_task = {}
    for spt in (MAX_TASKS, 1):
        row = bench.measure(
            f"run small, at most {spt} tasks",
            [*CLI, "run", "--data", small, "--output", OUT / "spt", "--max-tasks", str(spt)],
            kind="run",
            out=OUT / "spt",
            images=small_images,
        )
        tasks = len(plan_tasks(len(build_plan(str(small))["shards"]), spt))
        per_task[spt] = {"tasks": tasks, "wall_s": row["wall_s"]}
    extra_tasks = per_task[MAX_TASKS]["tasks"] - per_task[1]["tasks"]
    task_overhead = (per_task[MAX_TASKS]["wall_s"] - per_task[1]["wall_s"]) / extra_tasks

    # Peak RSS of conversion workers against the size of a class directory.
    print("peak RSS per worker against class size", flush=True)
    rss = []
    for n in [int(x) for x in args.rss_classes.split(",")]:
        d = dataset(f"rss-{n}", classes=NPROC, train_per_class=n, val=10, test=10)
        row = bench.measure(
            f"convert, classes of {n}",
            [*CLI, "convert", "--data", d, "--output", OUT / "rss", "--workers", str(NPROC)],
            kind="convert",
            out=OUT / "rss",
            images=count_images(d),
        )
        rss.append({"class_images": n, "worker_peak_rss_mb": row["peak_rss_children_mb"], **_pick(row)})

    # Cost model inputs: large images, import times.
    print("cost model: 400x350 JPEGs, import times", flush=True)
    large = large_dataset()
    costs = per_image_costs(large)
    large_rows = [
        bench.measure(
            f"convert 400x350, {w} worker{'s' if w > 1 else ''}",
            [*CLI, "convert", "--data", large, "--output", OUT / "large", "--workers", str(w)],
            kind="convert",
            out=OUT / "large",
            images=LARGE["images"],
        )
        for w in sorted({1, NPROC})
    ]
    imports = import_times(3)
    # A pod's CPUs are its own (request = limit): what parallel work costs is the extra CPU time per image,
    # which other work on this shared machine disturbs less than it disturbs wall time.
    efficiency = large_rows[0]["cpu_s"] / large_rows[-1]["cpu_s"]
    startup = imports["kfp executor + tasks"]
    model = cost_model(costs["total_us"], min(1.0, efficiency), startup, costs["mean_jpeg_kb"] * 1000)

    rows = bench.rows
    decode = rows["decode-only bound"]
    decode["workers"] = NPROC
    sweep = [dict(rows[f"convert --workers {w}"], workers=w) for w in sweep_workers]
    conv1, conv_all = rows["convert --workers 1"], rows[f"convert --workers {NPROC}"]
    run = rows["run (kfp.local)"]
    ratios = {
        "convert_all_over_decode_bound": round(conv_all["images_per_s"] / decode["images_per_s"], 3),
        "convert_1_over_decode_bound": round(conv1["images_per_s"] / decode["images_per_s"], 3),
        "run_over_convert": round(run["wall_s"] / conv_all["wall_s"], 3),
        "run_one_task_per_split_over_convert": round(rows["run, one task per split"]["wall_s"] / conv_all["wall_s"], 3),
        "convert_scaling_all_over_1": round(conv1["wall_s"] / conv_all["wall_s"], 3),
        # CPU time is less disturbed than wall time by other work on a shared machine.
        "decode_cpu_over_convert_all_cpu": round(decode["cpu_s"] / conv_all["cpu_s"], 3),
        "run_minus_convert_s": round(run["wall_s"] - conv_all["wall_s"], 2),
    }
    if "naive TF baseline" in rows:
        base = rows["naive TF baseline"]
        ratios["baseline_over_convert_all"] = round(base["wall_s"] / conv_all["wall_s"], 3)
        ratios["baseline_over_convert_1"] = round(base["wall_s"] / conv1["wall_s"], 3)
    worker_rss = [r["worker_peak_rss_mb"] for r in rss] + [
        r["peak_rss_children_mb"] for r in sweep if r["peak_rss_children_mb"] is not None
    ]
    rss_spread = max(r["worker_peak_rss_mb"] for r in rss) - min(r["worker_peak_rss_mb"] for r in rss)
    checks = {
        f"convert {NPROC} workers >= {TARGETS['decode_fraction']} x decode bound": {
            "value": ratios["convert_all_over_decode_bound"],
            "holds": ratios["convert_all_over_decode_bound"] >= TARGETS["decode_fraction"],
        },
        f"run within {TARGETS['run_over_convert']} x convert": {
            "value": ratios["run_over_convert"],
            "holds": ratios["run_over_convert"] <= TARGETS["run_over_convert"],
        },
        f"peak RSS per worker <= {TARGETS['worker_rss_mb']:.0f} MB": {
            "value": max(worker_rss),
            "holds": max(worker_rss) <= TARGETS["worker_rss_mb"],
        },
        "worker RSS flat in class size (spread <= 10 MB)": {"value": round(rss_spread, 1), "holds": rss_spread <= 10},
    }
    if "baseline_over_convert_all" in ratios:
        checks[f"convert >= {TARGETS['baseline_speedup']:.0f}x faster than the naive baseline"] = {
            "value": ratios["baseline_over_convert_all"],
            "holds": ratios["baseline_over_convert_all"] >= TARGETS["baseline_speedup"],
            "applies": size == "full",
        }

    result = {
        "size": size,
        "counts": SIZES[size],
        "images": images,
        "repeat": repeat,
        "machine": info,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "rows": list(rows.values()),
        "ratios": ratios,
        "checks": checks,
        "kfp_local_per_task": {"runs": per_task, "seconds_per_task": round(task_overhead, 3)},
        "rss_vs_class_size": rss,
        "large_images": {"per_image": costs, "convert": [_pick(r) for r in large_rows]},
        "imports_s": imports,
        "assumed": ASSUMED,
        "imagenet": IMAGENET,
        "cost_model": model,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    title = f"{size}: {images} JPEGs of 64x64, {NPROC} cores of {info['cpu']}, best of {repeat}"
    plot(png_path, sweep, decode, rows.get("naive TF baseline"), title)
    shutil.rmtree(OUT, ignore_errors=True)
    print()
    print(report(result))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


def _pick(row: dict) -> dict:
    keep = ("images", "wall_s", "images_per_s", "peak_rss_mb", "peak_rss_children_mb")
    return {k: row[k] for k in keep}


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def report(result: dict) -> str:
    """The results as Markdown tables (printed, and pasted into benchmarks/README.md)."""
    lines = [
        f"{result['size']}: {result['images']} images ({result['counts']}), best of {result['repeat']}, "
        f"{result['machine']['nproc']} cores, load at start {result['machine']['load_average_at_start']}",
        "",
        "| measurement | wall s | images/s | in-process s | CPU us/image | peak RSS MB (largest / children) | procs "
        "| other load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        inner = "-" if r["inner_s"] is None else f"{r['inner_s']:.2f}"
        lines.append(
            f"| {r['name']} | {r['wall_s']:.2f} | {r['images_per_s']:.0f} | {inner} | {r['cpu_us_per_image']:.0f} | "
            f"{_mb(r['peak_rss_mb'])} / {_mb(r['peak_rss_children_mb'])} | {r['processes']} | "
            f"{r['other_cores']:.2f} |"
        )
    lines += ["", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in result["ratios"].items()]
    lines += ["", "| target | value | holds |", "| --- | ---: | --- |"]
    for k, c in result["checks"].items():
        holds = ("yes" if c["holds"] else "NO") + ("" if c.get("applies", True) else " (applies to full size)")
        lines.append(f"| {k} | {c['value']} | {holds} |")
    kt, rss = result["kfp_local_per_task"], result["rss_vs_class_size"]
    lines += [
        "",
        f"kfp.local: {kt['seconds_per_task']:.2f} s per extra task "
        + ", ".join(f"({v['tasks']} tasks: {v['wall_s']:.2f} s)" for v in kt["runs"].values()),
        "worker peak RSS by class size: "
        + ", ".join(f"{r['class_images']} images: {_mb(r['worker_peak_rss_mb'])} MB" for r in rss),
    ]
    pi, m = result["large_images"]["per_image"], result["cost_model"]
    lines += [
        f"400x350 JPEGs ({pi['mean_jpeg_kb']} KB mean), per image on one core: read {pi['read_us']} us, "
        f"decode {pi['decode_us']} us, encode+frame {pi['encode_frame_us']} us, write {pi['write_us']} us, "
        f"total {pi['total_us']} us",
        "imports (best wall s): " + ", ".join(f"{k} {v}" for k, v in result["imports_s"].items()),
        "",
        f"cost model, full ImageNet ({m['images']} images, {m['shards']} shards, {m['input_gb']} GB of JPEGs in, "
        f"{m['output_gb']} GB of records out): a {result['assumed']['pod_cpus']}-CPU pod converts "
        f"{m['pod_cpu_images_per_s']} images/s on CPU, moves {m['pod_network_images_per_s']} images/s at "
        f"{result['assumed']['pod_network_mb_s']:.0f} MB/s, so {m['pod_images_per_s']} ({m['bound']}-bound); "
        f"{m['shard_s']} s per shard, task start-up {m['task_start_s']} s, {m['cpu_core_hours']} CPU core-hours",
        "",
        "| pods | shards_per_task | tasks | task s | start-up share | makespan min | pods busy | pod-hours |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in m["table"]:
        lines.append(
            f"| {t['pods']} | {t['shards_per_task']} | {t['tasks']} | {t['task_s']} | "
            f"{t['startup_share']:.0%} | {t['makespan_min']} | {t['pods_busy']} | {t['pod_hours']} |"
        )
    lines.append(f"\nbenchmark took {result['bench_seconds']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
