"""imagenet-tfrecords: convert a TinyImageNet-layout dataset to TFRecords, locally or on Kubeflow.

Exit codes: 0 success, 1 internal error, 2 bad command line, 3 bad input (metadata, too many
rejects), 4 verification found a mismatch, 5 a worker process died or the run was interrupted
(finished shards are kept: run the same command again to resume).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings

from .convert import GRAYSCALE_POLICIES, Options, WorkerDied, available_cpus, parse_size
from .fs import BadOutput, Location
from .layout import DEFAULT_MAX_TASKS, DEFAULT_SHARD_SIZE, MAX_TASKS, MetadataError, check_locations
from .stats import DEFAULT_MAX_REJECT_FRACTION, IncompleteConversion, TooManyRejects, check_rejects

EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_VERIFY, EXIT_INTERRUPTED = 1, 3, 4, 5  # 2: argparse's, bad command line
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


# --- option values: a bad one exits 2 with the option's name, before any work -------------


def _url(value: str) -> str:
    """Local paths become absolute (pipeline tasks may run elsewhere); URLs pass through."""
    return value if "://" in value else os.path.abspath(value)


def _whole(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _image_size(text: str) -> str:
    if text and not parse_size(text):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 64x64, got {text!r}")
    return text


def _new_file(value: str) -> str:
    """A file to write: its folder must exist (nothing is created where the user did not ask)."""
    path = _url(value)
    if "://" not in path and not os.path.isdir(os.path.dirname(path)):
        raise argparse.ArgumentTypeError(f"folder {os.path.dirname(path)} does not exist")
    return path


def _add_conversion_args(p: argparse.ArgumentParser, workers_help: str) -> None:
    p.add_argument("--data", required=True, type=_url, help="dataset root: a path, gs://, s3:// or another fsspec URL")
    p.add_argument("--output", required=True, type=_url, help="where shards and reports go (not inside --data)")
    p.add_argument(
        "--grayscale",
        choices=GRAYSCALE_POLICIES,
        default=Options.grayscale,
        help="rgb: convert grayscale and CMYK images to RGB; skip: leave them out (counted)",
    )
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=Options.image_size,
        metavar="HxW",
        help="reject images of any other size (e.g. 64x64)",
    )
    p.add_argument("--shard-size", type=_whole(1), default=DEFAULT_SHARD_SIZE, help="images per val/test shard")
    p.add_argument(
        "--max-reject-fraction",
        type=_fraction,
        default=DEFAULT_MAX_REJECT_FRACTION,
        help="fail, after writing rejects.tsv, when a larger share of inputs is rejected",
    )
    p.add_argument("--workers", type=_whole(0), default=0, help=workers_help)


def _progress(total: int, unit: str):
    """A tqdm bar on a terminal; nothing otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, file=sys.stderr)
    return None


# --- convert and run ----------------------------------------------------------------------


def cmd_convert(args) -> int:
    from .tasks import convert_dataset

    options = Options(grayscale=args.grayscale, image_size=args.image_size)
    started = time.perf_counter()
    workers = args.workers or available_cpus()
    bar = None

    def on_plan(plan: dict) -> None:
        nonlocal bar
        log.debug("converting %d shards of %s with %d workers", len(plan["shards"]), args.data, workers)
        bar = _progress(len(plan["shards"]), "shard")

    _, info = convert_dataset(
        args.data,
        args.output,
        options,
        shard_size=args.shard_size,
        workers=workers,
        on_plan=on_plan,
        on_done=lambda _: bar.update(1) if bar else None,
    )
    if bar:
        bar.close()
    _summary(info, args.output, time.perf_counter() - started)
    check_rejects(info, args.max_reject_fraction)
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _summary(info: dict, output: str, seconds: float) -> None:
    """A few lines: records per split, warnings, throughput of this run, where things are."""
    for split, s in info["splits"].items():
        parts = [f"{split}: {s['num_records']} records in {_plural(len(s['shards']), 'shard')}"]
        if s["rejected"]:
            parts.append(f"{s['rejected']} rejected")
        if s["skipped"]:
            parts.append(f"{s['skipped']} skipped")
        if s["converted"]:
            kinds = " and ".join(_plural(n, f"{kind} image") for kind, n in s["converted"].items())
            parts.append(f"{kinds} converted to RGB")
        print("; ".join(parts))
    for w in info["warnings"]:
        print(f"warning: {w}")
    for p in info.get("problems", []):
        print(f"warning: {p['path']}: {p['reason']}")
    run = info.get("run", {})
    converted, kept = run.get("records_converted", 0), run.get("shards_resumed", 0)
    if kept and not run.get("shards_converted"):
        print(f"nothing to convert: all {_plural(kept, 'shard')} kept from an earlier run ({seconds:.1f} s)")
    else:
        rate = f"{converted} records converted in {seconds:.1f} s ({converted / max(seconds, 1e-9):.0f} images/s)"
        kept_too = f"; {_plural(run['shards_converted'], 'shard')} converted, {kept} kept from an earlier run"
        print(rate + (kept_too if kept else ""))
    problems = len(info.get("problems", []))
    listed = f"{info['rejected']} rejects" + (f" and {_plural(problems, 'problem')}" if problems else "")
    listed = f"{listed} listed in rejects.tsv" if info["rejected"] or problems else "no rejects"
    print(f"{listed}; report: {Location.of(output).child('report.html').url}")


