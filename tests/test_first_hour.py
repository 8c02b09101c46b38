"""What a new user sees: the CLI run as a subprocess, as a user would, on the sample dataset.

Bad values stop before any work with the option's name (exit 2); an output that cannot be used
stops with one line naming the path (exit 3), for run before kfp.local starts; a failing local
pipeline step says its own cause once, never retried; run is quiet; nothing is left in the
temporary folder; a resumed run says what it kept.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from imagenet_tfrecords.cli import parser
from imagenet_tfrecords.output import claim

from .conftest import run_cli

ANSI = re.compile(r"\x1b\[")


def _error_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["convert", "run", "submit"])
@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--workers", "-1", "argument --workers: must be 0 or more, got -1"),
        ("--shard-size", "0", "argument --shard-size: must be 1 or more, got 0"),
        ("--image-size", "64", "argument --image-size: expected HEIGHTxWIDTH such as 64x64, got '64'"),
        ("--max-reject-fraction", "-1", "argument --max-reject-fraction: must be from 0 to 1, got -1"),
        ("--grayscale", "gray", "argument --grayscale: invalid choice: 'gray'"),
    ],
)
def test_bad_option_values_exit_2_naming_the_option(command, option, value, says, sample_dir, tmp_path):
    host = ["--host", "http://127.0.0.1:9"] if command == "submit" else []
    p = run_cli(command, "--data", sample_dir, "--output", tmp_path / "out", *host, option, value, check=False)
    assert p.returncode == 2 and says in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "submit"])
def test_max_tasks_beyond_what_a_fan_in_takes_exits_2(command, sample_dir, tmp_path):
    host = ["--host", "http://127.0.0.1:9"] if command == "submit" else []
    p = run_cli(command, "--data", sample_dir, "--output", tmp_path, *host, "--max-tasks", "65", check=False)
    assert p.returncode == 2 and "argument --max-tasks: must be from 1 to 64, got 65" in p.stderr


@pytest.mark.parametrize("command", ["convert", "run"])
def test_unusable_outputs_exit_3_with_one_line_before_any_work(command, sample_copy, tmp_path):
    before = sorted(p.relative_to(sample_copy) for p in sample_copy.rglob("*"))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        a_file: f"error: {a_file}: the output is a file, not a folder",
        a_file / "out": f"error: {a_file / 'out'}: {a_file}, a parent of the output, is a file, not a folder",
        sample_copy: f"error: {sample_copy}: the output must not be the dataset folder itself",
        sample_copy / "train": f"error: {sample_copy / 'train'}: the output must not be {sample_copy / 'train'} or",
        sample_copy
        / "val"
        / "out": f"error: {sample_copy / 'val' / 'out'}: the output must not be {sample_copy / 'val'}",
        # a read-only file system: /sys refuses new files even to root
        "/sys/imagenet-tfrecords-out": "error: /sys/imagenet-tfrecords-out: cannot write in /sys (",
    }
    for output, says in cases.items():
        p = run_cli(command, "--data", sample_copy, "--output", output, check=False)
        assert p.returncode == 3, p.stderr
        assert _error_line(p).startswith(says), p.stderr
        assert not ANSI.search(p.stderr) and "RuntimeError" not in p.stderr
    assert sorted(p.relative_to(sample_copy) for p in sample_copy.rglob("*")) == before  # the data is untouched


def test_a_failing_step_says_its_own_cause_once_and_is_not_retried(sample_copy, tmp_path):
    """Bad metadata found inside the local pipeline's first step, and a conversion task that fails."""
    (sample_copy / "wnids.txt").write_text("n00000001\nnot a class id\n")
    p = run_cli("run", "--data", sample_copy, "--output", tmp_path / "out", check=False)
    assert p.returncode == 3
    log = tmp_path / "out" / "_work" / "kfp-local.log"
    assert _error_line(p) == (
        f"error: {sample_copy / 'wnids.txt'}:2: not a class id: 'not a class id' (kfp.local's log: {log})"
    )
    assert "parse-metadata" in log.read_text() and not ANSI.search(log.read_text())


def test_local_runs_have_no_retries_and_the_cluster_pipeline_has(tmp_path):
    from kfp import compiler

    from imagenet_tfrecords_kfp.pipelines.tinyimagenet_to_tfrecords import build_pipeline

    def retries(pipeline):
        compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
        spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
        tasks = [t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()]
        return [t["retryPolicy"]["maxRetryCount"] for t in tasks if "retryPolicy" in t]

    assert retries(build_pipeline(retries=False)) == []
    assert retries(build_pipeline()) == [2]


def test_a_conversion_task_that_fails_fails_the_run_at_once(sample_dir, tmp_path):
    out = tmp_path / "out"
    claim(str(out))  # a new output of this project, then a file in the way of the train shards
    (out / "train").write_text("a file where the train shards go")
    p = run_cli("run", "--data", sample_dir, "--output", out, "--workers", "1", check=False)
    assert p.returncode == 3  # an output that cannot be written: named, not an internal error
    line = _error_line(p)
    assert line.startswith(f"error: {out / 'train'}/train-") and "cannot be written (" in line, line
    assert "kfp.local's log" in line, line
    log = (out / "_work" / "kfp-local.log").read_text()
    assert log.count("Task 'convert-shards' finished with status FAILURE") == 1  # once: no retry


