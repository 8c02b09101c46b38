"""The work of each pipeline step, on plain paths and values (no kfp here).

The Kubeflow components (``imagenet_tfrecords_kfp.components``) are thin wrappers that pass
their artifact paths to these functions, so every step can be run and tested without an
orchestrator; ``convert_dataset`` runs the same steps in one process (``imagenet-tfrecords convert``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

from . import formats, lock, output, stats
from .convert import Options, convert, index_file, recorded_stats
from .fs import BadOutput, Location
from .image import resize_text
from .layouts import AUTO, build_plan, check_locations
from .plan import DEFAULT_SHARD_SIZE, MIXED, SLICES_DIR, Plan, read_slice, stream_slices, write_slices
from .records import INDEX_SUFFIX


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _read_plan(path: str) -> Plan:
    with open(path) as f:
        return Plan.from_json(f.read())


def claim(data_url: str, output_url: str, layout: str = AUTO) -> str:
    """Check both URLs, then claim the output (output.claim: refused unless new, empty or ours);
    return the layout's name. Nothing is written to the output before its ownership is checked, nor
    before the dataset's metadata files are found; the caller then holds the output (lock.hold)
    before it plans."""
    name = check_locations(data_url, output_url, layout)
    output.claim(output_url)
    return name


def begin_writing(plan: Plan, output_url: str, fmt: str, options: Options | None = None) -> None:
    """Mark the output incomplete and remove what earlier runs wrote there that this plan does not
    make (another plan's or format's shards and reports): a ``*.tfrecord`` glob never mixes them.

    When the earlier output was of another format or (``options`` given) another resize, its shards
    are removed even where this run writes the same names, and one line says what was removed. (The
    marker records the format and resize of the run writing the output: a resumed run keeps its own.)
    """
    shards = [formats.shard_file(s, fmt, plan.data) for s in plan.shards]
    indexes = [index_file(f) for f in shards]
    resize = options.resizing() if options is not None else None
    now = resize.record() if resize else None
    made = {"resize": now} if options is not None else {}
    earlier = _earlier_output(output_url)
    replace: list[str] = []
    if earlier is not None and (earlier[0] != fmt or (options is not None and earlier[1] != now)):
        replace = shards + indexes
    removed = output.mark_writing(output_url, shards + indexes + stats.report_files(fmt), fmt, replace, **made)
    gone = [f for f in removed if ".tfrecord" in f and not f.endswith(INDEX_SUFFIX)]
    if gone and earlier is not None and replace:
        was = f"format {earlier[0]}, {_size_words(earlier[1])}"
        this = f"format {fmt}" + (f", {_size_words(now)}" if options is not None else "")
        print(f"removed {len(gone)} shards of an earlier run ({was}): this run writes {this}")


def _size_words(resize: dict | None) -> str:
    return f"images resized to {resize_text(resize)}" if resize else "images at their own size"


def _earlier_output(output_url: str) -> tuple[str, dict | None] | None:
    """(format, resize record) of what earlier runs wrote at ``output_url``: the marker's, when it
    records them, else the dataset_info.json's of a completed run; None when neither says."""
    out = Location.of(output_url)
    marker = output.read_marker(out) or {}
    if marker.get("format") and "resize" in marker:
        return marker["format"], marker["resize"]
    try:
        info = stats.read_info(out)
    except stats.IncompleteConversion:
        return None
    return (formats.of_info(info), info.get("resize")) if info is not None else None


