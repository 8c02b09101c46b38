"""imagenet-tfrecords: convert an image dataset (TinyImageNet, ImageNet extracted or as its ILSVRC2012
archives, class folders, a Hugging Face parquet download or WebDataset shards) to TFRecords, locally or on
Kubeflow.

Exit codes: 0 success, 1 internal error, 2 bad command line (a bad option value, named), 3 bad
input or environment (metadata, an unreadable folder, an output that cannot be used or written or
holds files this project did not write, too many rejects, a host that cannot be reached, missing
credentials, a missing optional package), 4 verification found a mismatch or an incomplete output,
5 a worker process died or the run was interrupted (finished shards are kept: run the same command
again to resume).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time
from importlib.metadata import entry_points

from . import __version__
from .arguments import add_conversion_args, new_file, options_of, url_value, whole_number
from .convert import WorkerDied
from .credentials import check_access
from .fs import InputError, Location, MissingPackageError
from .image import resize_text
from .layouts import AUTO
from .plan import MIXED, Plan, TrainShardsError
from .procs import available_cpus, interrupt_on_signals, raise_open_files_limit
from .stats import IncompleteConversion, TooManyRejects, check_rejects, read_info

EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_VERIFY, EXIT_INTERRUPTED = 1, 3, 4, 5  # 2: argparse's, bad command line
log = logging.getLogger("imagenet_tfrecords")

EXAMPLES = {
    "convert": "imagenet-tfrecords convert --data gs://b/tiny-imagenet-200 --output gs://b/tfrecords --workers 8",
    "verify": "imagenet-tfrecords verify ./out",
    "report": "imagenet-tfrecords report ./out --html report.html",
    "sample": "imagenet-tfrecords sample --output ./sample --classes 10",
    "download": "imagenet-tfrecords download --output ./data  # then: run --data ./data/tiny-imagenet-200",
}


def _progress(total: int, unit: str):
    """A tqdm bar on a terminal (or when IMAGENET_TFRECORDS_PROGRESS=1); nothing otherwise."""
    if sys.stderr.isatty() or os.environ.get("IMAGENET_TFRECORDS_PROGRESS") == "1":
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, file=sys.stderr)
    return None


# --- convert and run ----------------------------------------------------------------------


def cmd_convert(args) -> int:
    from .tasks import convert_dataset

    options = options_of(args)
    started = time.perf_counter()
    workers = args.workers or available_cpus()
    bar = None
    layout = ""

    def on_plan(plan: Plan) -> None:
        nonlocal bar, layout
        layout = layout_line(plan.layout, args.layout)
        log.debug("converting %d shards of %s with %d workers", len(plan.shards), args.data, workers)
        bar = _progress(len(plan.shards), "shard")

    _, info = convert_dataset(
        args.data,
        args.output,
        options,
        shard_size=args.shard_size,
        workers=workers,
        layout=args.layout,
        train_order=args.train_order,
        train_shards=args.train_shards,
        take_over_lease=args.take_over_lease,
        max_reject_fraction=args.max_reject_fraction,
        on_plan=on_plan,
        on_done=lambda _: bar.update(1) if bar else None,
    )
    if bar:
        bar.close()
    print_summary(info, args.output, time.perf_counter() - started, layout)
    check_rejects(info, args.max_reject_fraction)
    return 0


def _plural(n: int, word: str) -> str:
    from .report import plural

    return f"{n} {plural(n, word)}"


def layout_line(name: str, asked: str) -> str:
    """What print_summary says of the layout: ``layout: imagefolder (detected)`` when asked for auto."""
    return f"layout: {name}" + (" (detected)" if asked == AUTO else "")


def print_summary(info: dict, output: str, seconds: float, layout: str = "") -> None:
    """A few lines: records per split, the layout (``layout``: its line), warnings, throughput of
    this run, where things are."""
    for split, s in info["splits"].items():
        parts = [f"{split}: {s['num_records']} records in {_plural(len(s['shards']), 'shard')}"]
        if s["rejected"]:
            parts.append(f"{s['rejected']} rejected")
        if s["skipped"]:
            parts.append(f"{s['skipped']} skipped")
        if s.get("ignored"):
            parts.append(f"{s['ignored']} ignored (.DS_Store, Thumbs.db, other names starting with '.')")
        if s["converted"]:
            kinds = " and ".join(_plural(n, f"{kind} image") for kind, n in s["converted"].items())
            parts.append(f"{kinds} converted to RGB")
        if s.get("reencoded"):  # (tf-models and tfds: every image not stored as read)
            parts.append(f"{_plural(sum(s['reencoded'].values()), 'image')} JPEG-encoded anew")
        boxes = s.get("boxes", {})
        if boxes.get("clipped") or boxes.get("dropped"):
            parts.append(
                f"{_plural(boxes['clipped'], 'box')} clipped, {boxes['dropped']} dropped (outside or inverted)"
            )
        print("; ".join(parts))
    if layout:
        print(layout)
    if info.get("resize"):
        print(f"images resized: {resize_text(info['resize'])}")
    for w in info["warnings"]:
        print(f"warning: {w}")
    for p in info.get("problems", []):
        print(f"warning: {p['path']}: {p['reason']}")
    run = info.get("run", {})
    converted, kept = run.get("records_converted", 0), run.get("shards_resumed", 0)
    whole = f"wall time of the whole run {seconds:.1f} s"
    if kept and not run.get("shards_converted"):
        print(f"nothing to convert: all {_plural(kept, 'shard')} kept from an earlier run ({whole})")
    else:
        # the report's figure is the conversion phase's alone (first shard started to last one done)
        phase = run.get("wall_seconds")
        rate = f"{_plural(converted, 'record')} converted; {whole} ({converted / max(seconds, 1e-9):.0f} images/s)"
        if phase:
            rate += f", conversion phase {phase:.1f} s ({converted / max(phase, 1e-9):.0f} images/s)"
        kept_too = f"; {_plural(run['shards_converted'], 'shard')} converted, {kept} kept from an earlier run"
        print(rate + (kept_too if kept else ""))
    problems = len(info.get("problems", []))
    listed = _plural(info["rejected"], "reject") + (f" and {_plural(problems, 'problem')}" if problems else "")
    listed = f"{listed} listed in rejects.tsv" if info["rejected"] or problems else "no rejects"
    print(f"{listed}; report: {Location.of(output).child('report.html').url}")


class CommandError(Exception):
    """A command failed for a reason it has put in words; ``code`` is the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def cmd_verify(args) -> int:
    from .output import IncompleteOutput, check_complete
    from .reader import dataset_info, tensorflow, verify

    check_access(args.output)
    if args.tf:
        tensorflow()  # (MissingPackageError, before any work, when it is not installed)
    out = Location.of(args.output)
    try:
        check_complete(args.output)
    except IncompleteOutput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_VERIFY
    for name in ("dataset_info.json", "sizes.txt"):
        if not out.child(name).exists():
            print(f"error: {out.child(name).url} not found: {args.output} is not a converted output", file=sys.stderr)
            return EXIT_BAD_INPUT
    if read_info(out) is None:
        print(f"error: {out.url} holds no conversion_info.json beside TFDS's dataset_info.json", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = verify(args.output, use_tf=args.tf)
    print("\n".join(f"{split},{n}" for split, n in counts.items()))
    info = dataset_info(args.output)[0]
    shards = sum(len(s["shards"]) for s in info["splits"].values())
    checked = "TensorFlow read and parsed every record;" if args.tf else "framing, CRC32C checksums, indexes and"
    records = sum(counts.values())
    sized = f"; every image is {resize_text(info['resize'])}" if info.get("resize") else ""
    print(f"ok: {shards} shards, {records} records: {checked} counts match sizes.txt and dataset_info.json{sized}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    check_access(args.output)
    if read_info(Location.of(args.output)) is None:
        where = Location.of(args.output).child("dataset_info.json").url
        print(f"error: {where} not found (nor conversion_info.json): not a converted output", file=sys.stderr)
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
    print(
        f"wrote a sample dataset to {args.output}: {counts['classes']} classes, "
        f"{counts['train']} train, {counts['val']} val and {counts['test']} test images"
    )
    return 0


def cmd_download(args) -> int:
    from .download import DEFAULT_URL, ChecksumMismatch, DownloadError, UnsafeArchive, download

    url = args.url or DEFAULT_URL
    try:
        r = download(url, args.output, args.sha256)
    except (ChecksumMismatch, UnsafeArchive, FileExistsError, DownloadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    resumed = f", resumed after {r.resumed_from} bytes already on disk" if r.resumed_from else ""
    print(f"{r.archive}: {os.path.getsize(r.archive)} bytes ({r.downloaded} downloaded now{resumed})")
    if r.checked:
        print(f"sha256 {r.sha256}: matches")
    else:
        print(f"sha256 {r.sha256} (not checked: no --sha256 given and no recorded checksum for {url})")
    extracted = f"extracted {_plural(r.files, 'file')}" if r.files else "already extracted"
    print(f"{extracted} into {args.output}: {', '.join(r.extracted)}")
    return 0


def _sha256(value: str) -> str:
    from .download import is_sha256

    if not is_sha256(value):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits, got {value!r}")
    return value.lower()


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description and example as written, and every option's default in its help."""

    def _get_help_string(self, action):
        if action.default in (None, "") or action.required or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imagenet-tfrecords", description=__doc__, formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show kfp.local's logs, debug lines and tracebacks")
    # -v is accepted after the command too; SUPPRESS keeps the subcommand from resetting it to False
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_, example=None):
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example:\n  {example or EXAMPLES[name]}",
            formatter_class=_Help,
            parents=[verbose],
        )
        sp.set_defaults(func=func)
        return sp

    # run, compile and submit: the Kubeflow side registers them (imagenet_tfrecords_kfp.commands)
    for plugin in entry_points(group="imagenet_tfrecords.commands"):
        plugin.load()(add)

    sp = add("convert", cmd_convert, "convert without Kubeflow: a process pool over all shards")
    add_conversion_args(sp, "processes (0: every CPU)")

    sp = add("verify", cmd_verify, "check every shard's records, checksums and counts against the reports")
    sp.add_argument("output", type=url_value, help="output URL of a conversion (path, gs://, s3://)")
    sp.add_argument(
        "--tf",
        action="store_true",
        help="also parse every record with TensorFlow's own reader (slower; needs tensorflow)",
    )

    sp = add("report", cmd_report, "write the HTML report (counts, classes, samples, rejects) of an output")
    sp.add_argument("output", type=url_value, help="output URL of a conversion (path, gs://, s3://)")
    sp.add_argument("--html", type=new_file, help="where to write it (default: OUTPUT/report.html)")

    sp = add("sample", cmd_sample, "write a small TinyImageNet-layout dataset of real JPEGs")
    sp.add_argument("--output", required=True, help="the dataset's folder (new or empty)")
    sp.add_argument("--classes", type=whole_number(1), default=10, help="classes (wnids)")
    sp.add_argument("--train-per-class", type=whole_number(0), default=20, help="train images per class")
    sp.add_argument("--val", type=whole_number(0), default=50, help="val images")
    sp.add_argument("--test", type=whole_number(0), default=30, help="test images")
    sp.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same files")

    sp = add("download", cmd_download, "download the TinyImageNet zip (resumable), check its SHA-256, extract it")
    sp.add_argument("--output", required=True, help="folder for the zip and its extracted contents")
    sp.add_argument("--url", default=None, help="archive URL (default: the official cs231n.stanford.edu zip)")
    sp.add_argument("--sha256", type=_sha256, help="expected SHA-256 (checked by default for the official zip)")
    return p


