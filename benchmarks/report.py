"""What the rows mean: ratios, the targets, the Markdown tables (printed, pasted into README.md), the plot."""

from __future__ import annotations

from pathlib import Path

from measure import NPROC

TARGETS = {
    "decode_fraction": 0.6,
    "baseline_speedup": 4.0,
    "run_over_convert": 1.15,
    "worker_rss_mb": 250.0,
    "mixed_over_per_class": 1.25,
    "tf_models_over_decode": 1.0,
    "tf_models_bytes_over_seed": 0.25,
    "resize_over_decode": 0.95,
    "seed_over_decode_large": 0.85,
}
BASELINE = "naive TF baseline"
PER_CLASS = f"convert --workers {NPROC}, per-class train shards"
TF_MODELS = f"convert --format tf-models --workers {NPROC}"
DECODE_LARGE, TF_MODELS_LARGE = "decode-only bound, 400x350", f"convert --format tf-models 400x350, {NPROC} workers"
RESIZE_LARGE = f"convert --resize 64x64 400x350, {NPROC} workers"
RESIZE32_LARGE = f"convert --resize 32x32 400x350, {NPROC} workers"
SEED_LARGE = f"convert 400x350, {NPROC} workers"


def ratios(rows: dict[str, dict]) -> dict:
    decode, run = rows["decode-only bound"], rows["run (kfp.local)"]
    conv1, conv_all = rows["convert --workers 1"], rows[f"convert --workers {NPROC}"]
    got = {
        "convert_all_over_decode_bound": round(conv_all["images_per_s"] / decode["images_per_s"], 3),
        "convert_1_over_decode_bound": round(conv1["images_per_s"] / decode["images_per_s"], 3),
        "run_over_convert": round(run["wall_s"] / conv_all["wall_s"], 3),
        "run_one_task_per_split_over_convert": round(rows["run, one task per split"]["wall_s"] / conv_all["wall_s"], 3),
        "convert_scaling_all_over_1": round(conv1["wall_s"] / conv_all["wall_s"], 3),
        # CPU time is less disturbed than wall time by other work on a shared machine.
        "decode_cpu_over_convert_all_cpu": round(decode["cpu_s"] / conv_all["cpu_s"], 3),
        "run_minus_convert_s": round(run["wall_s"] - conv_all["wall_s"], 2),
        "mixed_over_per_class": round(conv_all["wall_s"] / rows[PER_CLASS]["wall_s"], 3),
    }
    if TF_MODELS in rows:
        tf_models = rows[TF_MODELS]
        got["tf_models_over_decode_bound"] = round(tf_models["images_per_s"] / decode["images_per_s"], 3)
        got["tf_models_bytes_over_seed"] = round(tf_models["shard_bytes"] / conv_all["shard_bytes"], 3)
    if TF_MODELS_LARGE in rows:  # the same target on ImageNet-sized JPEGs, where the decode dominates
        got["tf_models_over_decode_bound_400x350"] = round(
            rows[TF_MODELS_LARGE]["images_per_s"] / rows[DECODE_LARGE]["images_per_s"], 3
        )
    for name, key in ((RESIZE_LARGE, "resize_64"), (RESIZE32_LARGE, "resize_32"), (SEED_LARGE, "seed")):
        if name in rows and DECODE_LARGE in rows:  # against the decode of the same images at full size
            got[f"{key}_over_decode_bound_400x350"] = round(
                rows[name]["images_per_s"] / rows[DECODE_LARGE]["images_per_s"], 3
            )
    if BASELINE in rows:
        got["baseline_over_convert_all"] = round(rows[BASELINE]["wall_s"] / conv_all["wall_s"], 3)
        got["baseline_over_convert_1"] = round(rows[BASELINE]["wall_s"] / conv1["wall_s"], 3)
    return got


def _check(value: float, holds: bool, **more) -> dict:
    return {"value": value, "holds": holds, **more}


