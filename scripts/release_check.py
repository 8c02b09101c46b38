"""make release-check: everything the release workflow does (.github/workflows/release.yml), except pushing.

    python scripts/release_check.py [--base IMAGE] [--docker-build-arg ARG ...] [--work DIR] [--keep]

1. Builds the conversion image and its -tf variant (``make image``, ``make image-tf``; ``--base`` as BASE), and
   checks that the conversion image's pinned packages exist for linux/arm64 with their locked hashes (the
   release's second platform, which cannot be built here).
2. Builds the wheel and the sdist (``python -m build``), runs ``twine check`` on them, and
   ``scripts/release.py check v<version> --dist``.
3. Installs the wheel into a fresh virtual environment outside the source tree and runs, from there,
   ``imagenet-tfrecords --version``, ``sample`` and ``convert`` (with ``verify``), and checks that the
   compiled YAML the code loads comes from the installed package, not from a checkout.
4. Compiles ``pipelines/*.yaml`` and ``components/*.yaml`` with the installed package against the images'
   digests, as the release does, and checks that every executor names the conversion image by digest; the
   training example compiles against both.
5. Runs the compiled parse-metadata step in the image: its command and arguments from the compiled YAML, its
   executor input made as kfp.local makes it, the container started from the digest the YAML names.

A registry gives a pushed image a manifest digest (``docker push`` prints it; the release records
docker/build-push-action's). An image built here has never been pushed, so it has none, and no registry
can be pulled to run here; it has its image ID, the digest of its configuration (``docker image inspect``
``.Id``), which names its content as exactly. The check compiles against ``NAME@<image ID>`` and starts the
container from that ID (``docker run sha256:...``), which the engine resolves locally.

Prints one line per step; exits 1 naming the first step that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import release  # noqa: E402  (scripts/release.py: the version, the image's name, the changelog)

KFP_PIN = re.search(r"^kfp==(\S+)$", (ROOT / "images" / "requirements.in").read_text(), re.M)[1]


class Failed(Exception):
    pass


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would point a fresh environment's Python back at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, **extra}


def run(*cmd, cwd=None, env=None, capture=True, timeout=3600) -> str:
    """Run a command (in ``clean_env()`` unless told); its stdout; Failed with its output's tail when it fails."""
    env = clean_env() if env is None else env
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=capture, text=True, timeout=timeout, check=False
    )
    if p.returncode != 0:
        tail = ((p.stdout or "")[-2000:] + (p.stderr or "")[-3000:]).strip()
        raise Failed(f"{shlex.join(str(c) for c in cmd)}: exit {p.returncode}\n{tail}")
    return p.stdout or ""


def step(title: str):
    started = time.perf_counter()
    print(f"== {title}", flush=True)
    return lambda detail="": print(f"   ok ({time.perf_counter() - started:.0f} s){': ' + detail if detail else ''}")


def image_id(tag: str) -> str:
    return run("docker", "image", "inspect", "--format", "{{.Id}}", tag).strip()


def build_images(name: str, version: str, base: str | None, build_args: list[str]) -> dict[str, str]:
    """tag -> image ID of the two images, built as ``make image`` and ``make image-tf`` build them."""
    built = {}
    for target, var, tag in (("image", "IMAGE", f"{name}:{version}"), ("image-tf", "IMAGE_TF", f"{name}:{version}-tf")):
        done = step(f"make {target} {var}={tag}" + (f" BASE={base}" if base else ""))
        args = ["make", "-C", ROOT, target, f"{var}={tag}"]
        if base:
            args.append(f"BASE={base}")
        if build_args:
            args.append(f"DOCKER_BUILD_ARGS={' '.join(build_args)}")
        run(*args)
        built[tag] = image_id(tag)
        done(f"{tag} is {built[tag]}")
    return built


# Pure-Python projects published as sdists only: the rest must have a wheel for the platform.
SDIST_ONLY = "kfp,kfp-pipeline-spec,kfp-server-api"


def arm64_lock(work: Path) -> None:
    """The release builds the conversion image for linux/arm64 too, which cannot be built here (no buildx, no
    emulation): check instead that every package its lock pins has a linux/aarch64 CPython 3.11 wheel whose hash
    the lock lists (pip resolves and checks them for that platform without installing)."""
    done = step("images/requirements-conversion.txt on linux/arm64: every pinned wheel exists with a locked hash")
    lock = ROOT / "images" / "requirements-conversion.txt"
    tags = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
    platforms = [a for tag in tags for a in ("--platform", tag)]
    out = run(
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
        "--target", work / "arm64", *platforms, "--python-version", "3.11", "--implementation", "cp", "--no-deps",
        "--require-hashes", "--only-binary=:all:", f"--no-binary={SDIST_ONLY}", "-r", lock,
    )  # fmt: skip
    pinned = len(re.findall(r"^[A-Za-z0-9_.-]+==", lock.read_text(), re.M))
    would = re.search(r"^Would install (.*)$", out, re.M)
    if not would or len(would[1].split()) != pinned:
        raise Failed(f"pip would install {would[1].split() if would else 'nothing'} of {pinned} pins for linux/arm64")
    done(f"{pinned} pins resolve for linux/aarch64 (the -tf image is amd64 only: tensorflow-cpu has no arm64 wheel)")


