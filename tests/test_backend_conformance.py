"""Rules the real Kubeflow Pipelines backend (and Vertex AI) enforces that kfp.local does not.

Each test reads the compiled, committed pipeline YAML (or runs the pipeline and watches what it
passes) and cites where its rule comes from:

- Parameter types on every edge. The backend driver (kubeflow/pipelines
  backend/src/v2/driver/resolve.go, the parameter check at the end of resolveInputs, tags 2.14.0
  to 2.17.0) turns any value reaching a STRING input into JSON text and fails a string reaching
  any other type with 'input parameter "x" type mismatch: expect STRUCT, got string'. A loop
  over `-> list` declares its item STRING; over `-> list[int]` NUMBER_INTEGER.
- The executor input travels as one command-line argument (`--executor_input`) of the
  launcher; Linux refuses a single argument of 128 KiB or more (MAX_ARG_STRLEN; hit in the
  driver in kubeflow/pipelines#12453). We keep the largest under half of that.
- Vertex AI collects at most 100 artifacts in one dsl.Collected input ("Maximum number of
  artifacts exceeded. Maximum allowed: 100", kubeflow/kubeflow#7513).
- The API server rejects run parameters longer than 10,000 bytes ("The input parameter length
  exceed maximum size of 10000", kubeflow/pipelines#2286, #4828; raised to 20,000 only by #12519,
  after the minimum backend this project supports).
- kfp SDK releases before 2.16.0 crash on `Input[List[Dataset]]` when the backend sends
  collected artifacts with an empty schema title (kubeflow/pipelines#12546, fixed by #12707):
  the image pins the kfp that compiled the YAML.
- Caching is keyed on the inputs as written (URL strings), not on the data behind them: no
  step that reads the data may be served from the cache.
"""

import json
import re

import pytest
import yaml
from kfp import compiler, dsl

from imagenet_tfrecords.plan import MAX_TASKS
from imagenet_tfrecords_kfp.compile import COMPILED

from .conftest import ROOT

IMAGE_REQUIREMENTS = ROOT / "images" / "requirements.in"
NUMBERS = {"NUMBER_INTEGER", "NUMBER_DOUBLE"}
ARG_LIMIT = 64 * 1024  # half of Linux's MAX_ARG_STRLEN (32 pages of 4 KiB)


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "NUMBER_INTEGER"
    if isinstance(value, float):
        return "NUMBER_DOUBLE"
    return {str: "STRING", list: "LIST", dict: "STRUCT"}[type(value)]


def edge_type_errors(spec: dict) -> list[str]:
    """Every parameter edge whose producer type differs from the consumer's declared type.

    A number may feed any number type (the driver checks only that a number arrives); nothing else
    may differ, not even into a STRING input, which would receive JSON text instead of the value.
    """
    comps = spec["components"]
    owners = [("root", spec["root"])] + [(n, c) for n, c in comps.items() if "dag" in c]
    errors = []
    for owner_name, owner in owners:
        own_inputs = owner.get("inputDefinitions", {}).get("parameters", {})
        tasks = owner["dag"]["tasks"]
        for task_name, task in tasks.items():
            consumer = comps[task["componentRef"]["name"]]
            declared = consumer.get("inputDefinitions", {}).get("parameters", {})
            for name, source in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in source:
                    got = own_inputs[source["componentInputParameter"]]["parameterType"]
                elif "taskOutputParameter" in source:
                    out = source["taskOutputParameter"]
                    producer = comps[tasks[out["producerTask"]]["componentRef"]["name"]]
                    got = producer["outputDefinitions"]["parameters"][out["outputParameterKey"]]["parameterType"]
                elif "runtimeValue" in source:
                    got = _json_type(source["runtimeValue"]["constant"])
                else:
                    continue  # e.g. a task final status
                want = declared[name]["parameterType"]
                if got != want and not (got in NUMBERS and want in NUMBERS):
                    errors.append(f"{owner_name}/{task_name}.{name}: receives {got}, declares {want}")
            iterator = task.get("parameterIterator")
            if iterator:
                items = own_inputs.get(iterator["items"].get("inputParameter", ""), {}).get("parameterType")
                if items not in (None, "LIST"):
                    errors.append(f"{owner_name}/{task_name}: iterates over {items}, not a LIST")
    return errors


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(COMPILED.read_text())


def test_every_parameter_edge_has_the_same_type_at_both_ends(spec):
    assert edge_type_errors(spec) == []


