"""imagenet-tfrecords: convert a TinyImageNet-layout dataset to TFRecords, locally or on Kubeflow.

Exit codes: 0 success, 1 internal error, 2 bad command line, 3 bad input (metadata, too many
rejects), 4 verification found a mismatch, 5 a worker process died or the run was interrupted
(finished shards are kept: run the same command again to resume).
"""

from __future__ import annotations

import argparse
import builtins
import json
import logging
import os
import sys
import tempfile
import time
import warnings

from .convert import GRAYSCALE_POLICIES, Options, WorkerDied, available_cpus
from .fs import Location
from .layout import DEFAULT_MAX_TASKS, MetadataError, build_plan
from .stats import IncompleteConversion, TooManyRejects, check_rejects

EXIT_INTERNAL, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_VERIFY, EXIT_INTERRUPTED = 1, 2, 3, 4, 5
log = logging.getLogger("imagenet_tfrecords")

EXAMPLES = {
    "run": "imagenet-tfrecords run --data ./sample --output ./out",
    "convert": "imagenet-tfrecords convert --data gs://b/tiny-imagenet-200 --output gs://b/tfrecords --workers 8",
    "compile": "imagenet-tfrecords compile --output pipeline.yaml --parallelism 32",
    "submit": "imagenet-tfrecords submit --host http://localhost:8080 --data gs://b/tiny-imagenet-200 --output gs://b/out",
    "verify": "imagenet-tfrecords verify ./out",
    "report": "imagenet-tfrecords report ./out --html report.html",
    "sample": "imagenet-tfrecords sample --output ./sample --classes 10",
    "download": "imagenet-tfrecords download --output ./data  # then: run --data ./data/tiny-imagenet-200",
}


def _url(value: str) -> str:
    """Local paths become absolute (pipeline tasks may run elsewhere); URLs pass through."""
    return value if "://" in value else os.path.abspath(value)


def _add_conversion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=_url, help="dataset root (path, gs://, s3://, memory://)")
    p.add_argument("--output", required=True, type=_url, help="output root for shards and reports")
    p.add_argument(
        "--grayscale",
        choices=GRAYSCALE_POLICIES,
        default="rgb",
        help="rgb: convert grayscale/CMYK to RGB (default); skip: leave them out",
    )
    p.add_argument("--image-size", default="", metavar="HxW", help="reject images of any other size")
    p.add_argument("--shard-size", type=int, default=500, help="images per val/test shard (default 500)")
    p.add_argument(
        "--max-reject-fraction",
        type=float,
        default=0.01,
        help="fail (after writing rejects.tsv) when more inputs are rejected (default 0.01)",
    )


