"""The image path a user follows: what `make install` gives for `run --runner docker`, the image
references `compile` and `submit` accept, the step YAMLs and the training example in an image of one's own."""

import os
import re
import subprocess

import pytest
import yaml
from kfp import compiler, dsl

from imagenet_tfrecords.fs import install_command

from .conftest import ROOT, run_cli

MINE = "registry.example.com/ml/imagenet-tfrecords@sha256:" + "ef" * 32


def test_make_install_installs_the_docker_client_that_run_runner_docker_imports():
    """The README's pre-push check (run --runner docker) after make install alone."""
    p = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), "install", "PYTHON=python3"], capture_output=True, text=True, check=True
    )
    (pip,) = [line for line in p.stdout.splitlines() if " install " in line and "-e " in line]
    extras = re.search(r"-e '\.\[([\w,]+)\]'", pip).group(1).split(",")
    assert "docker" in extras, pip
    assert re.search(r'^docker = \["docker>=[\d.]+"\]$', (ROOT / "pyproject.toml").read_text(), re.M)


def test_without_the_docker_package_runner_docker_is_exit_3_saying_so(sample_dir, tmp_path):
    """A Python where the package is missing (a module named docker that is not there)."""
    shadow = tmp_path / "no-docker" / "docker"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'docker'\", name='docker')\n")
    env = {"PYTHONPATH": f"{shadow.parent}:{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "out"
    p = run_cli("run", "--data", sample_dir, "--output", out, "--runner", "docker", check=False, env=env)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert p.stderr.strip().splitlines() == [
        "error: --runner docker needs the Python package 'docker', which is not installed here: "
        f"{install_command('docker')} (make install installs it)"
    ]
    assert not out.exists()


def test_without_a_docker_engine_runner_docker_is_exit_3_naming_docker(sample_dir, tmp_path):
    out = tmp_path / "out"
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    p = run_cli("run", "--data", sample_dir, "--output", out, "--runner", "docker", check=False, env=env)
    assert p.returncode == 3, (p.returncode, p.stderr)
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: --runner docker: no Docker engine answers here"), line


@pytest.mark.parametrize("bad", ["not a valid image!!", "@sha256:0123", "name@sha256:0123"])
@pytest.mark.parametrize("command", ["compile", "submit"])
def test_compile_and_submit_refuse_an_image_reference_that_is_not_one(command, bad, tmp_path):
    args = ["--output", tmp_path / "p.yaml"]
    if command == "submit":
        args = ["--host", "http://127.0.0.1:9", "--data", "s3://b/d", "--output", "s3://b/o"]
    p = run_cli(command, *args, "--image", bad, check=False)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert f"argument --image: {bad!r}" in p.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_an_image_variable_that_is_not_a_reference_is_refused(tmp_path):
    p = run_cli("compile", "--output", tmp_path / "p.yaml", check=False, env={"IMAGENET_TFRECORDS_IMAGE": "@sha256:0"})
    assert p.returncode == 2 and "error: IMAGENET_TFRECORDS_IMAGE: '@sha256:0' is not an image reference" in p.stderr


def test_without_image_compile_says_which_image_the_yaml_names(tmp_path):
    from imagenet_tfrecords_kfp.components.image import DEFAULT_IMAGE

    env = {"IMAGENET_TFRECORDS_IMAGE": ""}
    p = run_cli("compile", "--output", tmp_path / "p.yaml", env=env)
    assert p.stderr.strip().splitlines() == [
        f"note: no --image: the steps name {DEFAULT_IMAGE}, the default, which exists once this version is "
        "released; to use your own, build and push it (make image) and give it with --image or "
        "IMAGENET_TFRECORDS_IMAGE"
    ]
    assert f"(image {DEFAULT_IMAGE})" in p.stdout
    p = run_cli("compile", "--output", tmp_path / "q.yaml", "--image", MINE)
    assert p.stderr == ""


def _images(spec: dict) -> dict:
    return {n: e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}


def test_the_step_yamls_run_in_ones_own_image(tmp_path):
    """components/README.md's two ways: load(path, image), or set_container_image on each task."""
    from imagenet_tfrecords_kfp.components import load

    def reused(how: str):
        names = ("parse_metadata", "convert_shards", "aggregate_stats")
        paths = [str(ROOT / "components" / f"{n}.yaml") for n in names]
        parse, convert, aggregate = (load(p, MINE) if how == "load" else load(p) for p in paths)

        @dsl.pipeline(name="mine")
        def mine(data_url: str, output_url: str):
            plan = parse(data_url=data_url, output_url=output_url)
            with dsl.ParallelFor(plan.outputs["Output"]) as number:
                task = convert(plan=plan.outputs["plan"], task=number)
            stats = aggregate(plan=plan.outputs["plan"], shards=dsl.Collected(task.outputs["shards"]))
            if how == "set_container_image":
                for t in (plan, task, stats):
                    t.set_container_image(MINE)

        return mine

    for how in ("load", "set_container_image"):
        compiler.Compiler().compile(reused(how), str(tmp_path / f"{how}.yaml"))
        images = _images(yaml.safe_load((tmp_path / f"{how}.yaml").read_text()))
        assert len(images) == 3 and set(images.values()) == {MINE}, (how, images)


def test_load_refuses_an_image_reference_that_is_not_one():
    from imagenet_tfrecords_kfp.components import load

    with pytest.raises(ValueError, match="is not an image reference"):
        load(str(ROOT / "components" / "convert_shards.yaml"), "not a valid image!!")


def _example(tmp_path, *args, env=None) -> dict:
    out = tmp_path / "example.yaml"
    p = subprocess.run(
        [os.sys.executable, "-m", "imagenet_tfrecords_kfp.pipelines.train_example", str(out), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert p.returncode == 0, p.stderr
    return _images(yaml.safe_load(out.read_text()))


def test_the_training_examples_conversion_steps_follow_the_image(tmp_path):
    for images in (
        _example(tmp_path, env={"IMAGENET_TFRECORDS_IMAGE": "registry.example/itf:1"}),
        _example(tmp_path, "--image", "registry.example/itf:1"),
    ):
        assert images.pop("exec-train-small-model") == "registry.example/itf:1-tf"
        assert len(images) == 3 and set(images.values()) == {"registry.example/itf:1"}, images
    images = _example(tmp_path, "--image", MINE, "--train-image", "registry.example/itf:1-tf")
    assert images.pop("exec-train-small-model") == "registry.example/itf:1-tf"
    assert set(images.values()) == {MINE}