def test_the_edge_check_catches_an_untyped_loop(tmp_path):
    """The shape of the old pipeline: `-> list` fanned out into a `dict` input."""

    @dsl.component(base_image="python:3.11")
    def items() -> list:
        return [{"shards": [0]}]

    @dsl.component(base_image="python:3.11")
    def work(item: dict):
        pass

    @dsl.pipeline
    def untyped():
        with dsl.ParallelFor(items().output) as item:
            work(item=item)

    compiler.Compiler().compile(untyped, str(tmp_path / "p.yaml"))
    errors = edge_type_errors(yaml.safe_load((tmp_path / "p.yaml").read_text()))
    assert len(errors) == 1 and "receives STRING, declares STRUCT" in errors[0]


def test_the_loop_items_the_plan_returns_have_the_declared_item_type(spec, sample_dir, tmp_path):
    """The driver passes each list element as is: its JSON type must be the loop item's type."""
    from kfp.dsl import Artifact

    from imagenet_tfrecords_kfp.components import parse_metadata

    loop = next(c for n, c in spec["components"].items() if n.startswith("comp-for-loop"))
    (item_type,) = [p["parameterType"] for n, p in loop["inputDefinitions"]["parameters"].items() if "loop-item" in n]
    plan, labels = Artifact(uri=str(tmp_path / "plan.json")), Artifact(uri=str(tmp_path / "labels.txt"))
    items = parse_metadata.python_func(str(sample_dir), str(tmp_path / "out"), plan, labels, shard_size=8, max_tasks=5)
    assert items == [str(n) for n in range(len(items))] and len(items) > 1
    assert {_json_type(n) for n in items} == {item_type}


STEP_YAMLS = ROOT / "components"


def _pipeline_from_step_yamls(task_yaml: str | None = None):
    """The committed pipeline's shape, wired from components/*.yaml as a user reusing them would, with the
    caching, resources and retries the committed pipeline sets (docs/cluster.md shows the same)."""
    from kfp import components

    from imagenet_tfrecords_kfp.pipelines import tinyimagenet_to_tfrecords as p

    parse = components.load_component_from_file(str(STEP_YAMLS / "parse_metadata.yaml"))
    convert = components.load_component_from_file(task_yaml or str(STEP_YAMLS / "convert_shards.yaml"))
    aggregate = components.load_component_from_file(str(STEP_YAMLS / "aggregate_stats.yaml"))

    @dsl.pipeline(name="reused-steps")
    def reused(data_url: str, output_url: str, max_tasks: int = 16, max_reject_fraction: float = 0.01):
        plan = parse(
            data_url=data_url, output_url=output_url, max_tasks=max_tasks, max_reject_fraction=max_reject_fraction
        )
        plan.set_caching_options(False).set_cpu_request(p.PLAN_CPUS).set_cpu_limit(p.PLAN_CPUS)
        plan.set_memory_request(p.PLAN_MEMORY).set_memory_limit(p.PLAN_MEMORY)
        with dsl.ParallelFor(plan.outputs["Output"], parallelism=16) as number:
            task = convert(plan=plan.outputs["plan"], task=number)
            task.set_caching_options(False).set_cpu_request(p.TASK_CPUS).set_cpu_limit(p.TASK_CPUS)
            task.set_memory_request(p.TASK_MEMORY).set_memory_limit(p.TASK_MEMORY)
            task.set_retry(p.RETRIES, p.RETRY_BACKOFF, 2, p.RETRY_WINDOW)
        stats = aggregate(plan=plan.outputs["plan"], shards=dsl.Collected(task.outputs["shards"]))
        stats.set_caching_options(False).set_cpu_request(p.AGGREGATE_CPUS).set_cpu_limit(p.AGGREGATE_CPUS)
        stats.set_memory_request(p.AGGREGATE_MEMORY).set_memory_limit(p.AGGREGATE_MEMORY)

    return reused


