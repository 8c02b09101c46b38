"""The seams between the pipeline's steps: the conversion's options enter once, at the plan step, and
travel in the plan; every parameter is checked there, with the command line's own messages, before
anything is fanned out; a task that cannot see the plan's output says so.

Through the committed components/*.yaml as a user reusing them loads them, and through tasks.py.
"""

import inspect
import json
import os
import subprocess
import sys

import pytest
import yaml
from kfp import compiler, components, dsl

from imagenet_tfrecords import tasks
from imagenet_tfrecords.cli import main

from .conftest import ROOT

STEP_YAMLS = ROOT / "components"
COMPILED = ROOT / "pipelines" / "tinyimagenet_to_tfrecords.yaml"
# what a conversion's steps must agree on: given to parse-metadata only
CARRIED = (
    "output_url",
    "format",
    "grayscale",
    "image_size",
    "resize",
    "resize_mode",
    "shorter_side",
    "label_offset",
    "jpeg_quality",
    "workers",
    "max_reject_fraction",
)
# a reuser's choices that changed the records while aggregate-stats recorded its own defaults
GIVEN = {"format": "tf-models", "grayscale": "skip", "resize": "32x32", "jpeg_quality": 80}


def _steps():
    return {n: components.load_component_from_file(str(STEP_YAMLS / f"{n}.yaml")) for n in _NAMES}


_NAMES = ("parse_metadata", "convert_shards", "aggregate_stats")


def _inputs(component) -> dict:
    return component.component_spec.inputs or {}


def test_the_later_step_yamls_take_no_option_of_their_own():
    parse, convert, aggregate = _steps().values()
    assert set(_inputs(convert)) == {"plan", "task"}
    assert set(_inputs(aggregate)) == {"plan", "shards"}
    assert set(CARRIED) <= set(_inputs(parse))


def _reused(given: dict):
    """A pipeline wired from the three step YAMLs as components/README.md shows a reuser."""
    parse, convert, aggregate = _steps().values()

    @dsl.pipeline(name="reused-steps")
    def reused(data_url: str, output_url: str):
        plan = parse(data_url=data_url, output_url=output_url, max_tasks=2, shard_size=8, **given)
        with dsl.ParallelFor(plan.outputs["Output"]) as number:
            task = convert(plan=plan.outputs["plan"], task=number)
        aggregate(plan=plan.outputs["plan"], shards=dsl.Collected(task.outputs["shards"]))

    return reused


@pytest.mark.parametrize("name", CARRIED)
@pytest.mark.parametrize("step", ["convert_shards", "aggregate_stats"])
def test_a_reuser_cannot_give_a_later_step_an_option_of_its_own(step, name):
    """The disagreement of the old step YAMLs (format="tf-models" to convert-shards, aggregate-stats left at
    "seed") cannot be written: the later steps have no such input."""
    component = _steps()[step]
    with pytest.raises(TypeError, match=f'unexpected keyword argument "{name}"'):

        @dsl.pipeline(name="disagreeing")
        def disagreeing(data_url: str, output_url: str):
            parse = _steps()["parse_metadata"](data_url=data_url, output_url=output_url)
            if step == "convert_shards":
                component(plan=parse.outputs["plan"], task="0", **{name: "x"})
            else:
                component(plan=parse.outputs["plan"], shards=[], **{name: "x"})


def test_a_pipeline_of_the_step_yamls_sends_the_options_to_the_plan_step_only(tmp_path):
    compiler.Compiler().compile(_reused(GIVEN), str(tmp_path / "reused.yaml"))
    spec = yaml.safe_load((tmp_path / "reused.yaml").read_text())
    params = {
        name: set(c["inputDefinitions"].get("parameters", {}))
        for name, c in spec["components"].items()
        if "executorLabel" in c
    }
    assert params["comp-convert-shards"] == {"task"}
    assert "comp-aggregate-stats" not in params or params["comp-aggregate-stats"] == set()
    assert set(CARRIED) <= params["comp-parse-metadata"]


_RUN_REUSED = """
import json, sys
from kfp import local
sys.path.insert(0, sys.argv[1])
from tests.test_step_seams import GIVEN, _reused
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[4], raise_on_error=True)
_reused(GIVEN)(data_url=sys.argv[2], output_url=sys.argv[3])
"""


@pytest.mark.slow
def test_a_pipeline_of_the_step_yamls_run_with_kfp_local_records_what_it_wrote(sample_dir, tmp_path):
    """The reuser's pipeline run: tf-models records of 32x32 images, grayscale ones skipped, and a
    dataset_info.json that says so, read back by load()."""
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-c", _RUN_REUSED, str(ROOT), str(sample_dir), str(out), str(tmp_path / "root")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _check_written_as_given(out)