class StepFailed(Exception):
    """A step of a local pipeline run failed; ``code`` is the CLI's exit code for its cause."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# The exceptions a step raises on bad input, by name, as they appear in its traceback.
_BAD_INPUT = {"MetadataError", "BadOutput", "TooManyRejects", "IncompleteConversion", "PermissionError"}
_EXCEPTION_LINE = re.compile(
    r"^\s*((?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Rejects|Died|Output|Conversion))): (.*)$"
)
_FAILED_TASK = re.compile(r"Task '([\w-]+)' finished with status FAILURE")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def step_failure(log_text: str) -> StepFailed:
    """The failing step's own one-line cause, found in kfp.local's log, with the exit code it deserves."""
    lines = _ANSI.sub("", log_text).splitlines()
    failed = next((m[1] for line in lines if (m := _FAILED_TASK.search(line))), None)
    errors = [m for line in lines if (m := _EXCEPTION_LINE.match(line))]
    if not errors:
        return StepFailed(f"step {failed or '?'} failed without a Python error", EXIT_INTERNAL)
    _, name, message = errors[-1].groups()
    if name in _BAD_INPUT:
        return StepFailed(message if name != "PermissionError" else f"permission denied: {message}", EXIT_BAD_INPUT)
    if name == "WorkerDied":
        return StepFailed(message, EXIT_INTERRUPTED)
    return StepFailed(f"internal error in step {failed or '?'}: {name}: {message}", EXIT_INTERNAL)


@contextlib.contextmanager
def _quiet_kfp_local(verbose: bool, log_file: Location):
    """kfp.local's task logs into ``log_file`` (unless verbose), and none of its warnings that a user can
    do nothing about: the image is not a Python one (it is, and never pulled), resources are ignored."""
    real_print = builtins.print  # kfp.local indents print() while tasks run and can leave it so
    captured = io.StringIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local runner")
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom")
        try:
            with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(captured):
                yield captured
        finally:
            builtins.print = real_print
            if not verbose:
                with contextlib.suppress(OSError):
                    log_file.write_text(_ANSI.sub("", captured.getvalue()))


@contextlib.contextmanager
def _environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cmd_run(args) -> int:
    from kfp import local

    from .pipelines.tinyimagenet_to_tfrecords import build_pipeline

    check_locations(args.data, args.output)  # before kfp.local starts: no task for what is known now
    started = time.perf_counter()
    log_file = Location.of(args.output).child("_work", "kfp-local.log")
    failure = None
    with (
        tempfile.TemporaryDirectory(prefix="imagenet-tfrecords-") as tmp,
        _environ(TMPDIR=tmp),  # each kfp task writes its program to `mktemp -d` and leaves it there
        _quiet_kfp_local(args.verbose, log_file) as captured,
    ):
        local.init(
            runner=local.SubprocessRunner(use_venv=False), pipeline_root=args.pipeline_root or tmp, raise_on_error=True
        )
        try:
            build_pipeline(args.parallelism, retries=False)(
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
            failure = step_failure(captured.getvalue())
    if failure:
        where = "" if args.verbose else f" (kfp.local's log: {log_file.url})"
        raise StepFailed(f"{failure}{where}", failure.code)
    info = json.loads(Location.of(args.output).child("dataset_info.json").read_text())
    _summary(info, args.output, time.perf_counter() - started)
    return 0


def cmd_compile(args) -> int:
    from .pipelines.tinyimagenet_to_tfrecords import compile_pipeline

    compile_pipeline(args.output, args.parallelism)
    print(f"wrote {args.output}")
    return 0


def cmd_submit(args) -> int:
    import kfp
    import urllib3

    from .pipelines.tinyimagenet_to_tfrecords import build_pipeline

    check_locations_of_submit(args.data, args.output)
    # urllib3's retry lines (the client resets the "urllib3" logger's level, not its child's); the error below
    # says it once
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
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
                "workers": args.workers,
            },
            experiment_name=args.experiment,
        )
    except urllib3.exceptions.HTTPError as e:
        reason = str(getattr(e, "reason", None) or e).rsplit(": ", 1)[-1]
        raise BadOutput(f"cannot reach the Kubeflow Pipelines API at {args.host}: {reason}") from None
    print(f"submitted run {run.run_id}: {args.host.rstrip('/')}/#/runs/details/{run.run_id}")
    return 0


def check_locations_of_submit(data_url: str, output_url: str) -> None:
    """What can be checked here of URLs that the cluster reads: the output is not inside the dataset."""
    if "://" in data_url:
        from .fs import check_output
        from .layout import SPLITS

        root = Location.of(data_url)
        if Location.of(output_url).url == root.url:
            raise BadOutput(f"{output_url}: the output must not be the dataset folder itself")
        for split in SPLITS:
            check_output(Location.of(output_url), [root.child(split)])
    else:
        check_locations(data_url, output_url)


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


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description and example as written, and every option's default in its help."""

    def _get_help_string(self, action):
        if action.default in (None, "") or action.required or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imagenet-tfrecords", description=__doc__, formatter_class=_Help)
    p.add_argument("-v", "--verbose", action="store_true", help="show kfp.local's logs, debug lines and tracebacks")
    # -v is accepted after the command too; SUPPRESS keeps the subcommand from resetting it to False
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_):
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=_Help,
            parents=[verbose],
        )
        sp.set_defaults(func=func)
        return sp

    tasks = f"conversion tasks, 1 to {MAX_TASKS}; the shards are grouped evenly into them"
    sp = add("run", cmd_run, "run the whole Kubeflow pipeline locally (kfp.local, no Kubernetes)")
    _add_conversion_args(sp, "processes per task (0: every CPU)")
    sp.add_argument("--max-tasks", type=_whole(1, MAX_TASKS), default=1, help=f"{tasks} (1: one task, every core)")
    sp.add_argument("--parallelism", type=_whole(1), default=2, help="conversion tasks running at once")
    sp.add_argument("--pipeline-root", help="keep kfp.local's artifacts here (default: a temporary folder, removed)")

    sp = add("convert", cmd_convert, "convert without Kubeflow: a process pool over all shards")
    _add_conversion_args(sp, "processes (0: every CPU)")

    sp = add("compile", cmd_compile, "compile the pipeline to YAML (for the Kubeflow UI or kfp.Client)")
    sp.add_argument("--output", type=_new_file, default="tinyimagenet_to_tfrecords.yaml", help="the YAML file")
    sp.add_argument("--parallelism", type=_whole(0), default=16, help="conversion tasks running at once (0: no limit)")

    sp = add("submit", cmd_submit, "upload and run the pipeline on a Kubeflow Pipelines server")
    _add_conversion_args(sp, "processes per task (0: every CPU of the task's pod)")
    sp.add_argument("--host", required=True, help="the Kubeflow Pipelines API endpoint")
    sp.add_argument("--namespace", default="kubeflow", help="the Kubernetes namespace of the run")
    sp.add_argument("--experiment", default="imagenet-tfrecords", help="the experiment the run is filed under")
    sp.add_argument("--max-tasks", type=_whole(1, MAX_TASKS), default=DEFAULT_MAX_TASKS, help=tasks)
    sp.add_argument("--parallelism", type=_whole(0), default=16, help="conversion tasks running at once (0: no limit)")

    sp = add("verify", cmd_verify, "check every shard's records, checksums and counts against the reports")
    sp.add_argument("output", type=_url, help="output URL of a conversion (path, gs://, s3://)")
    sp.add_argument(
        "--tf",
        action="store_true",
        help="also parse every record with TensorFlow's own reader (slower; needs tensorflow)",
    )

    sp = add("report", cmd_report, "write the HTML report (counts, classes, samples, rejects) of an output")
    sp.add_argument("output", type=_url, help="output URL of a conversion (path, gs://, s3://)")
    sp.add_argument("--html", type=_new_file, help="where to write it (default: OUTPUT/report.html)")

    sp = add("sample", cmd_sample, "write a small TinyImageNet-layout dataset of real JPEGs")
    sp.add_argument("--output", required=True, help="the dataset's folder (created)")
    sp.add_argument("--classes", type=_whole(1), default=10, help="classes (wnids)")
    sp.add_argument("--train-per-class", type=_whole(0), default=20, help="train images per class")
    sp.add_argument("--val", type=_whole(0), default=50, help="val images")
    sp.add_argument("--test", type=_whole(0), default=30, help="test images")
    sp.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same files")

    sp = add("download", cmd_download, "download the TinyImageNet zip (resumable), check its SHA-256, extract it")
    sp.add_argument("--output", required=True, help="folder for the zip and its extracted contents")
    sp.add_argument("--url", default=None, help="archive URL (default: the official cs231n.stanford.edu zip)")
    sp.add_argument("--sha256", type=_sha256, help="expected SHA-256 (checked by default for the official zip)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except (MetadataError, BadOutput, TooManyRejects, IncompleteConversion) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PermissionError as e:  # e.g. wrong or missing credentials for a bucket
        print(f"error: permission denied: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StepFailed as e:
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
        if args.verbose:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
