"""The wheel and sdist carry what the code needs where it looks for it (pyproject.toml's package list and
package data), and the full release check (scripts/release_check.py, make release-check) passes."""

import subprocess
import sys
import tarfile
import zipfile

import pytest

from imagenet_tfrecords import __version__

from .conftest import ROOT

COMPILED = sorted(
    f"{folder}/{p.name}" for folder in ("pipelines", "components") for p in (ROOT / folder).glob("*.yaml")
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The wheel and sdist as the release builds them, from a copy of the checkout's files (without build
    isolation: the test's setuptools, no download)."""
    import shutil

    src = tmp_path_factory.mktemp("source")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return out


def test_the_wheel_holds_every_module_and_the_compiled_yaml(dist):
    (wheel,) = dist.glob(f"imagenet_tfrecords-{__version__}-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.py")}
    assert modules - names == set(), "pyproject.toml's package list misses these"
    for rel in COMPILED:
        packaged = f"imagenet_tfrecords_kfp/compiled/{rel}"
        assert packaged in names
        assert zipfile.ZipFile(wheel).read(packaged) == (ROOT / rel).read_bytes()
    assert f"imagenet_tfrecords-{__version__}.dist-info/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"imagenet_tfrecords-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_the_sdist_carries_the_compiled_yaml_and_the_license(dist):
    (sdist,) = dist.glob(f"imagenet_tfrecords-{__version__}.tar.gz")
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    top = f"imagenet_tfrecords-{__version__}"
    assert {f"{top}/{rel}" for rel in [*COMPILED, "LICENSE", "README.md", "pyproject.toml"]} <= names


def test_twine_accepts_both(dist):
    p = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("PASSED") == 2


def test_the_compiled_yaml_is_found_in_the_package_first(tmp_path, monkeypatch):
    from imagenet_tfrecords_kfp import compile as compile_module

    assert compile_module.compiled_file("pipelines", "tinyimagenet_to_tfrecords.yaml") == compile_module.COMPILED
    packaged = tmp_path / "compiled"
    (packaged / "components").mkdir(parents=True)
    (packaged / "components" / "convert_shards.yaml").write_text("packaged")
    monkeypatch.setattr(compile_module, "PACKAGED", packaged)
    assert compile_module.compiled_file("components", "convert_shards.yaml").read_text() == "packaged"
    assert compile_module.compiled_file("components", "parse_metadata.yaml") == ROOT / "components/parse_metadata.yaml"


@pytest.mark.slow
def test_make_release_check_passes(tmp_path):
    """Both images built on the local base, wheel and sdist, a fresh venv, the compiled step in the image."""
    import os
    import shutil

    from .test_container import BASE_TOOL, _docker

    if not shutil.which("docker") or _docker("info", check=False).returncode != 0:
        pytest.skip("no Docker engine answers here: the release check builds and runs the images")
    base = os.environ.get("IMAGENET_TFRECORDS_TEST_BASE")
    if not base:
        if not BASE_TOOL.exists():
            pytest.skip(f"no base image: set IMAGENET_TFRECORDS_TEST_BASE or provide {BASE_TOOL}")
        base = subprocess.run([str(BASE_TOOL)], capture_output=True, text=True, check=True).stdout.split()[-1]
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "release_check.py"),
            "--base",
            base,
            "--docker-build-arg",
            "--network host",
            "--work",
            str(tmp_path / "release-check"),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    print(p.stdout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1].endswith(f"v{__version__} is ready to tag")
    assert f"executors in {len(COMPILED)} files name" in p.stdout
    assert "shards planned in 2 tasks" in p.stdout
    assert "pip install --dry-run takes it" in p.stdout  # the missing-TensorFlow message, from the wheel