def test_run_is_quiet_and_says_where_things_are(sample_dir, tmp_path):
    out = tmp_path / "out"
    p = run_cli("run", "--data", sample_dir, "--output", out, "--train-shards", "6")
    lines = p.stdout.splitlines()
    assert len(lines) + len(p.stderr.splitlines()) <= 15, p.stdout + p.stderr
    assert p.stderr == "" and not ANSI.search(p.stdout)
    assert lines[:3] == [
        "train: 72 records in 6 shards; 3 grayscale images converted to RGB",
        "val: 30 records in 2 shards; 1 grayscale image converted to RGB",
        "test: 20 records in 2 shards",
    ] or lines[0].startswith("train: 72 records in 6 shards"), lines
    whole, phase = (
        r"wall time of the whole run [\d.]+ s \(\d+ images/s\)",
        r"conversion phase [\d.]+ s \(\d+ images/s\)",
    )
    assert re.fullmatch(rf"122 records converted; {whole}, {phase}", lines[-2]), lines
    assert lines[-1] == f"no rejects; report: {out / 'report.html'}"
    assert "{" not in p.stdout and " 1 shards" not in p.stdout


def test_verbose_anywhere_shows_kfp_locals_logs(sample_dir, tmp_path):
    p = run_cli("run", "--data", sample_dir, "--output", tmp_path / "out", "-v")
    assert "finished with status" in p.stdout and "executor" in p.stdout.lower()
    assert run_cli("-v", "verify", tmp_path / "out").returncode == 0


def test_a_resumed_run_says_what_it_kept_and_rates_only_what_it_converted(sample_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("convert", "--data", sample_dir, "--output", out, "--train-shards", "6")
    p = run_cli("convert", "--data", sample_dir, "--output", out, "--train-shards", "6")
    assert re.search(
        r"^nothing to convert: all 8 shards kept from an earlier run \(wall time of the whole run [\d.]+ s\)$",
        p.stdout,
        re.M,
    )
    (out / "train" / "train-00001-of-00006.tfrecord").unlink()
    p = run_cli("run", "--data", sample_dir, "--output", out, "--train-shards", "6")
    assert re.search(
        r"^\d+ records converted; wall time of the whole run [\d.]+ s \(\d+ images/s\), "
        r"conversion phase [\d.]+ s \(\d+ images/s\); 1 shard converted, 7 kept from an earlier run",
        p.stdout,
        re.M,
    )


def test_submit_to_an_unreachable_host_is_one_line(sample_dir, tmp_path):
    host = ["--host", "http://127.0.0.1:9"]
    p = run_cli("submit", *host, "--data", sample_dir, "--output", tmp_path, "--mounted", "-v", check=False)
    assert p.returncode == 3
    assert (
        _error_line(p)
        == "error: --host http://127.0.0.1:9: cannot reach the Kubeflow Pipelines API ([Errno 111] Connection "
        "refused); check --host"
    )


def test_nothing_is_left_in_the_temporary_folder(sample_dir, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    run_cli("run", "--data", sample_dir, "--output", tmp_path / "out", "--max-tasks", "3", env=env)
    run_cli("convert", "--data", sample_dir, "--output", tmp_path / "out2", env=env)
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    "args", [["report", "{out}", "--html", "{nowhere}/r.html"], ["compile", "--output", "{nowhere}/p.yaml"]]
)
def test_no_folder_is_created_where_nobody_asked(args, sample_dir, tmp_path):
    out, nowhere = tmp_path / "out", tmp_path / "no" / "such"
    if args[0] == "report":
        run_cli("convert", "--data", sample_dir, "--output", out)
    p = run_cli(*(a.format(out=out, nowhere=nowhere) for a in args), check=False)
    assert p.returncode == 2 and f"folder {nowhere} does not exist" in p.stderr
    assert not (tmp_path / "no").exists()


def test_every_option_and_argument_has_help_and_shows_its_default():
    commands = parser()._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.help == "==SUPPRESS==" or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = sub.format_help()
        assert "example:" in text
        for action in sub._actions:
            if (
                action.option_strings
                and action.default not in (None, "", False, "==SUPPRESS==")
                and not action.required
            ):
                assert f"(default: {action.default})" in " ".join(text.split()), f"{name} {action.option_strings}"


def test_fresh_sample_help_runs(tmp_path):
    shutil.rmtree(tmp_path)
    p = run_cli(
        "sample", "--output", tmp_path / "s", "--classes", "2", "--train-per-class", "2", "--val", "2", "--test", "1"
    )
    assert (
        p.stdout.strip() == f"wrote a sample dataset to {tmp_path / 's'}: 2 classes, 4 train, 2 val and 1 test images"
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_a_librarys_logged_traceback_shows_only_with_verbose(verbose):
    # gcsfs logs a failed request with its traceback (GCS answers the cancel of an upload with 499)
    script = (
        "import logging, sys\n"
        "from imagenet_tfrecords.cli import configure_logging\n"
        "configure_logging(sys.argv[1] == 'v')\n"
        "try:\n"
        "    raise OSError('499 Client Closed Request\\nmore')\n"
        "except OSError as e:\n"
        "    logging.getLogger('gcsfs').exception('_request non-retriable exception: %s', e)\n"
        "logging.getLogger('imagenet_tfrecords').info('converted')\n"
    )
    p = subprocess.run([sys.executable, "-c", script, "v" if verbose else "-"], capture_output=True, text=True)
    lines = p.stderr.splitlines()
    assert lines[0] == "ERROR gcsfs: _request non-retriable exception: 499 Client Closed Request"
    assert lines[-1] == "INFO imagenet_tfrecords: converted"
    assert ("Traceback (most recent call last):" in lines) is verbose, p.stderr
    if not verbose:
        assert len(lines) == 2, p.stderr