def plan_step(
    data_url: str,
    output_url: str,
    shard_size: int,
    max_tasks: int,
    plan_path: str,
    labels_path: str,
    layout: str = AUTO,
    train_order: str = MIXED,
    train_shards: int = 0,
    options: Options | dict | None = None,
    take_over_lease: bool = False,
    workers: int = 0,
    max_reject_fraction: float = stats.DEFAULT_MAX_REJECT_FRACTION,
) -> tuple[list, dict]:
    """Check every parameter, both URLs, claim the output, plan the conversion, mark the output
    incomplete (removing what earlier runs wrote and this plan does not make, see begin_writing);
    write plan.json, labels.txt and each task's slice (``<output_url>/_work/plan/``); return (task
    numbers, summary).

    The conversion's ``options`` (convert.Options, or its fields by name as a pipeline passes them),
    ``output_url``, ``workers`` (processes per conversion task) and ``max_reject_fraction`` enter
    here, once, and travel in plan.json: convert_step and aggregate_step read them from the plan.
    Every parameter is checked first by its command-line option's parser (arguments.check_parameters:
    a bad one raises ParameterError with the command line's message), before anything is written or
    fanned out.

    ``layout`` names the dataset's layout (layouts.LAYOUTS) or is "auto": detect it (the summary
    says which). ``train_order`` "mixed" (``train_shards`` shards, 0: about 1,000 records each)
    or "per-class".

    plan.json holds every shard's name and size and, under "tasks", the shard ids each conversion
    task writes; the shards' sources are in the tasks' slices. The fan-out passes only a task's
    number, so no step's input grows with the dataset.
    """
    from .arguments import check_parameters

    given = asdict(options) if isinstance(options, Options) else dict(options or {})
    values = check_parameters(
        {
            **given,
            "layout": layout,
            "shard_size": shard_size,
            "max_tasks": max_tasks,
            "train_order": train_order,
            "train_shards": train_shards,
            "workers": workers,
            "max_reject_fraction": max_reject_fraction,
        }
    )
    options = Options(**{k: values[k] for k in Options.__dataclass_fields__ if k in values})
    formats.check_file_names(options.format, data_url)  # (before any work)
    name = claim(data_url, output_url, values["layout"])
    # The run's lease stays when planning succeeds: the conversion tasks of this run join it.
    with lock.hold(output_url, take_over=bool(take_over_lease), keep=True) as writer:
        plan = build_plan(
            data_url,
            layout=name,
            shard_size=values["shard_size"],
            train_order=values["train_order"],
            train_shards=values["train_shards"],
        )
        plan.run = writer.run
        carry(plan, output_url, options, values["workers"], values["max_reject_fraction"])
        begin_writing(plan, output_url, options.format, options)
        write_slices(plan, output_url, values["max_tasks"])
        writer.check()
    _write(plan_path, plan.to_json())
    _write(labels_path, plan.labels_text())
    summary = {
        "layout": plan.layout,
        "classes": len(plan.classes),
        "shards": len(plan.shards),
        "train_order": plan.train_order,
        "train_shards": plan.train_shard_count,
        "tasks": len(plan.tasks),
        "rejects": len(plan.rejects),
        "warnings": len(plan.warnings),
        "format": options.format,
    }
    for w in plan.warnings:
        print(f"warning: {w}")
    return list(range(len(plan.tasks))), summary


def carry(plan: Plan, output_url: str, options: Options, workers: int, max_reject_fraction: float) -> None:
    """Put what every later step needs into the plan: the one place they come from."""
    plan.output = Location.of(output_url).url
    plan.options = asdict(options)
    plan.workers = int(workers)
    plan.max_reject_fraction = float(max_reject_fraction)


def options_in(plan: Plan) -> Options:
    """The conversion's options as the plan step was given them."""
    return Options(**plan.options)


def _output_seen(plan: Plan, step: str) -> str:
    """The plan's output, checked to be visible from here: a task on another machine (a pod) does not
    see a local folder of the machine that planned, unless a volume mounts it at the same path."""
    out = Location.of(plan.output)
    if out.is_local and not out.child(SLICES_DIR).exists():
        raise BadOutput(
            f"output_url {plan.output}: {step} cannot see the plan's output (no {SLICES_DIR}/ there): a local "
            "path is seen only by the machine that planned; on a cluster give gs://, s3:// or a volume every "
            "step mounts at that path"
        )
    return plan.output


def convert_step(plan_path: str, task: int, manifest_path: str) -> dict:
    """Convert the shards of one task; return a few numbers about it (the task's artifact metadata).

    The output, the options and the processes to use are the plan's (plan_step). The shards'
    statistics are written under the output's ``_work/``, where the aggregation reads them;
    ``manifest_path`` gets the list of shard files this task wrote. The task joins its run
    (plan.json's token): other runs are refused, a retry of this task goes ahead.
    """
    plan = _read_plan(plan_path)
    output_url = _output_seen(plan, "this conversion task")
    started = time.time()
    # kfp.local hands numbers back as floats
    count = len(plan.tasks[int(task)])
    # the run's lease stays for its other tasks, and for this one's retry should it fail
    with lock.hold(output_url, run=plan.run or None, keep=True, keep_on_error=True) as writer:
        shards = read_slice(plan, int(task))
        check = lambda _: writer.check()  # noqa: E731
        results = convert(plan, shards, output_url, options_in(plan), workers=plan.workers, count=count, on_done=check)
        writer.check()
    finished = time.time()
    _write(manifest_path, json.dumps({"task": int(task), "shards": [r["file"] for r in results]}))
    return task_summary(results, started, finished)


def task_summary(results: list[dict], started: float, finished: float) -> dict:
    """A conversion task in five numbers: shards, of them resumed (kept from an earlier run),
    records converted by this task (resumed shards' records not counted), start and end times."""
    fresh = [r for r in results if not r.get("resumed")]
    return {
        "shards": len(results),
        "resumed": len(results) - len(fresh),
        "records": sum(r["records"] for r in fresh),
        "started": started,
        "finished": finished,
    }