def checks(ratio: dict, rss: list[dict], sweep: list[dict], size: str) -> dict:
    """Each target: its value and whether it holds."""
    by_class = [r["worker_peak_rss_mb"] for r in rss]
    worker_rss = max(by_class + [r["peak_rss_children_mb"] for r in sweep if r["peak_rss_children_mb"] is not None])
    spread = max(by_class) - min(by_class)
    decode, run = ratio["convert_all_over_decode_bound"], ratio["run_over_convert"]
    mixed = ratio["mixed_over_per_class"]
    got = {
        f"mixed train shards within {TARGETS['mixed_over_per_class']} x per-class": _check(
            mixed, mixed <= TARGETS["mixed_over_per_class"]
        ),
        f"convert {NPROC} workers >= {TARGETS['decode_fraction']} x decode bound": _check(
            decode, decode >= TARGETS["decode_fraction"]
        ),
        f"run within {TARGETS['run_over_convert']} x convert": _check(run, run <= TARGETS["run_over_convert"]),
        f"peak RSS per worker <= {TARGETS['worker_rss_mb']:.0f} MB": _check(
            worker_rss, worker_rss <= TARGETS["worker_rss_mb"]
        ),
        "worker RSS flat in class size (spread <= 10 MB)": _check(round(spread, 1), spread <= 10),
    }
    if "tf_models_over_decode_bound" in ratio:
        fast, small = ratio["tf_models_over_decode_bound"], ratio["tf_models_bytes_over_seed"]
        name = f"convert --format tf-models >= {TARGETS['tf_models_over_decode']} x decode bound"
        got[name] = _check(fast, fast >= TARGETS["tf_models_over_decode"])
        name = f"tf-models shards <= {TARGETS['tf_models_bytes_over_seed']} x seed's bytes"
        got[name] = _check(small, small <= TARGETS["tf_models_bytes_over_seed"])
    if "tf_models_over_decode_bound_400x350" in ratio:
        large = ratio["tf_models_over_decode_bound_400x350"]
        name = f"convert --format tf-models >= {TARGETS['tf_models_over_decode']} x decode bound, 400x350 JPEGs"
        got[name] = _check(large, large >= TARGETS["tf_models_over_decode"])
    for size in (64, 32):
        if f"resize_{size}_over_decode_bound_400x350" in ratio:
            resized = ratio[f"resize_{size}_over_decode_bound_400x350"]
            name = (
                f"convert --resize {size}x{size} >= {TARGETS['resize_over_decode']} x full-size decode bound, 400x350"
            )
            got[name] = _check(resized, resized >= TARGETS["resize_over_decode"])
    if "seed_over_decode_bound_400x350" in ratio:
        seed = ratio["seed_over_decode_bound_400x350"]
        name = f"convert (seed, full size) >= {TARGETS['seed_over_decode_large']} x decode bound, 400x350 JPEGs"
        got[name] = _check(seed, seed >= TARGETS["seed_over_decode_large"])
    if "baseline_over_convert_all" in ratio:
        speedup = ratio["baseline_over_convert_all"]
        name = f"convert >= {TARGETS['baseline_speedup']:.0f}x faster than the naive baseline"
        got[name] = _check(speedup, speedup >= TARGETS["baseline_speedup"], applies=size == "full")
    return got


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _rows_table(result: dict) -> list[str]:
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
    return lines


def _ratio_tables(result: dict) -> list[str]:
    lines = ["", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in result["ratios"].items()]
    lines += ["", "| target | value | holds |", "| --- | ---: | --- |"]
    for k, c in result["checks"].items():
        holds = ("yes" if c["holds"] else "NO") + ("" if c.get("applies", True) else " (applies to full size)")
        lines.append(f"| {k} | {c['value']} | {holds} |")
    return lines


def _notes(result: dict) -> list[str]:
    kt, rss, pi = result["kfp_local_per_task"], result["rss_vs_class_size"], result["large_images"]["per_image"]
    return [
        "",
        f"kfp.local: {kt['seconds_per_task']:.2f} s per extra task "
        + ", ".join(f"({v['tasks']} tasks: {v['wall_s']:.2f} s)" for v in kt["runs"].values()),
        "worker peak RSS by class size: "
        + ", ".join(f"{r['class_images']} images: {_mb(r['worker_peak_rss_mb'])} MB" for r in rss),
        f"400x350 JPEGs ({pi['mean_jpeg_kb']} KB mean), per image on one core: convert_shard {pi['total_us']} us, "
        f"of which decode {pi['decode_us']} us and everything else {pi['other_us']} us",
        "imports (best wall s): " + ", ".join(f"{k} {v}" for k, v in result["imports_s"].items()),
    ]


