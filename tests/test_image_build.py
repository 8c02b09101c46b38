"""The component image's install steps, run in a clean virtual environment.

No Docker engine runs here, so the Dockerfile is interpreted: its COPY lines build a context
directory, its ENV lines the environment and its RUN lines run with a fresh venv first on PATH.
The image's Python (the FROM line) must be the one running the tests, minor version included.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import venv

import pytest

from .conftest import ROOT

DOCKERFILE = ROOT / "images" / "Dockerfile"


def _instructions():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            yield op.upper(), rest.strip()


def test_base_image_is_pinned_and_matches_this_python():
    (base,) = [rest for op, rest in _instructions() if op == "FROM"]
    m = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    assert m, f"base image {base!r} is not a pinned python:X.Y.Z-slim-<distro>"
    if (int(m[1]), int(m[2])) != sys.version_info[:2]:
        pytest.skip(f"the image uses Python {m[1]}.{m[2]}, these tests run on {sys.version_info[:2]}")


def _size_mb(path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


@pytest.mark.slow
def test_install_steps_succeed_in_a_clean_venv(tmp_path, sample_dir):
    context, env_dir, work = tmp_path / "context", tmp_path / "venv", None
    venv.create(env_dir, with_pip=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(env_dir)
    ran = []
    for op, rest in _instructions():
        if op == "ENV":
            for assignment in shlex.split(rest):
                key, _, value = assignment.partition("=")
                env[key] = value
        elif op == "WORKDIR":
            work = context / rest.lstrip("/")
            work.mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *sources, dest = shlex.split(rest)
            target = (work / dest) if dest not in ("./", ".") else work
            for src in sources:
                path = ROOT / src
                if path.is_dir():
                    shutil.copytree(
                        path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
        elif op == "RUN":
            p = subprocess.run(["sh", "-ec", rest], cwd=work, env=env, capture_output=True, text=True)
            assert p.returncode == 0, f"RUN {rest}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
            ran.append(rest)
    assert any("pip install" in r for r in ran)
    # the installed command works, from outside the source tree
    p = subprocess.run(["imagenet-tfrecords", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0 and "convert" in p.stdout, p.stderr
    p = subprocess.run(
        ["python", "-c", "import imagenet_tfrecords, pathlib; print(pathlib.Path(imagenet_tfrecords.__file__))"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(env_dir) in p.stdout, "the project must be installed into the image, not used from the source"
    # every step's work runs in the image, which has no TensorFlow
    out = tmp_path / "out"
    for args in (["convert", "--data", sample_dir, "--output", out, "--workers", "1"], ["report", out]):
        p = subprocess.run(
            ["imagenet-tfrecords", *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert p.returncode == 0, p.stderr
    assert (out / "sizes.txt").read_text() == "train,72\nval,30\ntest,20"
    p = subprocess.run(["python", "-c", "import tensorflow"], cwd=tmp_path, env=env, capture_output=True)
    assert p.returncode != 0, "the image must not carry TensorFlow"
    print(f"the image's Python environment: {_size_mb(env_dir):.0f} MB installed")
    assert _size_mb(env_dir) < 600