def _settings(spec: dict) -> dict:
    """Each step's caching, retry policy and resources, by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    executors = spec["deploymentSpec"]["executors"]
    return {
        name: (
            t.get("cachingOptions"),
            t.get("retryPolicy"),
            executors[spec["components"][t["componentRef"]["name"]]["executorLabel"]]["container"].get("resources"),
        )
        for name, t in tasks.items()
        if name in ("parse-metadata", "convert-shards", "aggregate-stats")
    }


def test_a_pipeline_built_from_the_step_yamls_passes_the_drivers_type_rules(spec, tmp_path):
    """components/*.yaml lose element types: parse-metadata's Output is a plain LIST, so the loop item is
    STRING, and convert-shards' task must be a STRING too (an int task is refused by the driver)."""
    compiler.Compiler().compile(_pipeline_from_step_yamls(), str(tmp_path / "reused.yaml"))
    reused = yaml.safe_load((tmp_path / "reused.yaml").read_text())
    assert edge_type_errors(reused) == []
    assert _settings(reused) == _settings(spec)

    # the shape this rule catches: the same step with `task: int`, as it was
    old = yaml.safe_load((STEP_YAMLS / "convert_shards.yaml").read_text())
    old["components"]["comp-convert-shards"]["inputDefinitions"]["parameters"]["task"]["parameterType"] = (
        "NUMBER_INTEGER"
    )
    old["root"]["inputDefinitions"]["parameters"]["task"]["parameterType"] = "NUMBER_INTEGER"
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    compiler.Compiler().compile(_pipeline_from_step_yamls(str(tmp_path / "old.yaml")), str(tmp_path / "bad.yaml"))
    errors = edge_type_errors(yaml.safe_load((tmp_path / "bad.yaml").read_text()))
    assert len(errors) == 1 and "convert-shards.task: receives STRING, declares NUMBER_INTEGER" in errors[0], errors


@pytest.mark.parametrize(
    "value, declared, ok",
    [(1.0, "NUMBER_INTEGER", True), (1, "NUMBER_DOUBLE", True), ("1", "NUMBER_INTEGER", False), (1, "STRING", False)],
)
def test_the_edge_check_lets_numbers_reach_any_number_type_and_nothing_else(value, declared, ok):
    """The SDK refuses a float output into an int input at compile time; the driver would pass it."""
    spec = {
        "components": {"comp-c": {"inputDefinitions": {"parameters": {"n": {"parameterType": declared}}}}},
        "root": {
            "dag": {
                "tasks": {
                    "c": {
                        "componentRef": {"name": "comp-c"},
                        "inputs": {"parameters": {"n": {"runtimeValue": {"constant": value}}}},
                    }
                }
            }
        },
    }
    assert (edge_type_errors(spec) == []) is ok


def test_no_collected_input_can_exceed_100_artifacts(spec):
    """One artifact per conversion task; the task count is capped by max_tasks <= 100."""
    default = spec["root"]["inputDefinitions"]["parameters"]["max_tasks"]["defaultValue"]
    assert default <= MAX_TASKS <= 100
    from imagenet_tfrecords.plan import group_tasks

    assert len(group_tasks(1_281_167, MAX_TASKS)) == MAX_TASKS  # a shard per ImageNet train file, even
    with pytest.raises(ValueError):
        group_tasks(1_000, MAX_TASKS + 1)


def test_run_parameter_defaults_fit_the_api_servers_limit(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {k: p["defaultValue"] for k, p in params.items() if "defaultValue" in p}
    assert len(json.dumps(defaults)) < 10_000
    assert {"data_url", "output_url"} <= set(params) - set(defaults)  # required, never a default


def test_nothing_that_reads_the_data_is_served_from_the_cache(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    for name in ("parse-metadata", "convert-shards", "aggregate-stats"):
        assert tasks[name]["cachingOptions"].get("enableCache", False) is False, name


def test_retries_cover_a_long_task(spec):
    """Argo counts backoffMaxDuration from the first retry (argo-workflows#13044,
    kubeflow/pipelines#14245): a window shorter than a task would silently drop its retries."""
    loop = next(c for n, c in spec["components"].items() if n.startswith("comp-for-loop"))
    policy = loop["dag"]["tasks"]["convert-shards"]["retryPolicy"]
    assert policy["maxRetryCount"] >= 1
    assert int(policy["backoffMaxDuration"].rstrip("s")) >= 12 * 3600


def test_every_step_requests_the_cpu_and_memory_it_is_limited_to(spec):
    """A pod without requests is refused in a namespace with a ResourceQuota on requests.cpu/memory
    (Kubernetes: 'must specify requests.cpu, requests.memory'); requests = limits keep it from being
    the first evicted."""
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 3
    for name, executor in executors.items():
        r = executor["container"].get("resources", {})
        assert r.get("resourceCpuRequest") and r.get("resourceMemoryRequest"), name
        assert (r["resourceCpuRequest"], r["resourceMemoryRequest"]) == (
            r.get("resourceCpuLimit"),
            r.get("resourceMemoryLimit"),
        ), name


def _image_kfp_pin() -> str:
    pins = re.findall(r"^kfp==([0-9][0-9.]*)$", IMAGE_REQUIREMENTS.read_text(), re.M)
    assert len(pins) == 1, "images/requirements.in must pin kfp exactly once (kfp==X.Y.Z)"
    return pins[0]


def test_image_pins_the_kfp_that_compiled_the_yaml(spec):
    import kfp

    pin = _image_kfp_pin()
    assert spec["sdkVersion"] == f"kfp-{pin}", "the image and the committed YAML disagree on kfp"
    assert tuple(int(x) for x in pin.split(".")[:2]) >= (2, 16), "kfp < 2.16 crashes on collected artifacts"
    assert kfp.__version__ == pin, f"compile with kfp {pin} (installed: {kfp.__version__})"


# What the open-source backend puts in an executor input (kubeflow/pipelines backend/src/v2): an input artifact
# read back from ML Metadata is named by its id (toRuntimeArtifact: Name = the MLMD id) and carries every
# custom property as metadata, the launcher's own among them: display_name and store_session_info (the object
# store's session, JSON text; the default install's MinIO one below). Output URIs are
# <pipeline root>/<pipeline name>/<run id>/<task>/<unique id>/<output>.
ROOTS = {
    "minio": "minio://mlpipeline/v2/artifacts",
    "gs": "gs://an-organisation-ml-pipelines-artifacts-europe-west4/kubeflow/pipeline-root/v2/artifacts",
}
SESSIONS = {
    "minio": {
        "Provider": "minio",
        "Params": {
            "accessKeyKey": "accesskey",
            "disableSSL": "true",
            "endpoint": "minio-service.kubeflow:9000",
            "fromEnv": "false",
            "region": "minio",
            "secretKeyKey": "secretkey",
            "secretName": "mlpipeline-minio-artifact",
        },
    },
    "gs": {"Provider": "gs", "Params": {"fromEnv": "true"}},
}
FAN_IN_BUDGET = 48 * 1024


def backend_executor_input(spec: dict, step: str, store: str, inputs: dict[str, list[dict]], params: dict) -> str:
    """``step``'s --executor_input as the driver builds it, every input artifact list given as metadata dicts."""
    import uuid

    comp = spec["components"][f"comp-{step}"]
    run = f"{ROOTS[store]}/{spec['pipelineInfo']['name']}/{uuid.UUID(int=1)}"
    session = json.dumps(SESSIONS[store], separators=(",", ":"))
    ids = iter(range(1_000_000, 2_000_000))

    def artifact(schema: str, producer: str, name: str, metadata: dict | None) -> dict:
        art_id = str(next(ids))
        a = {
            "name": art_id,
            "artifactId": art_id,
            "type": {"schemaTitle": schema, "schemaVersion": "0.0.1"},
            "uri": f"{run}/{producer}/{uuid.uuid4()}/{name}",
        }
        if metadata is not None:  # inputs: read back from ML Metadata
            a["metadata"] = {"display_name": name, "store_session_info": session, **metadata}
        return a

    in_arts = comp["inputDefinitions"].get("artifacts", {})
    out_arts = comp["outputDefinitions"].get("artifacts", {})
    producers = {"plan": "parse-metadata", "shards": "convert-shards"}
    executor_input = {
        "inputs": {
            "parameterValues": params,
            "artifacts": {
                name: {
                    "artifacts": [
                        artifact(d["artifactType"]["schemaTitle"], producers.get(name, name), name, m)
                        for m in inputs[name]
                    ]
                }
                for name, d in in_arts.items()
            },
        },
        "outputs": {
            "artifacts": {
                name: {"artifacts": [artifact(d["artifactType"]["schemaTitle"], step, name, None)]}
                for name, d in out_arts.items()
            },
            "outputFile": "/tmp/kfp_outputs/output_metadata.json",
        },
    }
    return json.dumps(executor_input, separators=(",", ":"))


@pytest.mark.slow
def test_fan_in_executor_input_at_the_maximum_task_count(spec, tmp_path):
    """MAX_TASKS conversion tasks (one class a shard, 110 classes), each task's artifact metadata from a real
    conversion, sent to aggregate-stats as the backend sends it: under 48 KiB with both roots. (At 100 tasks,
    Vertex AI's maximum, it would be about 70 KB with the MinIO root: MAX_TASKS is 64.)"""
    from imagenet_tfrecords.sample import write_sample
    from imagenet_tfrecords.tasks import convert_step, plan_step

    data = tmp_path / "data"
    write_sample(str(data), classes=110, train_per_class=1, val=10, test=10)
    local_out = str(tmp_path / "out")
    tasks, plan_meta = plan_step(
        str(data),
        local_out,
        8,
        MAX_TASKS,
        str(tmp_path / "plan.json"),
        str(tmp_path / "labels.txt"),
        "auto",
        "per-class",
        workers=1,
    )
    assert len(tasks) == MAX_TASKS
    shards = [convert_step(str(tmp_path / "plan.json"), t, str(tmp_path / f"m{t}.json")) for t in tasks]
    params = {}  # (aggregate-stats takes no parameter: the plan carries them)
    sizes = {}
    for store in ROOTS:
        for n in (MAX_TASKS, 100):
            inputs = {"plan": [plan_meta], "shards": (shards * 2)[:n]}
            size = len(backend_executor_input(spec, "aggregate-stats", store, inputs, params).encode())
            print(f"aggregate-stats' executor input at {n} tasks, {store} root: {size:,} bytes")
            sizes.setdefault(store, size)
    print(f"our metadata per collected artifact: {len(json.dumps(shards[0], separators=(',', ':')))} bytes")
    assert max(sizes.values()) < FAN_IN_BUDGET, sizes
