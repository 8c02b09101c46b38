"""Running one measurement: a subprocess, its wall and CPU time, the peak RSS of its tree (/proc), other load.

``Bench`` runs commands, checks what they printed and keeps the fastest run of each as a result row.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from data import OUT, ROOT

PY = sys.executable
CLI = [PY, "-m", "imagenet_tfrecords"]
NPROC = len(os.sched_getaffinity(0))
POLL_S = 0.05  # each poll of /proc costs about a millisecond of CPU: a few per cent of one core


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


def _poll_peaks(root: int, peaks: dict[int, dict]) -> None:
    """Update ``peaks`` (pid -> pid, kb, cmd, root) with the VmHWM of every process of the tree of ``root``."""
    for pid in _tree(root):
        cmdline = _cmdline(pid)  # before the peak: an exec in between then only lowers the reading
        kb = _peak_kb(pid)
        if kb is None:
            continue
        seen = peaks.setdefault(pid, {"pid": pid, "kb": 0, "cmd": cmdline, "root": pid == root})
        if cmdline != seen["cmd"]:  # exec'd since (fork, then exec): the parent's pages are gone
            seen.update(cmd=cmdline, kb=0)
        seen["kb"] = max(seen["kb"], kb)


def run_measured(cmd: list) -> dict:
    """Run ``cmd``; return wall time, CPU time, stdout and the peak RSS of every process of its tree."""
    log, stdout = OUT / "last-stderr.txt", OUT / "last-stdout.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    peaks: dict[int, dict] = {}
    busy_before, (self_before, kids_before) = _busy_cpu_s(), _own_cpu_s()
    with open(log, "w") as err, open(stdout, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        while proc.poll() is None:
            _poll_peaks(proc.pid, peaks)
            time.sleep(POLL_S)
        wall = time.perf_counter() - started
    # Children: every waited-for descendant, pool workers too. Whatever else the machine did meanwhile
    # is other work, which slows the measurement down.
    busy_after, (self_after, kids_after) = _busy_cpu_s(), _own_cpu_s()
    cpu = kids_after - kids_before
    other = (busy_after - busy_before) - cpu - (self_after - self_before)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
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


def _images_and_inner_s(name: str, kind: str, stdout: str, expected: int) -> tuple[int, float | None]:
    """Images processed and the time the program reported itself, from what it printed."""
    if kind in ("decode", "baseline"):  # one JSON line
        got = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
        return got["images"], got["seconds"]
    if kind in ("convert", "run"):  # "<N> records converted; wall time of the whole run <S> s (...)"
        m = re.search(r"^(\d+) records converted; wall time of the whole run ([\d.]+) s \(", stdout, re.M)
        if not m or int(m.group(1)) != expected:
            raise RuntimeError(f"{name}: expected {expected} records, got:\n{stdout}")
        return expected, float(m.group(2))
    return expected, None


def _shard_bytes(out: Path) -> int:
    """Bytes of the TFRecord shards under ``out`` (any format's names; indexes and ``_work/`` left out)."""
    shards = [f for f in out.rglob("*.tfrecord*") if "_work" not in f.relative_to(out).parts]
    return sum(f.stat().st_size for f in shards if f.is_file() and not f.name.endswith(".idx"))


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


class Bench:
    """The result rows of one benchmark run, by name; each the fastest run of its command."""

    def __init__(self, images: int):
        self.images = images  # expected by default
        self.rows: dict[str, dict] = {}

    def measure(self, name: str, cmd: list, *, kind: str, out: Path | None = None, images: int | None = None):
        """Run once more; keep the fastest run of each name (noise on a shared machine only adds time)."""
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)  # convert resumes finished shards: start from nothing
        m = run_measured(cmd)
        shard_bytes = _shard_bytes(out) if out is not None else None
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        n, inner = _images_and_inner_s(name, kind, m["stdout"], images or self.images)
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
            "shard_bytes": shard_bytes,
            "peak_rss_mb": _r(m["peak_rss_mb"]),
            "peak_rss_root_mb": _r(m["peak_rss_root_mb"]),
            "peak_rss_children_mb": _r(m["peak_rss_children_mb"]),
            "processes": m["processes"],
            "other_cores": round(m["other_cores"], 2),
        }
        print(f"  {name:<28} {row['wall_s']:8.2f} s  {row['images_per_s']:9.0f} img/s", flush=True)
        return self._keep_fastest(row)

    def _keep_fastest(self, row: dict) -> dict:
        old = self.rows.get(row["name"])
        row["runs"] = (old["runs"] if old else []) + [row["wall_s"]]
        if old is None or row["wall_s"] < old["wall_s"]:
            self.rows[row["name"]] = row
        else:
            old["runs"] = row["runs"]
        return self.rows[row["name"]]


def machine() -> dict:
    """The CPU, memory, Python and kernel, and the load average now."""
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
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