def build_dist(work: Path, version: str) -> Path:
    dist = work / "dist"
    done = step("python -m build (wheel and sdist), twine check, scripts/release.py check")
    # a copy of the checkout's tracked files, so that nothing the build leaves behind lands in the checkout
    src = work / "source"
    files = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    run(sys.executable, "-m", "build", "--outdir", dist, src)
    run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    run(sys.executable, ROOT / "scripts" / "release.py", "check", f"v{version}", "--dist", dist)
    done(", ".join(p.name for p in sorted(dist.iterdir())))
    return dist


def fresh_venv(work: Path, dist: Path) -> Path:
    done = step("the wheel installed into a fresh virtual environment outside the source tree")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    (wheel,) = dist.glob("*.whl")
    run(venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", wheel, f"kfp=={KFP_PIN}")
    where = run(
        venv / "bin" / "python",
        "-c",
        "import imagenet_tfrecords, imagenet_tfrecords_kfp.compile as c; print(imagenet_tfrecords.__file__); "
        "print(c.COMPILED); print(c.compiled_file('components', 'convert_shards.yaml'))",
        cwd=work,
    ).split()
    for path in where:
        if not path.startswith(str(venv)) or not Path(path).is_file():
            raise Failed(f"the installed package reads {path}, not a file of the fresh environment {venv}")
    done(f"{venv}: the package and its compiled YAML load from it")
    return venv


def cli_runs(work: Path, venv: Path, version: str) -> None:
    cli = venv / "bin" / "imagenet-tfrecords"
    done = step("imagenet-tfrecords --version, sample, convert, verify from the fresh environment")
    printed = run(cli, "--version", cwd=work).strip()
    if printed != f"imagenet-tfrecords {version}":
        raise Failed(f"--version printed {printed!r}, not 'imagenet-tfrecords {version}'")
    run(cli, "sample", "--output", work / "sample", cwd=work)
    summary = run(cli, "convert", "--data", work / "sample", "--output", work / "tfrecords", cwd=work)
    verified = run(cli, "verify", work / "tfrecords", cwd=work).strip().splitlines()[-1]
    done(f"{printed}; {summary.strip().splitlines()[-2]}; verify: {verified}")

    # No TensorFlow in this environment: verify --tf names the command that adds it to this installation
    # (the wheel file it came from), and pip takes that command.
    done = step("verify --tf without TensorFlow: exit 3, naming a pip command that works here")
    p = subprocess.run(
        [str(cli), "verify", "--tf", str(work / "tfrecords")], capture_output=True, text=True, cwd=work, env=clean_env()
    )
    (wheel,) = (work / "dist").glob("*.whl")
    command = f"pip install '{wheel}[tf]'"
    if p.returncode != 3 or not p.stderr.strip().endswith(
        f"{command} (or read them without TensorFlow: imagenet_tfrecords.torch, pip install '{wheel}[torch]')"
    ):
        raise Failed(f"verify --tf without TensorFlow: exit {p.returncode}, {p.stderr.strip()[-500:]}")
    pip = shlex.split(command)[2:]
    run(venv / "bin" / "pip", "install", "--dry-run", "--no-deps", "--disable-pip-version-check", *pip, cwd=work)
    done(f"exit 3: ...{command}...; pip install --dry-run takes it")


def executors(path: Path) -> dict[str, str]:
    """executor name -> the image it names, from a compiled YAML (every document of it)."""
    import yaml

    out = {}
    for doc in yaml.safe_load_all(path.read_text()):
        for name, spec in ((doc or {}).get("deploymentSpec", {}).get("executors", {})).items():
            out[f"{path.name}:{name}"] = spec.get("container", {}).get("image")
    return out


def compile_against_digests(work: Path, venv: Path, name: str, ids: dict[str, str], version: str) -> Path:
    ref = f"{name}@{ids[f'{name}:{version}']}"
    tf_ref = f"{name}@{ids[f'{name}:{version}-tf']}"
    done = step(f"compile pipelines/*.yaml and components/*.yaml against {ref}")
    out = work / "release"
    env = clean_env(IMAGENET_TFRECORDS_IMAGE=ref, IMAGENET_TFRECORDS_TF_IMAGE=tf_ref)
    # as the release workflow compiles: scripts/release.py compile, with the installed package
    py = venv / "bin" / "python"
    run(py, ROOT / "scripts" / "release.py", "compile", out, "--image", ref, "--python", py, cwd=work, env=env)
    # the training example over the conversion compiled here, as a user builds it over the release's YAML
    train = (
        "import sys; from kfp import compiler;"
        " from imagenet_tfrecords_kfp.pipelines.train_example import build_pipeline;"
        " compiler.Compiler().compile(build_pipeline(sys.argv[1]), package_path=sys.argv[2])"
    )
    conversion = out / "pipelines" / "tinyimagenet_to_tfrecords.yaml"
    run(venv / "bin" / "python", "-c", train, conversion, work / "train.yaml", cwd=work, env=env)
    named = {}
    for folder in ("pipelines", "components"):
        for path in sorted((out / folder).glob("*.yaml")):
            named.update(executors(path))
    committed = sorted(p.name for f in ("pipelines", "components") for p in (ROOT / f).glob("*.yaml"))
    compiled = sorted(p.name for f in ("pipelines", "components") for p in (out / f).glob("*.yaml"))
    if compiled != committed:
        raise Failed(f"compiled {compiled}, the checkout commits {committed}")
    wrong = {k: v for k, v in named.items() if v != ref}
    if not named or wrong:
        raise Failed(f"executors not naming {ref}: {wrong or 'none found'}")
    train = executors(work / "train.yaml")
    if set(train.values()) != {ref, tf_ref}:
        raise Failed(f"the training example's executors name {sorted(set(train.values()))}, not {ref} and {tf_ref}")
    done(f"{len(named)} executors in {len(compiled)} files name {ref}; the training example adds {tf_ref}")
    return out


RUN_STEP = r"""
import json, sys
from kfp.local import executor_input_utils, placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2
from google.protobuf import json_format
import yaml

spec_path, arguments, task_root = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
spec = json_format.ParseDict(yaml.safe_load(open(spec_path)), pipeline_spec_pb2.PipelineSpec())
(component,) = spec.components.values()  # the one component a component's YAML holds
(executor,) = spec.deployment_spec["executors"].values()
container = executor["container"]
executor_input = executor_input_utils.construct_executor_input(
    component_spec=component, arguments=arguments, task_root=task_root, block_input_artifact=True
)
executor_input_dict = executor_input_utils.executor_input_to_dict(executor_input, component)
command = placeholder_utils.replace_placeholders(
    full_command=list(container["command"]) + list(container["args"]),
    executor_input_dict=executor_input_dict,
    pipeline_resource_name="release-check",
    task_resource_name="parse-metadata",
    pipeline_root=task_root,
    unique_pipeline_id="release-check",
)
plan = executor_input_dict["outputs"]["artifacts"]["plan"]["artifacts"][0]["uri"]
output = executor_input_dict["outputs"]["outputFile"]
print(json.dumps({"image": container["image"], "command": command, "plan": plan, "output": output}))
"""


def run_compiled_step(work: Path, venv: Path, compiled: Path) -> None:
    """The compiled parse-metadata step, in a container of the image its YAML names by digest."""
    spec = compiled / "components" / "parse_metadata.yaml"
    done = step(f"the compiled parse-metadata step ({spec.name}) in the image it names")
    task_root = work / "task"
    task_root.mkdir()
    data, output = work / "sample", work / "step-output"
    arguments = {"data_url": str(data), "output_url": str(output), "shard_size": 100, "max_tasks": 2}
    made = json.loads(run(venv / "bin" / "python", "-c", RUN_STEP, spec, json.dumps(arguments), task_root, cwd=work))
    image = made["image"]
    digest = image.split("@", 1)[1]
    output.mkdir()
    run(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-e",
        "HOME=/tmp",
        "-v",
        f"{work}:{work}",
        digest,  # the image ID the YAML names: the engine resolves it without a registry
        *made["command"],
    )
    plan, executor_output = Path(made["plan"]), Path(made["output"])
    if not plan.is_file() or not executor_output.is_file():
        raise Failed(f"the step wrote no plan artifact ({plan}) or no executor output ({executor_output})")
    tasks = json.loads(executor_output.read_text()).get("parameterValues", {}).get("Output")
    slices = sorted(p.name for p in (output / "_work" / "plan").glob("*"))
    if not tasks or len(slices) != len(tasks):
        raise Failed(f"the step returned tasks {tasks} and wrote slices {slices}")
    shards = len(json.loads(plan.read_text())["shards"])
    done(f"docker run {digest[:19]}...: {shards} shards planned in {len(tasks)} tasks, slices {slices}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the images' base (make image BASE=...); default: images/Dockerfile's")
    parser.add_argument("--docker-build-arg", action="append", default=[], help="e.g. --network host")
    parser.add_argument("--work", type=Path, help="a new folder for the check's files (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    version = release.version()
    name = release.default_image()
    work = args.work or Path(tempfile.mkdtemp(prefix="imagenet-tfrecords-release-check-"))
    work.mkdir(parents=True, exist_ok=True)
    if ROOT in work.resolve().parents:
        parser.error(f"--work {work}: inside the source tree; the check installs and runs outside it")
    started = time.perf_counter()
    try:
        ids = build_images(name, version, args.base, [a for arg in args.docker_build_arg for a in arg.split()])
        arm64_lock(work)
        dist = build_dist(work, version)
        venv = fresh_venv(work, dist)
        cli_runs(work, venv, version)
        compiled = compile_against_digests(work, venv, name, ids, version)
        run_compiled_step(work, venv, compiled)
    except Failed as e:
        print(f"release check failed: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"release check passed in {time.perf_counter() - started:.0f} s: v{version} is ready to tag")
    return 0


if __name__ == "__main__":
    sys.exit(main())
