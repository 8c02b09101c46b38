"""The compiled pipeline: structure, freshness, image name, and a full local run."""

import ast
import json
import os
import subprocess
import sys

import pytest
import yaml

from imagenet_tfrecords_kfp.compile import COMPILED
from imagenet_tfrecords_kfp.components import IMAGE

from .conftest import ROOT, read_split, run_cli


@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load(COMPILED.read_text())


def test_committed_yaml_matches_the_code(tmp_path):
    """The pipeline's and every component's YAML, as make compile writes them (make compile-check)."""
    env = {k: v for k, v in os.environ.items() if k != "IMAGENET_TFRECORDS_IMAGE"}
    subprocess.run([sys.executable, "-m", "imagenet_tfrecords_kfp.compile", str(tmp_path)], check=True, env=env)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml"))
    assert fresh == sorted(p.relative_to(ROOT) for d in ("pipelines", "components") for p in (ROOT / d).glob("*.yaml"))
    for rel in fresh:
        assert (tmp_path / rel).read_text() == (ROOT / rel).read_text(), f"{rel} is stale: run 'make compile'"


def test_fan_out_over_work_items_and_fan_in_with_collected(spec):
    tasks = spec["root"]["dag"]["tasks"]
    loops = [name for name in tasks if name.startswith("for-loop")]
    assert sorted(tasks) == sorted(["parse-metadata", "aggregate-stats", *loops]) and len(loops) == 1
    loop = tasks[loops[0]]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--parse-metadata-Output"
    assert loop["iteratorPolicy"]["parallelismLimit"] == 16
    assert loop["dependentTasks"] == ["parse-metadata"]
    body = spec["components"]["comp-" + loops[0]]["dag"]
    assert list(body["tasks"]) == ["convert-shards"]
    # aggregate-stats takes the list of every iteration's Dataset artifact
    shards = tasks["aggregate-stats"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
    assert shards["producerTask"] == loops[0]
    agg_inputs = spec["components"]["comp-aggregate-stats"]["inputDefinitions"]["artifacts"]["shards"]
    assert agg_inputs["isArtifactList"] is True
    assert agg_inputs["artifactType"]["schemaTitle"] == "system.Dataset"


def test_typed_pipeline_outputs(spec):
    outputs = spec["root"]["outputDefinitions"]["artifacts"]
    assert outputs["dataset"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert outputs["sizes"]["artifactType"]["schemaTitle"] == "system.Artifact"
    assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {
        "data_url",
        "output_url",
        "grayscale",
        "max_tasks",
        "shard_size",
        "image_size",
        "max_reject_fraction",
        "workers",
    } <= set(params)
    assert "isOptional" not in params["data_url"] and "isOptional" not in params["output_url"]
    assert params["grayscale"]["defaultValue"] == "rgb"


def test_every_component_runs_the_project_image_without_installing_anything(spec):
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 3
    for ex in executors.values():
        c = ex["container"]
        assert c["image"] == IMAGE
        assert "pip install" not in " ".join(c["command"])
    res = executors["exec-convert-shards"]["container"]["resources"]
    assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == "2"
    assert res["resourceMemoryLimit"] == "1Gi"


def test_component_docstrings_document_every_input_and_output(spec):
    for name, comp in spec["components"].items():
        if "executorLabel" not in comp:
            continue
        for kind in ("inputDefinitions", "outputDefinitions"):
            for group in comp.get(kind, {}).values():
                for key, value in group.items():
                    if key != "Output":
                        assert value.get("description"), f"{name}: {key} has no description"


def test_image_name_is_overridable_at_compile_time(tmp_path):
    out = tmp_path / "p.yaml"
    env = {**os.environ, "IMAGENET_TFRECORDS_IMAGE": "registry.example/team/itf:dev"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from imagenet_tfrecords_kfp.pipelines.tinyimagenet_to_tfrecords import "
            f"compile_pipeline; compile_pipeline({str(out)!r}, parallelism=4)",
        ],
        check=True,
        env=env,
    )
    spec = yaml.safe_load(out.read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.example/team/itf:dev"
    }
    loop = next(t for n, t in spec["root"]["dag"]["tasks"].items() if n.startswith("for-loop"))
    assert loop["iteratorPolicy"]["parallelismLimit"] == 4


CORE = ROOT / "src" / "imagenet_tfrecords"
TENSORFLOW_READERS = {"reader.py", "records.py"}  # the tf.data reader and the parse spec, imported lazily


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_never_imports_kfp_nor_the_kubeflow_side():
    """Every module under src/imagenet_tfrecords, at module level or inside a function."""
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 10
    for path in modules:
        found = _imports(path) & {"kfp", "kfp_server_api", "imagenet_tfrecords_kfp"}
        assert not found, f"{path.relative_to(ROOT)} imports {found}"
        if path.name not in TENSORFLOW_READERS:
            assert "tensorflow" not in _imports(path), f"{path.relative_to(ROOT)} imports tensorflow"


def test_importing_the_core_and_its_command_line_loads_neither_kfp_nor_tensorflow():
    code = (
        "import sys, imagenet_tfrecords.cli, imagenet_tfrecords.tasks, imagenet_tfrecords.reader, "
        "imagenet_tfrecords.sample; imagenet_tfrecords.cli.parser(); "
        "bad = [m for m in ('kfp', 'tensorflow') if m in sys.modules]; sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_local_pipeline_run_matches_convert(sample_dir, tmp_path):
    """The README's main command: the whole pipeline through kfp.local, then verify."""
    run_out, conv_out = tmp_path / "run", tmp_path / "convert"
    p = run_cli("run", "--data", sample_dir, "--output", run_out, "--max-tasks", "4", "--train-shards", "6")
    assert "train: 72 records in 6 shards" in p.stdout
    run_cli("convert", "--data", sample_dir, "--output", conv_out, "--train-shards", "6")
    for split in ("train", "val", "test"):
        a = sorted(f.name for f in (run_out / split).iterdir())
        assert a == sorted(f.name for f in (conv_out / split).iterdir())
        for name in a:
            assert (run_out / split / name).read_bytes() == (conv_out / split / name).read_bytes()
        assert (
            len(read_split(run_out, split))
            == json.loads((run_out / "dataset_info.json").read_text())["splits"][split]["num_records"]
        )
    assert (run_out / "sizes.txt").read_text() == "train,72\nval,30\ntest,20"
    run_cli("verify", run_out)
