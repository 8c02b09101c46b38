"""The Kubeflow commands of imagenet-tfrecords: run (the pipeline locally, with kfp.local), compile, submit.

They are registered into the ``imagenet-tfrecords`` command line through the entry point group
``imagenet_tfrecords.commands`` (see pyproject.toml), so the core never imports kfp.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings

from imagenet_tfrecords import lock
from imagenet_tfrecords.arguments import add_conversion_args, new_file, options_of, whole_number
from imagenet_tfrecords.cli import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    CommandError,
    _progress,
    layout_line,
    print_summary,
)
from imagenet_tfrecords.credentials import check_access
from imagenet_tfrecords.fs import Location, NoCredentialsError, install_command
from imagenet_tfrecords.layouts import check_locations, check_output_for
from imagenet_tfrecords.output import ForeignOutput, claim
from imagenet_tfrecords.plan import DEFAULT_MAX_TASKS, DEFAULT_PARALLELISM, MAX_TASKS
from imagenet_tfrecords.procs import interruptible, kill_descendants
from imagenet_tfrecords.stats import read_info

EXIT_USAGE = 2  # a bad command line, as argparse exits


def _image(text: str) -> str:
    from .components.image import check_reference

    try:
        return check_reference(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _image_arg(sp, what: str) -> None:
    sp.add_argument(
        "--image",
        type=_image,
        help=f"{what} (default: $IMAGENET_TFRECORDS_IMAGE, else the image 'make image' builds by default, "
        "ghcr.io/imagenet-tfrecords/imagenet-tfrecords:<version>); name@sha256:... once pushed",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600, got {text}")
    return value


def image_of(args) -> str:
    """--image, else $IMAGENET_TFRECORDS_IMAGE, else the default name (each checked: exit 2)."""
    from .components.image import IMAGE, check_reference

    if args.image:
        return args.image
    try:
        check_reference(IMAGE)
    except ValueError as e:
        raise CommandError(f"IMAGENET_TFRECORDS_IMAGE: {e}", EXIT_USAGE) from None
    return IMAGE


def say_if_default(image: str) -> None:
    """When the steps name the default image (published by this version's release only), say so."""
    from .components.image import DEFAULT_IMAGE

    if image == DEFAULT_IMAGE:
        print(
            f"note: no --image: the steps name {image}, the default, which exists once this version is released; "
            "to use your own, build and push it (make image) and give it with --image or IMAGENET_TFRECORDS_IMAGE",
            file=sys.stderr,
        )


def register(add) -> None:
    """Add run, compile and submit to the command line (``add(name, handler, help, example)`` makes a subcommand)."""
    tasks = f"conversion tasks, 1 to {MAX_TASKS}; the shards are grouped evenly into them"
    sp = add(
        "run",
        cmd_run,
        "run the whole Kubeflow pipeline locally (kfp.local, no Kubernetes)",
        "imagenet-tfrecords run --data ./sample --output ./out",
    )
    add_conversion_args(sp, "processes per task (0: every CPU)")
    sp.add_argument(
        "--max-tasks", type=whole_number(1, MAX_TASKS), default=1, help=f"{tasks} (1: one task, every core)"
    )
    sp.add_argument("--parallelism", type=whole_number(1), default=2, help="conversion tasks running at once")
    sp.add_argument("--pipeline-root", help="keep kfp.local's artifacts here (default: a temporary folder, removed)")
    sp.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: each step in a process of this Python (default); docker: each step in a container of "
        "--image, with its pod's CPU and memory limits, local data and output folders mounted at the same paths",
    )
    _image_arg(sp, "with --runner docker: the image the steps run in")

    sp = add(
        "compile",
        cmd_compile,
        "compile the pipeline to YAML (for the Kubeflow UI or kfp.Client)",
        "imagenet-tfrecords compile --output pipeline.yaml --parallelism 32",
    )
    sp.add_argument("--output", type=new_file, default="tinyimagenet_to_tfrecords.yaml", help="the YAML file")
    _image_arg(sp, "the image every step runs in")
    sp.add_argument(
        "--parallelism",
        type=whole_number(0),
        default=DEFAULT_PARALLELISM,
        help="conversion tasks running at once (0: no limit)",
    )

    sp = add(
        "submit",
        cmd_submit,
        "upload and run the pipeline on a Kubeflow Pipelines server",
        "imagenet-tfrecords submit --host http://localhost:8080 --data gs://b/tiny-imagenet-200 --output gs://b/out",
    )
    add_conversion_args(sp, "processes per task (0: every CPU of the task's pod)")
    sp.add_argument(
        "--host",
        help="the Kubeflow Pipelines API endpoint (default: $KF_PIPELINES_ENDPOINT)",
    )
    sp.add_argument(
        "--namespace",
        help="the Kubernetes namespace of the run (default: the kfp client's own configuration, "
        "~/.config/kfp/context.json, as multi-user Kubeflow sets it; none on a single-user install)",
    )
    sp.add_argument(
        "--token",
        help="a bearer token for the API (default: $KF_PIPELINES_TOKEN; else the kfp client's own credentials)",
    )
    sp.add_argument(
        "--service-account",
        help="the Kubernetes service account the pods run as (the usual way they get bucket credentials: "
        "Workload Identity, IRSA); default: the namespace's pipeline runner",
    )
    sp.add_argument(
        "--mounted",
        action="store_true",
        help="--data and --output are local paths that every pod has mounted at the same path "
        "(without it, local paths are refused: the pods would not see them)",
    )
    _image_arg(sp, "the image every step runs in; push it where the cluster pulls from first")
    sp.add_argument("--experiment", default="imagenet-tfrecords", help="the experiment the run is filed under")
    sp.add_argument(
        "--timeout",
        type=_seconds,
        default=30,
        metavar="SECONDS",
        help="give up when the API has not answered a request within this many seconds (exit 3)",
    )
    sp.add_argument("--max-tasks", type=whole_number(1, MAX_TASKS), default=DEFAULT_MAX_TASKS, help=tasks)
    sp.add_argument(
        "--parallelism",
        type=whole_number(0),
        default=DEFAULT_PARALLELISM,
        help="conversion tasks running at once (0: no limit)",
    )


