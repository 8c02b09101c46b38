"""What the image is built from, checked without a Docker engine (tests/test_container.py builds and runs it).

- The base is a build argument whose default is a pinned slim Python of this Python's minor version.
- Every package the image installs is pinned with hashes in images/requirements-*.txt, which cover
  pyproject.toml's dependencies and the image's kfp pin, and are what ``make lock`` writes today.
- ``make image`` names the image as the components do, without a virtual environment.
- The build context keeps out what a checkout grows (.venv, build/, .git).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet_tfrecords_kfp.components.image import DEFAULT_IMAGE

from .conftest import ROOT

DOCKERFILE = ROOT / "images" / "Dockerfile"
LOCKS = {"conversion": ROOT / "images" / "requirements-conversion.txt", "tf": ROOT / "images" / "requirements-tf.txt"}


def _locked(path: Path) -> dict[str, list[str]]:
    """name -> its hashes, for every pinned line of a lock file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
            assert m, f"{path.name}: not a pinned, hashed requirement: {line[:100]}"
            pins[m[1].lower().replace("_", "-")] = m[3].split()
    return pins


def test_the_base_is_an_argument_defaulting_to_a_pinned_slim_python_of_this_minor_version():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG BASE=(\S+)$", text, re.M)
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    m = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    assert m, f"base image {base!r} is not a pinned python:X.Y.Z-slim-<distro>"
    assert (int(m[1]), int(m[2])) == (3, 11), "the lock files are resolved for Python 3.11 (make lock)"
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"the image uses Python 3.11, these tests run on {sys.version_info[:2]}")


@pytest.mark.parametrize("variant", LOCKS)
def test_every_package_is_pinned_with_hashes(variant):
    import tomllib

    pins = _locked(LOCKS[variant])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + project["optional-dependencies"]["gcs"]
    wanted += project["optional-dependencies"]["s3"]
    if variant == "tf":
        wanted += ["tensorflow-cpu", "keras"]
    names = {re.match(r"[A-Za-z0-9_.\-]+", w)[0].lower().replace("_", "-") for w in wanted}
    assert names <= set(pins), f"not in {LOCKS[variant].name}: {names - set(pins)}"
    (kfp_pin,) = re.findall(r"^kfp==(\S+)$", (ROOT / "images" / "requirements.in").read_text(), re.M)
    assert f"kfp=={kfp_pin}" in LOCKS[variant].read_text()
    assert "setuptools" in pins  # builds the project inside the image, without build isolation
    assert all(pins.values())


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "uv").exists(), reason="uv is not installed (make install-dev)")
def test_the_lock_files_are_what_make_lock_writes(tmp_path):
    """Resolved again with the committed pins as preferences (uv keeps an output file's pins unless told
    to upgrade), the lock files come out the same: they match pyproject.toml and images/requirements.in."""
    import shutil

    lock = subprocess.run(["make", "-s", "-n", "lock"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for line in lock.splitlines():
        if " -o images/" not in line:
            continue
        target = line.split(" -o ")[1].split()[0]
        fresh = tmp_path / Path(target).name
        shutil.copy(ROOT / target, fresh)
        p = subprocess.run(
            line.replace(f" -o {target} ", f" -o {fresh} ").split(), cwd=ROOT, capture_output=True, text=True
        )
        if p.returncode != 0:
            pytest.skip(f"uv could not resolve here: {p.stderr.strip()[-200:]}")
        assert _locked(fresh) == _locked(ROOT / target), f"{target} is stale: run make lock"


def test_make_image_names_the_image_as_the_components_do_without_a_venv():
    p = subprocess.run(
        ["make", "-s", "print-image", "PY=/nonexistent/python"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert p.stdout.strip() == DEFAULT_IMAGE
    p = subprocess.run(
        ["make", "-n", "image", "BASE=local/py:3.11", "DOCKER_BUILD_ARGS=--network host"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"--build-arg BASE=local/py:3.11 --network host -t {DEFAULT_IMAGE} ." in p.stdout


def test_the_build_context_leaves_out_what_a_checkout_grows():
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*", "an allow-list: everything is out unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for src in sources.split():
            src = src.replace("${VARIANT}", "*")
            assert any(Path(src).match(a) or src == a for a in allowed), f"COPY {src} is not in .dockerignore's list"
    assert not allowed & {".venv", "build", ".git", "tests", "benchmarks"}
