"""Merge per-shard statistics into the files that describe the converted dataset, and the run's
throughput and metrics (``run_metrics``: a Kubeflow Metrics artifact's numbers) derived from them.

Written under the output root:

- ``sizes.txt``: ``train,N\\nval,N\\ntest,N`` (records per split)
- ``labels.txt``: ``wnid<TAB>words`` per line; the line index is the label
- ``dataset_info.json`` (``conversion_info.json`` in the tfds format, beside TFDS's metadata files
  ``dataset_info.json``, ``features.json`` and ``label.labels.txt``): per split the shard files
  with their record counts, bytes, index files and the SHA-256 of each shard and index, what was
  found, rejected, skipped, converted and re-encoded, and the class distribution; the resize, if any
- ``rejects.tsv``: ``path<TAB>reason`` for every input that did not become a record (a backslash, tab,
  newline or carriage return in either is written ``\\\\``, ``\\t``, ``\\n``, ``\\r``)
"""

from __future__ import annotations

import json
from collections import Counter

from . import formats
from .fs import Location, excerpt
from .image import fixed_size, resize_of
from .plan import SPLITS, Plan

DEFAULT_MAX_REJECT_FRACTION = 0.01
INFO_FILE = "dataset_info.json"
TFDS_INFO_FILE = "conversion_info.json"


class TooManyRejects(RuntimeError):
    """More inputs were rejected than the run allows; the reports are written regardless."""


class IncompleteConversion(RuntimeError):
    """Statistics are missing for some planned shards."""


def summarize(plan: Plan, shard_stats: list[dict], options: dict | None = None) -> dict:
    """Build dataset_info from the plan and every shard's statistics."""
    by_file = {s["file"]: s for s in shard_stats}
    fmt = (options or {}).get("format", formats.SEED)
    planned = [formats.shard_file(s, fmt, plan.data) for s in plan.shards]
    missing = [f for f in planned if f not in by_file]
    if missing:
        raise IncompleteConversion(f"no statistics for {len(missing)} of {len(planned)} shards, e.g. {missing[0]}")
    splits = {}
    for split in SPLITS:
        mine = [by_file[f] for f, shard in zip(planned, plan.shards, strict=True) if shard.split == split]
        labels: Counter = Counter()
        converted: Counter = Counter()
        reencoded: Counter = Counter()
        box_counts: Counter = Counter()
        shapes: Counter = Counter()
        for s in mine:
            labels.update({int(k): v for k, v in s["labels"].items()})
            converted.update(s["converted"])
            reencoded.update(s.get("reencoded", {}))
            box_counts.update(s.get("boxes", {}))
            shapes.update(s["shapes"])
        split_info = {
            "num_records": sum(s["records"] for s in mine),
            "num_bytes": sum(s["bytes"] for s in mine),
            "shards": [_shard_entry(s) for s in mine],
            "found": sum(s["found"] for s in mine),
            "rejected": sum(len(s["rejected"]) for s in mine),
            "skipped": sum(len(s["skipped"]) for s in mine),
            "converted": dict(sorted(converted.items())),
            "reencoded": dict(sorted(reencoded.items())),
            "boxes": {k: box_counts[k] for k in ("given", "clipped", "dropped")},
            "shapes": dict(sorted(shapes.items())),
            "label_counts": {str(k): labels[k] for k in sorted(labels)},
            "seconds": round(sum(s.get("seconds", 0.0) for s in mine), 3),
            # not inputs: files and folders every layout ignores by name (.DS_Store, Thumbs.db...)
            "ignored": plan.ignored.get(split, 0),
        }
        if split_info["found"] != split_info["num_records"] + split_info["rejected"] + split_info["skipped"]:
            raise AssertionError(f"{split}: counts do not reconcile: {split_info}")
        splits[split] = split_info
    # Rejected inputs (files, stray directories) count towards "found"; problems (a class
    # directory with no images) are listed beside them but are not inputs.
    rejects = list(plan.rejects) + [r for s in shard_stats for r in s["rejected"]]
    problems = list(plan.problems)
    found = sum(v["found"] for v in splits.values()) + len(plan.rejects)
    resize = resize_of(options or {})
    return {
        "name": plan.data.rstrip("/").rsplit("/", 1)[-1],  # the dataset folder's name
        "layout": plan.layout,
        "source": plan.data,
        "num_classes": len(plan.classes),
        "format": fmt,
        "train_order": plan.train_order,
        "train_shards": plan.train_shard_count,
        "features": {k: f"{kind}: {meaning}" for k, (kind, meaning) in formats.schema(fmt, plan.boxes).items()},
        "options": options or {},
        # what size the images were made: {"mode": "squash" or "center-crop", "width", "height"} or
        # {"mode": "shorter-side", "shorter_side"}; None: each image kept its own size
        "resize": resize.record() if resize else None,
        "splits": splits,
        "found": found,
        "rejected": len(rejects),
        "rejects": sorted(rejects, key=lambda r: r["path"]),
        "problems": sorted(problems, key=lambda r: r["path"]),
        "skipped": sorted((r for s in shard_stats for r in s["skipped"]), key=lambda r: r["path"]),
        "warnings": plan.warnings,
    }


