"""The YAML a release attaches, loaded the way KFP users load published components: by URL
(``kfp.components.load_component_from_url``), from a local HTTP server serving the files that
``scripts/release.py compile`` writes against an image digest. They build and compile a pipeline whose every
step runs in that digest, and which passes the backend's type rules."""

import functools
import http.server
import subprocess
import sys
import threading

import pytest
import yaml
from kfp import compiler, components, dsl

from .conftest import ROOT
from .test_backend_conformance import edge_type_errors

REF = "ghcr.io/imagenet-tfrecords/imagenet-tfrecords@sha256:" + "5e" * 32


@pytest.fixture(scope="module")
def release_url(tmp_path_factory):
    """http://127.0.0.1:PORT/ serving pipelines/*.yaml and components/*.yaml as the release compiles them."""
    out = tmp_path_factory.mktemp("release")
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release.py"), "compile", str(out), "--image", REF],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    served: list[str] = []

    def log_message(self, format, *args):
        QuietHandler.served.append(self.path)


def _executor_images(spec: dict) -> set[str]:
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


def test_the_steps_loaded_by_url_build_a_pipeline_in_the_released_image(release_url, tmp_path):
    parse = components.load_component_from_url(f"{release_url}/components/parse_metadata.yaml")
    convert = components.load_component_from_url(f"{release_url}/components/convert_shards.yaml")
    aggregate = components.load_component_from_url(f"{release_url}/components/aggregate_stats.yaml")
    assert {"/components/parse_metadata.yaml", "/components/aggregate_stats.yaml"} <= set(QuietHandler.served)

    @dsl.pipeline(name="from-the-release")
    def reused(data_url: str, output_url: str):
        plan = parse(data_url=data_url, output_url=output_url, format="tf-models", resize="224x224", max_tasks=4)
        with dsl.ParallelFor(plan.outputs["Output"], parallelism=4) as number:
            task = convert(plan=plan.outputs["plan"], task=number)
        aggregate(plan=plan.outputs["plan"], shards=dsl.Collected(task.outputs["shards"]))

    compiler.Compiler().compile(reused, str(tmp_path / "reused.yaml"))
    spec = yaml.safe_load((tmp_path / "reused.yaml").read_text())
    assert _executor_images(spec) == {REF}
    assert len(spec["deploymentSpec"]["executors"]) == 3
    assert edge_type_errors(spec) == []


def test_the_pipeline_loaded_by_url_is_a_step_of_a_larger_pipeline(release_url, tmp_path):
    conversion = components.load_component_from_url(f"{release_url}/pipelines/tinyimagenet_to_tfrecords.yaml")

    @dsl.component(base_image="python:3.11-slim")
    def count(dataset: dsl.Input[dsl.Dataset]) -> str:
        return dataset.uri

    @dsl.pipeline(name="conversion-then-more")
    def larger(data_url: str, output_url: str):
        converted = conversion(data_url=data_url, output_url=output_url)
        count(dataset=converted.outputs["dataset"])

    compiler.Compiler().compile(larger, str(tmp_path / "larger.yaml"))
    spec = yaml.safe_load((tmp_path / "larger.yaml").read_text())
    images = _executor_images(spec)
    assert images == {REF, "python:3.11-slim"}
    assert edge_type_errors(spec) == []
