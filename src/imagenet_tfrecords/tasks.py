"""The work of each pipeline step, on plain paths and values (no kfp here).

The Kubeflow components in ``components/`` are thin wrappers that pass their artifact paths
to these functions, so every step can be run and tested without an orchestrator.
"""

from __future__ import annotations

import json
import os
import time

from . import stats
from .convert import Options, convert
from .fs import Location
from .layout import build_plan, labels_text, work_items


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def plan_step(
    data_url: str, shard_size: int, shards_per_task: int, plan_path: str, labels_path: str
) -> tuple[list, dict]:
    """Plan the conversion; write plan.json and labels.txt; return (work items, summary)."""
    plan = build_plan(data_url, shard_size=int(shard_size))
    _write(plan_path, json.dumps(plan))
    _write(labels_path, labels_text(plan))
    items = work_items(plan, int(shards_per_task))
    summary = {
        "classes": len(plan["classes"]),
        "shards": len(plan["shards"]),
        "tasks": len(items),
        "rejects": len(plan["rejects"]),
        "warnings": len(plan["warnings"]),
    }
    for w in plan["warnings"]:
        print(f"warning: {w}")
    return items, summary


def convert_step(
    plan_path: str, item: dict, output_url: str, options: Options, workers: int, manifest_path: str
) -> dict:
    """Convert one work item's shards; write their statistics to ``manifest_path``."""
    plan = _read_json(plan_path)
    shard_ids = [int(i) for i in item["shards"]]  # kfp.local hands numbers back as floats
    started = time.time()
    results = convert(plan, shard_ids, output_url, options, workers=int(workers))
    finished = time.time()
    for r in results:  # the task's wall-clock window, for the run's overall throughput
        r["task_started"], r["task_finished"] = started, finished
    _write(manifest_path, json.dumps(results, sort_keys=True))
    return {
        "records": sum(r["records"] for r in results),
        "bytes": sum(r["bytes"] for r in results),
        "rejected": sum(len(r["rejected"]) for r in results),
        "shards": [r["file"] for r in results],
        "root": Location.of(output_url).url,
    }


def aggregate_step(
    plan_path: str,
    manifest_paths: list[str],
    output_url: str,
    options: Options,
    max_reject_fraction: float,
    dataset_dir: str,
    sizes_path: str,
) -> dict:
    """Merge the manifests, write the reports under ``output_url`` and into the artifacts."""
    plan = _read_json(plan_path)
    results = [r for p in manifest_paths for r in _read_json(p)]
    info = stats.summarize(plan, results, vars(options))
    info["root"] = Location.of(output_url).url
    windows = [(r["task_started"], r["task_finished"]) for r in results if "task_started" in r]
    if windows and len(windows) == len(results):
        # First conversion task start to last task end (pods' clocks, so roughly).
        info["wall_seconds"] = round(max(w[1] for w in windows) - min(w[0] for w in windows), 3)
    stats.write_reports(plan, info, output_url)
    # The Dataset artifact describes the TFRecords under output_url (dataset_info.json names
    # the shards relative to its "root"), so the next step can read them with reader.load().
    stats.write_reports(plan, info, dataset_dir)
    _write(sizes_path, stats.sizes_text(info))
    stats.check_rejects(info, float(max_reject_fraction))
    return info