def _shard_entry(s: dict) -> dict:
    """A shard in dataset_info.json: its file, records, bytes, index, and the SHA-256 of shard and index."""
    entry = {"file": s["file"], "records": s["records"], "bytes": s["bytes"], "index": s["index"]}
    for key in ("sha256", "index_sha256"):
        if key in s:
            entry[key] = s[key]
    return entry


def sizes_text(info: dict) -> str:
    return "\n".join(f"{split},{info['splits'][split]['num_records']}" for split in SPLITS)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_field(text: str) -> str:
    """A rejects.tsv field: backslash, tab, newline and carriage return written as \\\\, \\t, \\n and
    \\r, so every line is one path and its reason whatever the file names hold."""
    return text.translate(_TSV_ESCAPES)


def rejects_text(info: dict) -> str:
    listed = sorted(info["rejects"] + info.get("problems", []), key=lambda r: r["path"])
    return "".join(f"{tsv_field(r['path'])}\t{tsv_field(r['reason'])}\n" for r in listed)


def info_file(fmt: str) -> str:
    """The name of this project's accounting file: ``dataset_info.json``, but ``conversion_info.json``
    in the tfds format, whose output root holds TFDS's own ``dataset_info.json``."""
    return TFDS_INFO_FILE if fmt == formats.TFDS else INFO_FILE


def report_files(fmt: str) -> list[str]:
    """The files besides shards that a conversion in format ``fmt`` writes in the output root."""
    tfds = ["features.json", "label.labels.txt", INFO_FILE] if fmt == formats.TFDS else []
    return ["labels.txt", "rejects.tsv", info_file(fmt), "sizes.txt", "report.html", *tfds]


def read_info(out: Location) -> dict | None:
    """The accounting of the conversion under ``out``, or None: ``dataset_info.json`` when it is
    this project's (TFDS's has a list of splits), else ``conversion_info.json`` when it exists."""
    for name in (INFO_FILE, TFDS_INFO_FILE):
        loc = out.child(name)
        if loc.exists():
            try:
                info = json.loads(loc.read_text())
            except ValueError as e:  # (UnicodeDecodeError too)
                raise IncompleteConversion(f"{loc.url}: damaged, not JSON ({e}); convert again") from None
            if isinstance(info, dict) and isinstance(info.get("splits"), dict):
                return info
    return None


def write_reports(plan: Plan, info: dict, out_url: str) -> None:
    out = Location.of(out_url)
    out.child("labels.txt").write_text(plan.labels_text())
    out.child("rejects.tsv").write_text(rejects_text(info))
    out.child(info_file(info.get("format", formats.SEED))).write_text(json.dumps(info, indent=1) + "\n")
    out.child("sizes.txt").write_text(sizes_text(info))  # last: its presence means "done"


