"""The component image, built with ``make image`` and run: every step of the pipeline in its own container.

The base image is the local one that ``../shared/tools/local-python-base`` builds from Debian's packages
(no container registry is reachable here), or ``$IMAGENET_TFRECORDS_TEST_BASE``. The image is tagged with a
hash of its build context and base, and reused while neither changes. Builds and containers use the host's
network (pip reaches PyPI through it; containers reach the object-store servers on 127.0.0.1).

Without a Docker engine every test here skips, saying so (``.ci/run`` starts one).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from imagenet_tfrecords.sample import write_sample

from .conftest import ROOT, run_cli
from .test_object_stores import SHARD_SIZE, TRAIN_SHARDS, S3Bucket, _files, check_output, download

pytestmark = pytest.mark.slow

BASE_TOOL = ROOT.parent / "shared" / "tools" / "local-python-base"
SAMPLE_OPTIONS = ["--shard-size", SHARD_SIZE, "--train-shards", TRAIN_SHARDS, "--max-tasks", "3"]


def _docker(*args, check=True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="session")
def engine() -> None:
    if not shutil.which("docker"):
        pytest.skip("no docker command here: the container tests need a Docker engine (.ci/run installs docker.io)")
    p = _docker("info", "--format", "{{.ServerVersion}}", check=False)
    if p.returncode != 0:
        pytest.skip(f"no Docker engine answers here (docker info: {p.stderr.strip()[-200:]})")


@pytest.fixture(scope="session")
def base_image(engine) -> str:
    if os.environ.get("IMAGENET_TFRECORDS_TEST_BASE"):
        return os.environ["IMAGENET_TFRECORDS_TEST_BASE"]
    if not BASE_TOOL.exists():
        pytest.skip(f"no base image: set IMAGENET_TFRECORDS_TEST_BASE or provide {BASE_TOOL}")
    p = subprocess.run([str(BASE_TOOL)], capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, f"{BASE_TOOL} failed:\n{p.stderr[-3000:]}"
    return p.stdout.strip().splitlines()[-1]


def context_hash(base: str, variant: str) -> str:
    """What the image is built from: the files .dockerignore lets in, the Dockerfile, the base image's id."""
    h = hashlib.sha256(f"{variant}\0{_docker('image', 'inspect', '--format', '{{.Id}}', base).stdout}".encode())
    files = [ROOT / "images" / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml", ROOT / "README.md"]
    files += sorted((ROOT / "images").glob("requirements-*.txt")) + [ROOT / "LICENSE"]
    files += sorted((ROOT / "pipelines").glob("*.yaml")) + sorted((ROOT / "components").glob("*.yaml"))
    files += sorted(p for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        if ".egg-info" not in str(p) and not p.name.endswith(".pyc"):
            h.update(f"{p.relative_to(ROOT)}\0".encode() + p.read_bytes())
    return h.hexdigest()[:16]


def built_image(base: str, variant: str = "") -> str:
    """``make image`` (or ``make image-tf``) into a tag named by the context hash, unless that tag exists."""
    tag = f"imagenet-tfrecords-test:{context_hash(base, variant)}{'-' + variant if variant else ''}"
    if _docker("image", "inspect", tag, check=False).returncode == 0:
        print(f"reusing {tag}")
        return tag
    started = time.perf_counter()
    target = "image-tf" if variant == "tf" else "image"
    name = "IMAGE_TF" if variant == "tf" else "IMAGE"
    p = subprocess.run(
        ["make", "-C", str(ROOT), target, f"{name}={tag}", f"BASE={base}", "DOCKER_BUILD_ARGS=--network host"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert p.returncode == 0, f"make {target} failed:\n{p.stdout[-4000:]}\n{p.stderr[-3000:]}"
    size = int(_docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    print(f"built {tag} in {time.perf_counter() - started:.0f} s: {size / 1e6:.0f} MB")
    # earlier builds of this variant: only the newest is kept (the layers they share stay)
    repo, current = tag.split(":")
    for old in _docker("images", repo, "--format", "{{.Tag}}").stdout.split():
        if old != current and old.endswith("-tf") == (variant == "tf"):
            _docker("rmi", f"{repo}:{old}", check=False)
    return tag


@pytest.fixture(scope="session")
def image(base_image) -> str:
    return built_image(base_image)


def run_in_containers(data, out, image, *extra, **kw) -> subprocess.CompletedProcess:
    return run_cli("run", "--data", data, "--output", out, "--runner", "docker", "--image", image, *extra, **kw)


@pytest.fixture(scope="module")
def in_process(sample_dir, tmp_path_factory) -> Path:
    """The pipeline run in processes of this Python: what every container run must equal."""
    out = tmp_path_factory.mktemp("in-process") / "out"
    started = time.perf_counter()
    run_cli("run", "--data", sample_dir, "--output", out, *SAMPLE_OPTIONS)
    print(f"in-process run of the sample: {time.perf_counter() - started:.1f} s")
    return out


def test_the_image_has_the_project_and_its_pinned_kfp(image):
    import kfp

    p = _docker(
        "run", "--rm", image, "python", "-c", "import kfp, imagenet_tfrecords as t; print(kfp.__version__, t.__file__)"
    )
    version, where = p.stdout.split()
    assert version == kfp.__version__  # the kfp that compiled pipelines/*.yaml
    assert where.startswith("/opt/imagenet-tfrecords/venv/")  # installed, not a copy of the sources
    assert _docker("run", "--rm", image, "python", "-c", "import tensorflow", check=False).returncode != 0


def test_a_failed_container_is_never_reported_as_success(base_image, tmp_path):
    """kfp 2.17.3's DockerRunner can report a container that exits 3 as SUCCESS (kubeflow/pipelines#13332)."""
    from kfp import dsl, local

    from imagenet_tfrecords_kfp.docker import checked_exit_status, docker_runner

    @dsl.container_component
    def exit_with(code: int):
        return dsl.ContainerSpec(image=base_image, command=["sh", "-c", 'exit "$0"'], args=[code])

    @dsl.pipeline
    def one(code: int):
        exit_with(code=code)

    with checked_exit_status() as handler:
        local.init(runner=docker_runner(one, []), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
        failed = 0
        for _ in range(20):
            with pytest.raises(RuntimeError, match="FAILURE"):
                exit_with(code=3)
            failed += 1
        for _ in range(3):
            exit_with(code=0)  # a success stays one
    assert failed == 20 and len(handler.failures) == 20
    assert all("exit status 3" in f for f in handler.failures), handler.failures[:3]
    # every container was removed once its status was read
    assert _docker("ps", "-aq", "--filter", "label=imagenet-tfrecords.step=step").stdout.strip() == ""


def test_a_step_over_its_memory_limit_is_reported_as_out_of_memory(image, tmp_path):
    """The pod's memory limit applies in the container, and the kernel's OOM kill is named as such."""
    from kfp import dsl, local

    from imagenet_tfrecords_kfp.docker import checked_exit_status, docker_runner

    @dsl.component(base_image=image, install_kfp_package=False)
    def hog():
        block = bytearray(600 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1

    @dsl.pipeline
    def over():
        hog().set_memory_limit("256Mi")

    with checked_exit_status() as handler:
        local.init(runner=docker_runner(over, []), pipeline_root=str(tmp_path / "root"), raise_on_error=False)
        over()
    assert handler.failures == [f"container of step hog ({image}) ended: killed: out of memory (0.25 GiB)"]


def test_pipeline_in_containers_writes_what_the_in_process_run_writes(image, sample_dir, in_process, tmp_path):
    out = tmp_path / "out"
    started = time.perf_counter()
    p = run_in_containers(sample_dir, out, image, *SAMPLE_OPTIONS)
    took = time.perf_counter() - started
    print(f"container run of the sample: {took:.1f} s")
    assert "no rejects" in p.stdout
    ref, got = _files(in_process), _files(out)
    shards = [n for n in ref if n.endswith((".tfrecord", ".idx"))]
    assert len([n for n in shards if n.endswith(".tfrecord")]) == 10
    for name in [*shards, "sizes.txt", "labels.txt", "rejects.tsv"]:
        assert got[name] == ref[name], f"{name} differs from the in-process run"
    # the files are the user's, not root's (the containers run as this machine's user)
    assert {(out / n).stat().st_uid for n in shards} == {os.getuid()}
    log = (out / "_work" / "kfp-local.log").read_text()
    # plan, three conversion tasks, aggregate: each in the image, with its pod's limits
    assert log.count(f"of image {image}: ") == 5
    assert log.count(f"of image {image}: 2 CPUs, 1 GiB") == 4 and f"of image {image}: 1 CPUs, 1 GiB" in log
    run_cli("verify", out)


def test_pipeline_in_containers_writes_to_s3(image, sample_dir, in_process, tmp_path, store_env, s3_server):
    """Containers on the host's network reach moto on 127.0.0.1 with the standard AWS variables."""
    bucket = S3Bucket(s3_server, f"it-{uuid.uuid4().hex[:12]}")
    out = f"s3://{bucket.name}/records"
    run_in_containers(sample_dir, out, image, *SAMPLE_OPTIONS)
    got = tmp_path / "got"
    names = download(bucket, "records", got)
    names.remove("_work/kfp-local.log")
    (got / "_work" / "kfp-local.log").unlink()
    reference = tmp_path / "reference"
    shutil.copytree(in_process, reference, ignore=shutil.ignore_patterns("kfp-local.log"))
    info = check_output(got, names, reference, str(sample_dir))
    assert info["root"] == out
    run_cli("verify", out)


def test_a_broken_input_fails_the_container_run_with_its_own_message(image, sample_copy, tmp_path):
    (sample_copy / "val" / "val_annotations.txt").write_text("not an annotation line\n")
    p = run_in_containers(sample_copy, tmp_path / "out", image, check=False)
    q = run_cli("run", "--data", sample_copy, "--output", tmp_path / "out2", check=False)
    assert p.returncode == q.returncode == 3, p.stderr
    assert "val_annotations.txt" in p.stderr
    message = p.stderr.strip().splitlines()[-1].split(" (kfp.local's log")[0]
    assert message == q.stderr.strip().splitlines()[-1].split(" (kfp.local's log")[0]


def test_the_run_refuses_an_image_that_is_not_here(engine, sample_dir, tmp_path):
    p = run_in_containers(sample_dir, tmp_path / "out", "imagenet-tfrecords-test:no-such-tag", check=False)
    assert p.returncode == 3
    assert "imagenet-tfrecords-test:no-such-tag is not on this machine" in p.stderr
    assert not (tmp_path / "out" / "_work").exists()


def _published(out: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in out.glob("*/*.tfrecord")
        if not p.name.startswith(".")
    }


def test_a_killed_conversion_container_resumes_on_the_next_run(image, tmp_path):
    """docker kill (what an evicted or preempted pod gets) mid-task; the re-run keeps every finished shard."""
    data, out, ref = tmp_path / "data", tmp_path / "out", tmp_path / "ref"
    write_sample(str(data), classes=20, train_per_class=200, val=100, test=50)
    options = ["--train-shards", "40", "--shard-size", "50", "--max-tasks", "1", "--workers", "1"]
    run_cli("run", "--data", data, "--output", ref, *options)

    cmd = [sys.executable, "-m", "imagenet_tfrecords", "run", "--data", str(data), "--output", str(out)]
    cmd += ["--runner", "docker", "--image", image, *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and len(_published(out)) < 3:
            time.sleep(0.05)
        ids = _docker("ps", "-q", "--filter", "label=imagenet-tfrecords.step=convert_shards").stdout.split()
        assert len(ids) == 1 and proc.poll() is None, f"no conversion container to kill: {ids}, {proc.poll()}"
        _docker("kill", ids[0])
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # finished: the shard's statistics, written last, are under _work/ (a shard killed between its publication
    # and its statistics is converted again, as it should be)
    before = {k: v for k, v in _published(out).items() if (out / "_work" / f"{k.rsplit('/', 1)[-1]}.json").exists()}
    assert 2 <= len(before) < len(_published(ref)), "the container was killed after its last shard"
    assert proc.returncode == 5, stderr
    print(f"killed with {len(before)} of {len(_published(ref))} shards published: {stderr.strip().splitlines()[-1]}")
    assert "convert_shards" in stderr and "killed" in stderr, stderr

    p = run_in_containers(data, out, image, *options)
    assert "resumed" in (out / "_work" / "kfp-local.log").read_text()
    after = _published(out)
    assert {k: after[k] for k in before} == before, "a finished shard was written again"
    ref_files, got = _files(ref), _files(out)
    for name in ref_files:
        if name.endswith((".tfrecord", ".idx")) or name in ("sizes.txt", "labels.txt", "rejects.tsv"):
            assert got[name] == ref_files[name], f"{name} differs from the uninterrupted run"
    assert p.returncode == 0


def test_the_training_example_runs_in_the_tensorflow_image(base_image, image, sample_dir, tmp_path):
    """The conversion steps in the conversion image, training in its tf variant (make image-tf), each in a
    container; the conversion image has no TensorFlow, so a training step placed there would fail."""
    import json

    from kfp import local

    from imagenet_tfrecords_kfp.docker import checked_exit_status, docker_runner
    from imagenet_tfrecords_kfp.pipelines import train_example
    from imagenet_tfrecords_kfp.pipelines.tinyimagenet_to_tfrecords import compile_pipeline

    tf_image = built_image(base_image, "tf")
    conversion = tmp_path / "conversion.yaml"
    compile_pipeline(str(conversion), image=image)
    pipeline = train_example.build_pipeline(str(conversion), train_image=tf_image)
    out = tmp_path / "out"
    out.mkdir()
    started = time.perf_counter()
    with checked_exit_status() as handler:
        local.init(runner=docker_runner(pipeline, [sample_dir, out]), pipeline_root=str(tmp_path / "root"))
        task = pipeline(data_url=str(sample_dir), output_url=str(out), max_tasks=3, workers=1, batch_size=4)
    print(f"training example in containers: {time.perf_counter() - started:.0f} s")
    assert handler.failures == []
    with open(f"{task.outputs['model'].path}/losses.json") as f:
        losses = json.load(f)
    assert len(losses) == 18 and sum(losses[-4:]) < sum(losses[:4]), losses  # it learns
    assert task.outputs["metrics"].metadata["examples"] == 72
    run_cli("verify", out)


def test_a_conversion_task_stages_one_shard_per_worker_on_local_disk(image, tmp_path, store_env, s3_server):
    """Writing to an object store, each worker streams the shard it writes (nothing staged in /tmp): a task
    of four 12 MB shards with two workers runs in a container whose /tmp holds 2.6 of them (and
    tests/test_streaming_upload.py runs a task with a quarter of one, outside a container)."""
    from kfp import local

    from imagenet_tfrecords_kfp.docker import checked_exit_status, docker_runner
    from imagenet_tfrecords_kfp.pipelines.tinyimagenet_to_tfrecords import build_pipeline

    data = tmp_path / "data"
    write_sample(str(data), classes=20, train_per_class=200, val=100, test=50)
    bucket = S3Bucket(s3_server, f"it-{uuid.uuid4().hex[:12]}")
    out = f"s3://{bucket.name}/records"
    shard_bytes = 1000 * (64 * 64 * 3 + 200)  # seed records of 64x64 images, a little more than the pixels
    pipeline = build_pipeline(retries=False, image=image)
    with checked_exit_status() as handler:
        runner = docker_runner(pipeline, [data], tmpfs={"/tmp": f"size={int(2.6 * shard_bytes)},mode=1777"})
        local.init(runner=runner, pipeline_root=str(tmp_path / "root"), raise_on_error=False)
        pipeline(data_url=str(data), output_url=out, max_tasks=1, train_shards=4, shard_size=100, workers=2)
    assert handler.failures == []
    sizes = {k: len(bucket.get(k)) for k in bucket.keys("records/train/") if k.endswith(".tfrecord")}
    assert len(sizes) == 4 and min(sizes.values()) > 0.9 * shard_bytes, sizes
    assert bucket.get("records/sizes.txt") == b"train,4000\nval,100\ntest,50"


# The pods' file system as the backend makes it: empty volumes at these (kubeflow/pipelines
# backend/src/v2/compiler/argocompiler/container.go, 2.14.0 to 2.17.0), /tmp for the launcher's outputs.
BACKEND_VOLUMES = ("/gcs", "/s3", "/minio", "/.local", "/.cache", "/.config")


def test_the_image_runs_as_its_own_user_not_root_with_a_read_only_root(image, sample_dir, tmp_path):
    """No --user: the image's own (USER), as a pod with runAsNonRoot and readOnlyRootFilesystem runs it, with
    a tmpfs /tmp and the backend's empty volumes; it converts the sample and the output verifies."""
    user = _docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"the image's USER is {user!r}: a number other than 0 (runAsNonRoot)"
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(sample_dir, data)
    subprocess.run(["chmod", "-R", "a+rX", str(data)], check=True)  # (volumes the pod's user may read ...)
    out.mkdir()
    out.chmod(0o777)  # (... and write)
    tmpfs = [a for v in BACKEND_VOLUMES for a in ("--tmpfs", f"{v}:mode=1777")]
    script = "id -u && imagenet-tfrecords convert --data /data --output /out --workers 2 --shard-size 20"
    p = _docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp:mode=1777", *tmpfs, "--network", "none",
        "-v", f"{data}:/data:ro", "-v", f"{out}:/out", image, "sh", "-c", script,
    )  # fmt: skip
    assert p.stdout.splitlines()[0] == uid
    assert {f.stat().st_uid for f in out.rglob("*.tfrecord")} == {int(uid)}
    run_cli("verify", out)