# The exceptions a step raises on bad input, by name, as they appear in its traceback.
_BAD_INPUT = {
    "MetadataError",
    "BadOutput",
    "ForeignOutput",
    "InputError",
    "NoCredentialsError",
    "MissingPackageError",
    "BusyOutput",
    "LostOutput",
    "TooManyRejects",
    "IncompleteConversion",
    "PermissionError",
}
_BAD_COMMAND_LINE = {"TrainShardsError", "ParameterError"}  # exit 2
_EXCEPTION_LINE = re.compile(
    r"^\s*((?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Rejects|Died|Output|Conversion))): (.*)$"
)
_FAILED_TASK = re.compile(r"Task '([\w-]+)' finished with status FAILURE")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def step_failure(log_text: str) -> CommandError:
    """The failing step's own one-line cause, found in kfp.local's log, with the exit code it deserves."""
    lines = _ANSI.sub("", log_text).splitlines()
    failed = next((m[1] for line in lines if (m := _FAILED_TASK.search(line))), None)
    errors = [m for line in lines if (m := _EXCEPTION_LINE.match(line))]
    if not errors:  # its process was killed: no Python code ran to say why
        return CommandError(
            f"step {failed or '?'} died without a Python error (its process was killed by a signal, e.g. by the "
            "out-of-memory killer); finished shards are kept: run the same command again to resume",
            EXIT_INTERRUPTED,
        )
    _, name, message = errors[-1].groups()
    if name in _BAD_INPUT:
        return CommandError(message if name != "PermissionError" else f"permission denied: {message}", EXIT_BAD_INPUT)
    if name in _BAD_COMMAND_LINE:
        return CommandError(message, 2)
    if name == "WorkerDied":
        return CommandError(message, EXIT_INTERRUPTED)
    return CommandError(f"internal error in step {failed or '?'}: {name}: {message}", EXIT_INTERNAL)