def finish(
    plan: Plan, output_url: str, options: Options, tasks: list[dict], max_reject_fraction: float | None = None
) -> tuple[dict, str]:
    """Merge the shards' statistics; write sizes.txt, labels.txt, dataset_info.json, rejects.tsv and
    report.html under ``output_url`` (and TFDS's metadata in the tfds format), then mark the output
    complete, or rejected when more than ``max_reject_fraction`` of the inputs were rejected (None:
    no limit); return (dataset_info, report HTML).

    ``tasks`` are the conversion tasks' summaries (task_summary): dataset_info's "run" says what
    this run converted and kept, and its wall time, first task start to last task end (pods'
    clocks, so roughly).
    """
    info = stats.summarize(plan, recorded_stats(plan, output_url, options.format), vars(options))
    info["root"] = Location.of(output_url).url
    if tasks:
        info["run"] = {
            "shards_converted": sum(int(t["shards"]) - int(t["resumed"]) for t in tasks),
            "shards_resumed": sum(int(t["resumed"]) for t in tasks),
            "records_converted": sum(int(t["records"]) for t in tasks),
            "wall_seconds": round(max(t["finished"] for t in tasks) - min(t["started"] for t in tasks), 3),
        }
    if options.format == formats.TFDS:  # (before sizes.txt, which says the output is complete)
        stats.write_tfds_metadata(plan, info, output_url)
    stats.write_reports(plan, info, output_url)
    from .report import build_report  # (numpy and Pillow draw its samples: the other steps go without)

    html = build_report(output_url, info=info)
    Location.of(output_url).child("report.html").write_text(html)
    too_many = stats.over_rejects(info, float(max_reject_fraction)) if max_reject_fraction is not None else None
    output.mark_complete(output_url, rejected=too_many or "")  # last
    return info, html


def convert_dataset(
    data_url: str,
    output_url: str,
    options: Options | None = None,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 0,
    layout: str = AUTO,
    train_order: str = MIXED,
    train_shards: int = 0,
    max_tasks: int = 1,
    on_plan=None,
    on_done=None,
    take_over_lease: bool = False,
    max_reject_fraction: float | None = None,
) -> tuple[dict, dict]:
    """The whole conversion in this process, through the same steps as the pipeline: check and claim
    the output, plan (slices included, ``max_tasks`` of them), mark the output incomplete, convert
    every task's shards with one process pool, write the reports, mark it complete. Returns (plan,
    dataset_info).

    ``layout``: a name of layouts.LAYOUTS, or "auto" to detect it (``plan.layout`` says which).
    ``train_order``, ``train_shards``: as in plan_step.

    ``on_plan(plan)`` is called once the plan is made, ``on_done(shard statistics)`` as each shard ends.

    The output is held for this run from the checks to the reports (lock.hold): another run
    writing it is refused before any work; ``take_over_lease`` takes over a live lease on an object
    store (its holder is dead). An output with more than ``max_reject_fraction`` of its inputs
    rejected is marked "rejected", not "complete" (None: no limit); the caller raises TooManyRejects.
    """
    options = options or Options()
    formats.check_file_names(options.format, data_url)  # (before any work)
    name = claim(data_url, output_url, layout)
    with lock.hold(output_url, take_over=take_over_lease) as writer:
        plan = build_plan(
            data_url, layout=name, shard_size=shard_size, train_order=train_order, train_shards=train_shards
        )
        plan.run = writer.run
        limit = stats.DEFAULT_MAX_REJECT_FRACTION if max_reject_fraction is None else max_reject_fraction
        carry(plan, output_url, options, workers, limit)
        begin_writing(plan, output_url, options.format, options)
        # One slice by default, as `imagenet-tfrecords run` plans; each shard is converted as its
        # slice line is written, rather than after every slice is written and read back.
        shards = stream_slices(plan, output_url, max_tasks)
        if on_plan:
            on_plan(plan)
        since = time.time()

        def done(stats: dict) -> None:
            writer.check()
            if on_done:
                on_done(stats)

        try:
            results = convert(plan, shards, output_url, options, workers=workers, on_done=done, count=len(plan.shards))
        finally:
            shards.close()  # (a slice still being written is dropped now, not when garbage-collected)
        writer.check()
        summary = [task_summary(results, since, time.time())]
        info, _ = finish(plan, output_url, options, summary, max_reject_fraction)
    return plan, info


def aggregate_step(plan_path: str, tasks: list[dict], dataset_dir: str, sizes_path: str, report_path: str) -> dict:
    """Write the reports under the plan's output and into the artifacts, recording the options the
    plan carries; fail when more than the plan's max_reject_fraction of the inputs were rejected."""
    plan = _read_plan(plan_path)
    output_url = _output_seen(plan, "the aggregation")
    with lock.hold(output_url, run=plan.run or None) as writer:  # the run ends here: its lease goes
        info, html = finish(plan, output_url, options_in(plan), tasks, plan.max_reject_fraction)
        writer.check()
    # The Dataset artifact describes the TFRecords under output_url (dataset_info.json names
    # the shards relative to its "root"), so the next step can read them with reader.load().
    stats.write_reports(plan, info, dataset_dir)
    _write(sizes_path, stats.sizes_text(info))
    _write(report_path, html)
    stats.check_rejects(info, float(plan.max_reject_fraction))
    return info