def _progress(total: int, unit: str):
    """A tqdm bar on a terminal; quiet log lines otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, file=sys.stderr)
    return None


def cmd_convert(args) -> int:
    from .tasks import convert_dataset

    options = Options(grayscale=args.grayscale, image_size=args.image_size)
    started = time.perf_counter()
    plan = build_plan(args.data, shard_size=args.shard_size)
    workers = args.workers or available_cpus()
    log.info("converting %d shards of %s with %d workers", len(plan["shards"]), args.data, workers)
    bar = _progress(len(plan["shards"]), "shard")
    _, info = convert_dataset(
        args.data, args.output, options, workers=workers, plan=plan, on_done=(lambda s: bar.update(1)) if bar else None
    )
    if bar:
        bar.close()
    _report(info, time.perf_counter() - started)
    check_rejects(info, args.max_reject_fraction)
    return 0


def _report(info: dict, seconds: float) -> None:
    records = sum(s["num_records"] for s in info["splits"].values())
    for split, s in info["splits"].items():
        extra = f", converted {s['converted']}" if s["converted"] else ""
        print(
            f"{split}: {s['num_records']} records in {len(s['shards'])} shards "
            f"({s['rejected']} rejected, {s['skipped']} skipped{extra})"
        )
    for w in info["warnings"]:
        print(f"warning: {w}")
    for p in info.get("problems", []):
        print(f"warning: {p['path']}: {p['reason']}")
    problems = len(info.get("problems", []))
    print(
        f"{records} records in {seconds:.1f} s ({records / max(seconds, 1e-9):.0f} img/s); "
        f"{info['rejected']} rejects{f' and {problems} problem(s)' if problems else ''} listed in rejects.tsv"
    )


def cmd_run(args) -> int:
    from kfp import local

    from .pipelines.tinyimagenet_to_tfrecords import build_pipeline

    started, since = time.perf_counter(), time.time()
    # kfp.local indents print() while tasks run and, with parallel loop iterations, can
    # leave it indented: keep the real one.
    real_print = builtins.print
    # Resource requests are for the cluster; kfp.local warns that it ignores them, for every task.
    warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local runner")
    try:
        with tempfile.TemporaryDirectory(prefix="kfp-local-") as tmp:
            root = args.pipeline_root or tmp
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True)
            build_pipeline(args.parallelism)(
                data_url=args.data,
                output_url=args.output,
                grayscale=args.grayscale,
                max_tasks=args.max_tasks,
                shard_size=args.shard_size,
                image_size=args.image_size,
                max_reject_fraction=args.max_reject_fraction,
                workers=args.workers,
            )
    except RuntimeError:
        # A task failed; its message is in the log above. Say why in one line where we can:
        # bad metadata (the first task fails, before anything is fanned out) or too many rejects.
        build_plan(args.data, shard_size=args.shard_size)
        _raise_if_too_many_rejects(args.output, args.max_reject_fraction, since)
        raise
    finally:
        builtins.print = real_print
    info = json.loads(Location.of(args.output).child("dataset_info.json").read_text())
    _report(info, time.perf_counter() - started)
    return 0


def _raise_if_too_many_rejects(output: str, max_reject_fraction: float, since: float) -> None:
    """After a failed local run: raise TooManyRejects if that is why (reports written by this run)."""
    loc = Location.of(output).child("dataset_info.json")
    try:
        fresh = loc.exists() and loc.fs.modified(loc.path).timestamp() >= since - 1
        info = json.loads(loc.read_text()) if fresh else None
    except (OSError, ValueError, NotImplementedError):
        return
    if info is not None:
        check_rejects(info, max_reject_fraction)


def cmd_compile(args) -> int:
    from .pipelines.tinyimagenet_to_tfrecords import compile_pipeline

    compile_pipeline(args.output, args.parallelism)
    print(f"wrote {args.output}")
    return 0


def cmd_submit(args) -> int:
    import kfp

    from .pipelines.tinyimagenet_to_tfrecords import build_pipeline

    client = kfp.Client(host=args.host, namespace=args.namespace)
    run = client.create_run_from_pipeline_func(
        build_pipeline(args.parallelism),
        arguments={
            "data_url": args.data,
            "output_url": args.output,
            "grayscale": args.grayscale,
            "max_tasks": args.max_tasks,
            "shard_size": args.shard_size,
            "image_size": args.image_size,
            "max_reject_fraction": args.max_reject_fraction,
        },
        experiment_name=args.experiment,
    )
    print(f"submitted run {run.run_id}: {args.host.rstrip('/')}/#/runs/details/{run.run_id}")
    return 0


def cmd_verify(args) -> int:
    from .reader import dataset_info, verify

    out = Location.of(args.output)
    for name in ("dataset_info.json", "sizes.txt"):
        if not out.child(name).exists():
            print(f"error: {out.child(name).url} not found: {args.output} is not a converted output", file=sys.stderr)
            return EXIT_BAD_INPUT
    counts = verify(args.output, use_tf=args.tf)
    print("\n".join(f"{split},{n}" for split, n in counts.items()))
    shards = sum(len(s["shards"]) for s in dataset_info(args.output)[0]["splits"].values())
    checked = "TensorFlow read and parsed every record;" if args.tf else "framing, CRC32C checksums and"
    records = sum(counts.values())
    print(f"ok: {shards} shards, {records} records: {checked} counts match sizes.txt and dataset_info.json")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    info = Location.of(args.output).child("dataset_info.json")
    if not info.exists():
        print(f"error: {info.url} not found: {args.output} is not a converted output", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {write_report(args.output, args.html)}")
    return 0


def cmd_sample(args) -> int:
    from .sample import write_sample

    counts = write_sample(
        args.output,
        classes=args.classes,
        train_per_class=args.train_per_class,
        val=args.val,
        test=args.test,
        seed=args.seed,
    )
    print(f"wrote a sample dataset to {args.output}: {counts}")
    return 0


def cmd_download(args) -> int:
    from .download import DEFAULT_URL, ChecksumMismatch, DownloadError, UnsafeArchive, download

    url = args.url or DEFAULT_URL
    try:
        r = download(url, args.output, args.sha256)
    except (ChecksumMismatch, UnsafeArchive, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    resumed = f", resumed after {r.resumed_from} bytes already on disk" if r.resumed_from else ""
    print(f"{r.archive}: {os.path.getsize(r.archive)} bytes ({r.downloaded} downloaded now{resumed})")
    if r.checked:
        print(f"sha256 {r.sha256}: matches")
    else:
        print(f"sha256 {r.sha256} (not checked: no --sha256 given and no recorded checksum for {url})")
    extracted = f"extracted {r.files} files" if r.files else "already extracted"
    print(f"{extracted} into {args.output}: {', '.join(r.extracted)}")
    return 0


def _sha256(value: str) -> str:
    from .download import is_sha256

    if not is_sha256(value):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits, got {value!r}")
    return value.lower()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagenet-tfrecords", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_):
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.set_defaults(func=func)
        return sp

    sp = add("run", cmd_run, "run the whole Kubeflow pipeline locally (kfp.local, no Kubernetes)")
    _add_conversion_args(sp)
    sp.add_argument(
        "--max-tasks",
        type=int,
        default=1,
        help="conversion tasks (default 1: one task using every core; the cluster default is 64)",
    )
    sp.add_argument("--parallelism", type=int, default=2, help="ParallelFor parallelism (default 2)")
    sp.add_argument("--workers", type=int, default=0, help="processes per task (default: every CPU)")
    sp.add_argument("--pipeline-root", help="keep kfp.local's artifacts here (default: a temporary directory)")

    sp = add("convert", cmd_convert, "convert without Kubeflow: a process pool over all shards")
    _add_conversion_args(sp)
    sp.add_argument("--workers", type=int, default=0, help="processes (default: every CPU)")

    sp = add("compile", cmd_compile, "compile the pipeline to YAML")
    sp.add_argument("--output", default="tinyimagenet_to_tfrecords.yaml")
    sp.add_argument("--parallelism", type=int, default=16, help="ParallelFor parallelism (default 16)")

    sp = add("submit", cmd_submit, "upload and run the pipeline on a Kubeflow Pipelines server")
    _add_conversion_args(sp)
    sp.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint")
    sp.add_argument("--namespace", default="kubeflow")
    sp.add_argument("--experiment", default="imagenet-tfrecords")
    sp.add_argument("--max-tasks", type=int, default=DEFAULT_MAX_TASKS)
    sp.add_argument("--parallelism", type=int, default=16)

    sp = add("verify", cmd_verify, "check every shard's records, checksums and counts against the reports")
    sp.add_argument("output", type=_url, help="output URL of a conversion (path, gs://, s3://)")
    sp.add_argument(
        "--tf",
        action="store_true",
        help="also parse every record with TensorFlow's own reader (slower; needs tensorflow)",
    )

    sp = add("report", cmd_report, "write the HTML report (counts, classes, samples, rejects) of an output")
    sp.add_argument("output", type=_url)
    sp.add_argument("--html", type=_url, help="where to write it (default: OUTPUT/report.html)")

    sp = add("sample", cmd_sample, "write a small TinyImageNet-layout dataset of real JPEGs")
    sp.add_argument("--output", required=True)
    sp.add_argument("--classes", type=int, default=10)
    sp.add_argument("--train-per-class", type=int, default=20)
    sp.add_argument("--val", type=int, default=50)
    sp.add_argument("--test", type=int, default=30)
    sp.add_argument("--seed", type=int, default=0)

    sp = add("download", cmd_download, "download the TinyImageNet zip (resumable), check its SHA-256, extract it")
    sp.add_argument("--output", required=True, help="folder for the zip and its extracted contents")
    sp.add_argument("--url", default=None, help="archive URL (default: the official cs231n.stanford.edu zip)")
    sp.add_argument("--sha256", type=_sha256, help="expected SHA-256 (checked by default for the official zip)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (MetadataError, TooManyRejects, IncompleteConversion) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PermissionError as e:  # e.g. wrong or missing credentials for a bucket
        print(f"error: permission denied: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WorkerDied as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        from .reader import VerificationError

        if isinstance(e, VerificationError):
            print(f"verification failed:\n{e}", file=sys.stderr)
            return EXIT_VERIFY
        if args.verbose:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