_FINISHED_TASK = re.compile(r"(Task|Pipeline) '([\w-]+)' finished with status (\w+)")
_TASKS_PLANNED = re.compile(r"'tasks': (\d+)")


class _StepLog(io.StringIO):
    """kfp.local's log as it is written, moving a progress bar (``bar``) on at each step that ends:
    the plan step, each conversion task, the aggregation. Whole lines are looked at (tasks running
    at once write from their own threads)."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar
        self.partial = ""
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            if self.bar is not None:
                *lines, self.partial = (self.partial + text).split("\n")
                for line in lines:
                    self._step(_ANSI.sub("", line))
            return super().write(text)

    def _step(self, line: str) -> None:
        if self.bar.total is None and (m := _TASKS_PLANNED.search(line)):
            self.bar.total = int(float(m[1])) + 2  # (the plan step's summary: its tasks, then the aggregation)
            self.bar.refresh()
        if m := _FINISHED_TASK.search(line):
            self.bar.set_description(f"{m[2]} {m[3].lower()}", refresh=False)
            # (kfp.local can drop a line of tasks that ran at once: the pipeline's end completes the bar)
            done = self.bar.total if m[1] == "Pipeline" and self.bar.total else self.bar.n + 1
            self.bar.update(done - self.bar.n)


@contextlib.contextmanager
def _quiet_kfp_local(verbose: bool, log_file: Location):
    """kfp.local's task logs into ``log_file`` (unless verbose), and none of its warnings that a user can
    do nothing about: the image is not a Python one (it is, and never pulled), resources are ignored."""
    real_print = builtins.print  # kfp.local indents print() while tasks run and can leave it so
    bar = None if verbose else _progress(None, "step")  # (a terminal only)
    captured = _StepLog(bar)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local runner")
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom")
        try:
            with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(captured):
                yield captured
        finally:
            builtins.print = real_print
            if bar is not None:
                bar.close()
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


def _stop_steps_on_interrupt() -> None:
    """On SIGTERM or Ctrl-C, stop kfp.local's step processes (and so their workers) and keep stopping
    any it starts next, then raise KeyboardInterrupt: kfp.local waits for every started iteration of
    a loop before the interruption reaches the command, which then exits 5."""
    stopping = threading.Event()

    def stop_steps() -> None:
        while True:
            kill_descendants()
            time.sleep(0.05)

    def handler(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=stop_steps, name="stop-steps", daemon=True).start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _import_kfp_for_local() -> None:
    """Import the kfp package without its API client (kfp.client, and with it the kubernetes
    package: about 0.5 s of CPU that a local run never uses). kfp's package skips that import when
    _KFP_RUNTIME is "true", as its step executor sets it; the variable is set for that one import
    only, so kfp.dsl, the compiler and kfp.local (imported after) are whole, and the steps' own
    processes see the environment as it was."""
    if "kfp" in sys.modules:
        return
    saved = os.environ.get("_KFP_RUNTIME")
    os.environ["_KFP_RUNTIME"] = "true"
    try:
        import kfp  # noqa: F401
    finally:
        if saved is None:
            del os.environ["_KFP_RUNTIME"]
        else:
            os.environ["_KFP_RUNTIME"] = saved


def cmd_run(args) -> int:
    _import_kfp_for_local()
    from kfp import local

    from .pipelines.tinyimagenet_to_tfrecords import build_pipeline

    # before kfp.local starts: no task for what is known now
    options_of(args)
    layout = check_locations(args.data, args.output, args.layout)
    pipeline = build_pipeline(args.parallelism, retries=False, image=image_of(args))
    in_containers = args.runner == "docker"
    if in_containers:
        _check_image_here(image_of(args))
        from .docker import checked_exit_status, docker_runner

    claim(args.output)  # before kfp.local writes its log there
    started = time.perf_counter()
    log_file = Location.of(args.output).child("_work", "kfp-local.log")
    failure = None
    _stop_steps_on_interrupt()
    with (
        # this process holds the output for the run; the steps join it through RUN_ENV
        lock.hold(args.output, take_over=args.take_over_lease) as writer,
        tempfile.TemporaryDirectory(prefix="imagenet-tfrecords-") as tmp,
        # each kfp task writes its program to `mktemp -d` and leaves it there
        _environ(TMPDIR=tmp, **{lock.RUN_ENV: writer.run}),
        _quiet_kfp_local(args.verbose, log_file) as captured,
        checked_exit_status() if in_containers else contextlib.nullcontext() as handler,
    ):
        root = os.path.abspath(args.pipeline_root or tmp)
        if in_containers:
            mounts = [u for u in (args.data, args.output) if "://" not in u]
            if "://" not in args.output:
                os.makedirs(args.output, exist_ok=True)  # else the engine would create it, as root
            runner = docker_runner(pipeline, mounts)
        else:
            runner = local.SubprocessRunner(use_venv=False)
        local.init(runner=runner, pipeline_root=root, raise_on_error=True)
        try:
            pipeline(
                data_url=args.data,
                output_url=args.output,
                layout=args.layout,
                grayscale=args.grayscale,
                max_tasks=args.max_tasks,
                shard_size=args.shard_size,
                train_order=args.train_order,
                train_shards=args.train_shards,
                image_size=args.image_size,
                max_reject_fraction=args.max_reject_fraction,
                workers=args.workers,
                format=args.format,
                label_offset=args.label_offset,
                jpeg_quality=args.jpeg_quality,
                take_over_lease=args.take_over_lease,
                resize=args.resize,
                resize_mode=args.resize_mode,
                shorter_side=args.shorter_side,
            )
        except RuntimeError:
            failure = step_failure(captured.getvalue())
            if handler and handler.failures and "without a Python error" in str(failure):
                ended = handler.failures[-1]
                failure = CommandError(ended, EXIT_INTERRUPTED if "killed" in ended else EXIT_INTERNAL)
        writer.check()
    if failure:
        where = "" if args.verbose else f" (kfp.local's log: {log_file.url})"
        raise CommandError(f"{failure}{where}", failure.code)
    info = read_info(Location.of(args.output))
    print_summary(info, args.output, time.perf_counter() - started, layout_line(layout, args.layout))
    return 0


def _check_image_here(image: str) -> None:
    """The engine answers and has the image (a missing one would be pulled by every step, or fail in each)."""
    try:
        import docker
    except ModuleNotFoundError:
        raise CommandError(
            "--runner docker needs the Python package 'docker', which is not installed here: "
            f"{install_command('docker')} (make install installs it)",
            EXIT_BAD_INPUT,
        ) from None

    try:
        client = docker.from_env()
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise CommandError(
            f"image {image} is not on this machine: build it (make image IMAGE={image}) or docker pull it",
            EXIT_BAD_INPUT,
        ) from None
    except docker.errors.DockerException as e:
        raise CommandError(f"--runner docker: no Docker engine answers here ({e})", EXIT_BAD_INPUT) from None
    client.close()


def cmd_compile(args) -> int:
    from .pipelines.tinyimagenet_to_tfrecords import compile_pipeline

    image = image_of(args)
    compile_pipeline(args.output, args.parallelism, image=image)
    print(f"wrote {args.output} (image {image})")
    say_if_default(image)
    return 0


def cmd_submit(args) -> int:
    options_of(args)
    # read here, not as argparse defaults, which --help would print
    args.host = args.host or os.environ.get("KF_PIPELINES_ENDPOINT")
    args.token = args.token or os.environ.get("KF_PIPELINES_TOKEN")
    if not args.host:
        raise CommandError("--host is required (or set KF_PIPELINES_ENDPOINT)", EXIT_USAGE)
    for option, url in (("--data", args.data), ("--output", args.output)):
        if "://" not in url and not args.mounted:
            raise CommandError(
                f"{option} {url}: a local path, which the cluster's pods cannot see; give a gs:// or s3:// URL, "
                "or --mounted if every pod has it mounted at that path",
                EXIT_USAGE,
            )
    image = image_of(args)
    contacted = False
    try:
        check_locations_of_submit(args.data, args.output, args.layout)
        from .api import ApiAnswerError, Client

        # urllib3's retry lines (the client resets the "urllib3" logger's level, not its child's)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        from .pipelines.tinyimagenet_to_tfrecords import build_pipeline

        pipeline = build_pipeline(args.parallelism, image=image)

        def send():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
                client = Client(host=args.host, timeout=args.timeout, existing_token=args.token)
            client.get_kfp_healthz()  # the API answers, before anything is sent
            return client.create_run_from_pipeline_func(
                pipeline,
                arguments=pipeline_arguments(args),
                experiment_name=args.experiment,
                namespace=args.namespace,
                service_account=args.service_account,
            )

        contacted = True
        try:
            run = interruptible(send)  # (Ctrl-C ends a wait for the host at once)
        except ApiAnswerError as e:
            raise CommandError(str(e), EXIT_BAD_INPUT) from None
        if not getattr(run, "run_id", None):
            raise CommandError(
                f"--host {args.host}: the API accepted the run but sent no run id back; check --host and --namespace",
                EXIT_BAD_INPUT,
            )
    except KeyboardInterrupt:
        if not contacted:
            raise CommandError("interrupted: nothing was submitted", EXIT_INTERRUPTED) from None
        raise CommandError(
            f"interrupted while talking to {args.host}: the run may have been created; look at the runs of "
            f"experiment {args.experiment} before submitting again",
            EXIT_INTERRUPTED,
        ) from None
    ui = os.environ.get("KF_PIPELINES_UI_ENDPOINT") or args.host
    print(f"submitted run {run.run_id} (image {image}): {ui.rstrip('/')}/#/runs/details/{run.run_id}")
    say_if_default(image)
    return 0


def pipeline_arguments(args) -> dict:
    """The pipeline's parameters from a command line of ``run`` or ``submit``."""
    return {
        "data_url": args.data,
        "output_url": args.output,
        "layout": args.layout,
        "grayscale": args.grayscale,
        "max_tasks": args.max_tasks,
        "shard_size": args.shard_size,
        "train_order": args.train_order,
        "train_shards": args.train_shards,
        "image_size": args.image_size,
        "max_reject_fraction": args.max_reject_fraction,
        "workers": args.workers,
        "format": args.format,
        "label_offset": args.label_offset,
        "jpeg_quality": args.jpeg_quality,
        "take_over_lease": args.take_over_lease,
        "resize": args.resize,
        "resize_mode": args.resize_mode,
        "shorter_side": args.shorter_side,
    }


def check_locations_of_submit(data_url: str, output_url: str, layout: str = "auto") -> None:
    """What can be checked here of URLs that the cluster reads: local ones fully, object-store ones
    for an output inside the dataset, and for an output that is not ours when this machine can list
    it (it may have no credentials for them). Nothing is written: the plan step claims the output."""
    for url in (data_url, output_url):
        try:
            check_access(url)
        except NoCredentialsError as e:  # the cluster's pods may have them (Workload Identity, IRSA)
            print(f"note: {url} is not checked here ({e}); the plan step checks it on the cluster", file=sys.stderr)
            return
    if "://" in data_url:
        check_output_for(data_url, output_url)
    else:
        check_locations(data_url, output_url, layout)
    try:
        claim(output_url, write=False)
    except ForeignOutput:
        raise
    except Exception:  # no credentials or no connection here: the plan step checks it
        if "://" not in output_url:
            raise