def _cost_model_table(result: dict) -> list[str]:
    m, assumed = result["cost_model"], result["assumed"]
    lines = [
        "",
        f"cost model, full ImageNet ({m['images']} images, {m['shards']} shards, {m['input_gb']} GB of JPEGs in, "
        f"{m['output_gb']} GB of records out): a {assumed['pod_cpus']}-CPU pod converts "
        f"{m['pod_cpu_images_per_s']} images/s on CPU, moves {m['pod_network_images_per_s']} images/s at "
        f"{assumed['pod_network_mb_s']:.0f} MB/s, so {m['pod_images_per_s']} ({m['bound']}-bound); "
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
    return lines


def resize_table(rows: list[dict]) -> list[str]:
    """The cost model's resize rows: full ImageNet at each setting against the full size."""
    pods = list(rows[0]["makespan_min"]) if rows else []
    lines = [
        "",
        "full ImageNet resized (seed format unless said; per-image cost and record bytes measured on the 400x350 set)",
        "",
        "| setting | CPU us/image | record bytes | output GB | pod images/s | bound | "
        + " | ".join(f"min on {p} pods" for p in pods)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | --- | " + " | ".join("---:" for _ in pods) + " |",
    ]
    for r in rows:
        minutes = " | ".join(str(r["makespan_min"][p]) for p in pods)
        lines.append(
            f"| {r['setting']} | {r['per_image_core_us']:.0f} | {r['record_bytes']:.0f} | {r['output_gb']} | "
            f"{r['pod_images_per_s']} | {r['bound']} | {minutes} |"
        )
    return lines


def report(result: dict) -> str:
    """The results as Markdown tables (printed, and pasted into benchmarks/README.md)."""
    lines = _rows_table(result) + _ratio_tables(result) + _notes(result) + _cost_model_table(result)
    lines += resize_table(result.get("resize_cost_model", []))
    return "\n".join([*lines, f"\nbenchmark took {result['bench_seconds']} s"])


def _throughput(ax, workers: list[int], sweep: list[dict], decode: dict, baseline: dict | None) -> None:
    ax.plot(workers, [r["images_per_s"] for r in sweep], "o-", label="convert (whole-process wall time)")
    ax.axhline(decode["images_per_s"], color="grey", ls="--", label=f"decode-only bound, {decode['workers']} procs")
    fraction = TARGETS["decode_fraction"]
    ax.axhline(fraction * decode["images_per_s"], color="grey", ls=":", label=f"{fraction} x decode bound")
    if baseline:
        ax.axhline(baseline["images_per_s"], color="tab:red", ls="-.", label="naive TF baseline, 1 process")
    ax.axvline(NPROC, color="black", lw=0.8, alpha=0.3, label=f"{NPROC} cores")
    ax.set_ylabel("images / s")
    ax.set_title("throughput", fontsize=10)


def _cpu_per_image(cx, workers: list[int], sweep: list[dict], decode: dict) -> None:
    cx.plot(workers, [r["cpu_us_per_image"] for r in sweep], "o-", label="convert")
    cx.axhline(decode["cpu_us_per_image"], color="grey", ls="--", label="decode-only bound")
    cx.set_ylabel("CPU microseconds / image (all processes)")
    cx.set_title("CPU time per image", fontsize=10)


def plot(path: Path, sweep: list[dict], decode: dict, baseline: dict | None, title: str) -> None:
    """Throughput against workers, and CPU time per image (less disturbed by other work on the machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [r["workers"] for r in sweep]
    fig, (ax, cx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    _throughput(ax, workers, sweep, decode, baseline)
    _cpu_per_image(cx, workers, sweep, decode)
    for a in (ax, cx):
        a.set_xlabel("convert --workers")
        a.set_xticks(workers)
        a.set_ylim(bottom=0)
        a.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