def write_tfds_metadata(plan: Plan, info: dict, out_url: str) -> None:
    """TFDS's metadata of a tfds-format output: ``dataset_info.json`` (the splits' shard lengths and
    bytes), ``features.json`` and ``label.labels.txt`` (the class ids), so that
    ``tfds.builder_from_directory(out_url)`` reads it. Splits without shards are left out."""
    out = Location.of(out_url)
    splits = [
        {
            "name": split,
            "filepathTemplate": formats.TFDS_TEMPLATE,
            "numBytes": str(s["num_bytes"]),
            "shardLengths": [str(shard["records"]) for shard in s["shards"]],
        }
        for split, s in info["splits"].items()
        if s["shards"]
    ]
    tfds_info = {
        "name": formats.tfds_name(plan.data),
        "version": formats.TFDS_VERSION,
        "fileFormat": "tfrecord",
        "description": f"{info['name']} ({plan.layout} layout) converted by imagenet-tfrecords; see {TFDS_INFO_FILE}",
        "splits": splits,
        "supervisedKeys": {"tuple": {"items": [{"featureKey": "image"}, {"featureKey": "label"}]}},
    }
    out.child("label.labels.txt").write_text("".join(f"{wnid}\n" for wnid in plan.wnids))
    features = formats.tfds_features(len(plan.wnids), fixed_size(info.get("resize")))
    out.child("features.json").write_text(json.dumps(features, indent=1) + "\n")
    out.child(INFO_FILE).write_text(json.dumps(tfds_info, indent=1) + "\n")


def over_rejects(info: dict, max_reject_fraction: float) -> str | None:
    """``12 of 100 inputs rejected (12.0%), above the allowed 1.0%`` when the rejected share of inputs
    exceeds the limit, else None."""
    found, rejected = info["found"], info["rejected"]
    if not (found and rejected / found > max_reject_fraction):
        return None
    return (
        f"{rejected} of {found} inputs rejected ({rejected / found:.1%}), above the allowed {max_reject_fraction:.1%}"
    )


def check_rejects(info: dict, max_reject_fraction: float) -> None:
    """Raise TooManyRejects when the rejected share of inputs exceeds the limit; the message names
    the option and parameter that set it and the commonest reasons."""
    over = over_rejects(info, max_reject_fraction)
    if over:
        reasons = Counter(r["reason"] for r in info.get("rejects", []))
        top = "; ".join(f"{n} \u00d7 {excerpt(reason, 80)[1:-1]}" for reason, n in reasons.most_common(3))
        more = f"; {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
        raise TooManyRejects(
            f"{over} (--max-reject-fraction, pipeline parameter max_reject_fraction); top reasons: {top}{more}; "
            "see rejects.tsv"
        )


def throughput(info: dict) -> dict:
    """Records, summed shard seconds, images/s per worker and, when known, over the last run's wall
    time: the records that run converted (a resumed shard was converted earlier), not all records."""
    records = sum(s["num_records"] for s in info["splits"].values())
    seconds = sum(s.get("seconds", 0.0) for s in info["splits"].values())
    out = {"records": records, "shard_seconds": round(seconds, 3)}
    if seconds > 0:
        out["images_per_second_per_worker"] = round(records / seconds, 1)
    run = info.get("run", {})
    if run.get("wall_seconds"):
        out["wall_seconds"] = run["wall_seconds"]
        out["shards_resumed"] = run["shards_resumed"]
        if run["records_converted"]:
            out["images_per_second"] = round(run["records_converted"] / run["wall_seconds"], 1)
    return out


def run_metrics(info: dict) -> dict[str, float]:
    """The numbers a Kubeflow Metrics artifact shows for a finished conversion."""
    m: dict[str, float] = {}
    for split, s in info["splits"].items():
        m[f"{split}_records"] = s["num_records"]
        m[f"{split}_rejected"] = s["rejected"]
        m[f"{split}_skipped"] = s["skipped"]
    m["records_total"] = sum(s["num_records"] for s in info["splits"].values())
    m["rejected_total"] = info["rejected"]
    m["skipped_total"] = sum(s["skipped"] for s in info["splits"].values())
    m["converted_to_rgb"] = sum(sum(s["converted"].values()) for s in info["splits"].values())
    m["bytes_total"] = sum(s["num_bytes"] for s in info["splits"].values())
    t = throughput(info)
    for key in ("shard_seconds", "images_per_second_per_worker", "wall_seconds", "images_per_second"):
        if key in t:
            m[key] = t[key]
    return m