def _check_written_as_given(out):
    import imagenet_tfrecords

    info = json.loads((out / "dataset_info.json").read_text())
    assert {k: info["options"][k] for k in GIVEN} == GIVEN
    assert info["format"] == "tf-models"
    assert info["splits"]["train"]["skipped"] > 0  # grayscale ones left out, counted
    import tensorflow as tf

    raw = next(iter(tf.data.TFRecordDataset(str(next((out / "train").glob("*.tfrecord"))))))
    example = tf.train.Example.FromString(raw.numpy())
    assert "image/encoded" in example.features.feature and "channel" not in example.features.feature
    images = [image for image, _ in imagenet_tfrecords.load(str(out), "train").take(4)]
    assert {tuple(i.shape) for i in images} == {(32, 32, 3)}


def test_the_steps_in_process_take_the_options_from_the_plan(sample_dir, tmp_path):
    """tasks.py, as the components call it: convert_step and aggregate_step read the plan's options."""
    for step in (tasks.convert_step, tasks.aggregate_step):
        assert not set(inspect.signature(step).parameters) & {"options", "output_url", "workers", *CARRIED}
    out, plan, labels = tmp_path / "out", str(tmp_path / "plan.json"), str(tmp_path / "labels.txt")
    numbers, summary = tasks.plan_step(
        str(sample_dir), str(out), 8, 2, plan, labels, options=GIVEN, workers=1, max_reject_fraction=1
    )
    assert summary["format"] == "tf-models"
    carried = json.loads((tmp_path / "plan.json").read_text())
    assert (carried["output"], carried["workers"], carried["max_reject_fraction"]) == (str(out), 1, 1.0)
    runs = [tasks.convert_step(plan, n, str(tmp_path / f"m{n}.json")) for n in numbers]
    assert sum(r["resumed"] for r in runs) == 0
    tasks.aggregate_step(plan, runs, str(tmp_path / "ds"), str(tmp_path / "s"), str(tmp_path / "r.html"))
    _check_written_as_given(out)
    # resumption: a new plan with the same options keeps every shard; other options convert again
    tasks.plan_step(str(sample_dir), str(out), 8, 2, plan, labels, options=GIVEN, workers=1, max_reject_fraction=1)
    again = [tasks.convert_step(plan, n, str(tmp_path / f"m{n}.json")) for n in numbers]
    assert [r["resumed"] for r in again] == [r["shards"] for r in again]
    other = {**GIVEN, "resize": "16x16"}
    tasks.plan_step(str(sample_dir), str(out), 8, 2, plan, labels, options=other, workers=1, max_reject_fraction=1)
    assert sum(tasks.convert_step(plan, n, str(tmp_path / f"m{n}.json"))["resumed"] for n in numbers) == 0


# --- every parameter checked before the fan-out, with the command line's messages ----------------

# (pipeline parameter, value, its command-line option); the combinations: more parameters, no option
BAD = [
    ("grayscale", "RGB", "--grayscale"),
    ("resize", "64", "--resize"),
    ("format", "tfrecord", "--format"),
    ("image_size", "64", "--image-size"),
    ("resize_mode", "crop", "--resize-mode"),
    ("layout", "coco", "--layout"),
    ("train_order", "random", "--train-order"),
    ("shorter_side", -1, "--shorter-side"),
    ("jpeg_quality", 0, "--jpeg-quality"),
    ("label_offset", 1001, "--label-offset"),
    ("workers", -2, "--workers"),
    ("shard_size", 0, "--shard-size"),
    ("train_shards", -1, "--train-shards"),
    ("max_reject_fraction", 1.5, "--max-reject-fraction"),
]
COMBINATIONS = [
    ({"resize": "32x32", "shorter_side": 16}, ["--resize", "32x32", "--shorter-side", "16"]),
    ({"label_offset": 1}, ["--label-offset", "1"]),
    ({"resize_mode": "center-crop"}, ["--resize-mode", "center-crop"]),
]