def _too_many_files(e: OSError) -> str:
    """The line for EMFILE (this process's limit) or ENFILE (the system's)."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno == errno.ENFILE:
        return f"{where}too many open files on this machine (its limit, not this process's): close some programs"
    soft, hard = raise_open_files_limit()
    return (
        f"{where}too many open files: at most {soft} a process (ulimit -n; hard limit {hard}): "
        "raise the limit (ulimit -n 1024) or use fewer --workers"
    )


def configure_logging(verbose: bool) -> None:
    """The project's lines at INFO (DEBUG with --verbose); a library's warnings and errors in one line
    each: their tracebacks only with --verbose (the error the command reports says what failed)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_one_line)


def _one_line(record: logging.LogRecord) -> bool:
    """A library's log record, shown as its first line: its traceback only with --verbose."""
    if not record.name.startswith(log.name):
        record.msg, record.args = record.getMessage().split("\n", 1)[0], None
        record.exc_info = record.exc_text = record.stack_info = None
    return True


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if getattr(args, "train_order", MIXED) != MIXED and args.train_shards:
        p.error("--train-shards sets the number of mixed train shards; --train-order per-class makes one per class")
    interrupt_on_signals()  # SIGTERM (Kubernetes stopping a pod) is handled as Ctrl-C
    raise_open_files_limit()  # (to the hard limit; a failure for want of them says both)
    configure_logging(args.verbose)
    try:
        return args.func(args)
    except (InputError, MissingPackageError, TooManyRejects, IncompleteConversion) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainShardsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # e.g. wrong or missing credentials for a bucket
        print(f"error: permission denied: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
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
        if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE) and not args.verbose:
            print(f"error: {_too_many_files(e)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(e, OSError) and e.filename is not None and not args.verbose:
            # a path named: the environment's problem (a full disk, a folder gone), not ours
            print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.verbose:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