def _cli_error(capsys, sample_dir, tmp_path, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main(["convert", "--data", str(sample_dir), "--output", str(tmp_path / "cli"), *map(str, args)])
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def _plan_step(sample_dir, out, **values):
    from kfp.dsl import Artifact

    from imagenet_tfrecords_kfp.components import parse_metadata

    plan, labels = Artifact(uri=str(out.parent / "plan.json")), Artifact(uri=str(out.parent / "labels.txt"))
    return parse_metadata.python_func(str(sample_dir), str(out), plan, labels, **values)


@pytest.mark.parametrize("name, value, option", BAD, ids=[b[0] for b in BAD])
def test_a_bad_parameter_fails_the_plan_step_with_the_command_lines_message(
    name, value, option, sample_dir, tmp_path, capsys
):
    cli = _cli_error(capsys, sample_dir, tmp_path, option, value)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as e:  # arguments.ParameterError
        _plan_step(sample_dir, out, **{name: value})
    assert cli.endswith(f"argument {option}: {str(e.value).split(': ', 1)[1]}"), (cli, str(e.value))
    assert str(e.value).startswith(f"{name}: ")
    assert not out.exists() and not (tmp_path / "plan.json").exists()  # nothing written, nothing to fan out


@pytest.mark.parametrize("values, args", COMBINATIONS, ids=["resize+shorter_side", "label_offset", "resize_mode"])
def test_options_that_do_not_go_together_fail_the_plan_step_as_the_command_line_does(
    values, args, sample_dir, tmp_path, capsys
):
    cli = _cli_error(capsys, sample_dir, tmp_path, *args)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as e:  # arguments.ParameterError
        _plan_step(sample_dir, out, **values)
    assert cli == f"error: {e.value}"
    assert not out.exists()


def test_whole_numbers_kfp_local_hands_over_as_floats_pass(sample_dir, tmp_path):
    items = _plan_step(sample_dir, tmp_path / "out", shard_size=8.0, max_tasks=2.0, workers=1.0)
    assert items == ["0", "1"]


def test_a_task_that_cannot_see_the_plans_output_says_so_in_one_line(sample_dir, tmp_path):
    """A local output_url on a cluster: the plan step's pod wrote it on its own disk; a conversion pod
    (or the aggregation's) does not see it. Here the output moves away after planning."""
    out, plan, labels = tmp_path / "out", str(tmp_path / "plan.json"), str(tmp_path / "labels.txt")
    tasks.plan_step(str(sample_dir), str(out), 8, 2, plan, labels)
    out.rename(tmp_path / "elsewhere")
    expected = (
        f"output_url {out}: {{}} cannot see the plan's output (no _work/plan/ there): a local path is seen only by "
        "the machine that planned; on a cluster give gs://, s3:// or a volume every step mounts at that path"
    )
    from imagenet_tfrecords.fs import BadOutput

    with pytest.raises(BadOutput) as e:
        tasks.convert_step(plan, 0, str(tmp_path / "m.json"))
    assert str(e.value) == expected.format("this conversion task")
    with pytest.raises(BadOutput) as e:
        tasks.aggregate_step(plan, [], str(tmp_path / "ds"), str(tmp_path / "s"), str(tmp_path / "r"))
    assert str(e.value) == expected.format("the aggregation")
    assert not out.exists()  # nothing made where the task looked


# --- the step YAMLs' defaults and descriptions ----------------------------------------------------


def test_every_optional_input_of_a_step_yaml_has_the_pipelines_default():
    """A reuser passes only what differs: the plan step requires data_url and output_url, nothing else,
    and its defaults are the pipeline's."""
    pipeline = yaml.safe_load(COMPILED.read_text())["root"]["inputDefinitions"]["parameters"]
    for name, step in _steps().items():
        for key, spec in _inputs(step).items():
            if key in ("data_url", "output_url") or spec.type.startswith("system.") or key in ("plan", "shards"):
                continue
            if name == "convert_shards" and key == "task":  # the loop item
                continue
            assert spec.optional, f"{name}.{key} has no default"
            if key in pipeline:
                assert spec.default == pipeline[key]["defaultValue"], (name, key)
    parse = _inputs(_steps()["parse_metadata"])
    assert {k for k in pipeline if "defaultValue" in pipeline[k]} <= set(parse)
    assert [k for k, s in parse.items() if not s.optional] == ["data_url", "output_url"]


def test_in_the_compiled_pipeline_only_the_plan_step_takes_the_pipelines_parameters():
    """The committed pipeline as the backend reads it: every run parameter reaches parse-metadata; convert-shards
    gets the plan and its loop item, aggregate-stats the plan and the collected shards, nothing else."""
    spec = yaml.safe_load(COMPILED.read_text())
    tasks_ = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks_.update(comp.get("dag", {}).get("tasks", {}))
    inputs = {n: t.get("inputs", {}) for n, t in tasks_.items()}
    assert set(inputs["convert-shards"].get("parameters", {})) == {"task"}
    assert set(inputs["convert-shards"]["artifacts"]) == {"plan"}
    assert "parameters" not in inputs["aggregate-stats"]
    assert set(inputs["aggregate-stats"]["artifacts"]) == {"plan", "shards"}
    run_parameters = set(spec["root"]["inputDefinitions"]["parameters"])
    given = inputs["parse-metadata"]["parameters"]
    assert set(given) == run_parameters
    assert all(v == {"componentInputParameter": k} for k, v in given.items()), given


def test_output_url_says_what_a_cluster_needs():
    for path in (STEP_YAMLS / "parse_metadata.yaml", COMPILED):
        spec = yaml.safe_load(path.read_text())
        text = " ".join(spec["root"]["inputDefinitions"]["parameters"]["output_url"]["description"].split())
        assert "gs://" in text and "s3://" in text and "volume that every step mounts" in text, text
