"""The GitHub Actions workflows (.github/workflows/): valid against GitHub's workflow schema, clean under
zizmor's offline audits, every action pinned by commit SHA with its tag named, least permissions, and the
release workflow's own shell steps run here as they run there (with a digest made up for the images)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imagenet_tfrecords import __version__
from imagenet_tfrecords_kfp.components.image import DEFAULT_IMAGE

from .conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
DIGEST = "sha256:" + "c0ffee00" * 8
TF_DIGEST = "sha256:" + "7f" * 32


def _load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (make install-dev installs the dev extra)")
    return path


def test_the_workflows_are_valid_against_githubs_schema():
    p = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS.glob("*.yml"))],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok -- validation done" in p.stdout


def test_zizmor_finds_nothing_offline():
    p = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", "--strict-collection", "--persona", "pedantic", str(WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    # (pedantic: every finding but the jobs' missing display names, which GitHub derives from their ids)
    findings = re.findall(r"^(\w+)\[([\w-]+)\]", p.stdout, re.M)
    assert {ident for _, ident in findings} <= {"anonymous-definition"}, p.stdout[-3000:]


def test_zizmor_sees_a_template_injection_and_an_unpinned_action(tmp_path):
    """The audits that guard these files do fire here, offline."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\npermissions: {}\njobs:\n  j:\n    runs-on: ubuntu-24.04\n    permissions: {}\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with:\n          persist-credentials: false\n"
        "      - run: echo ${{ github.event.head_commit.message }}\n"
    )
    p = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0
    assert "template-injection" in p.stdout and "unpinned-uses" in p.stdout


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_every_action_is_pinned_by_commit_and_names_its_tag(name):
    text = (WORKFLOWS / name).read_text()
    uses = re.findall(r"uses: (\S+)(.*)$", text, re.M)
    assert uses
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.fullmatch(r" # v\d+(\.\d+)*", comment), f"{ref}: no '# vX.Y.Z' comment naming its tag"


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_least_permissions_and_no_persisted_credentials(name):
    workflow = _load(name)
    assert workflow["permissions"] == {}
    for job_name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{job_name}: no permissions of its own"
        granted = {k: v for k, v in job["permissions"].items() if v != "none"}
        if job_name == "pypi":
            assert granted == {"id-token": "write"}
        elif job_name == "images":
            assert granted == {"contents": "read", "packages": "write"}
        elif job_name == "github-release":
            assert granted == {"contents": "write"}
        else:
            assert granted == {"contents": "read"}, job_name
    for job_name, step in _steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, job_name
        assert "${{" not in step.get("run", ""), f"{job_name}: an expression expanded inside a script"


def test_the_release_is_triggered_by_version_tags_and_publishes_by_trusted_publishing():
    workflow = _load("release.yml")
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # (YAML 1.1 reads the key 'on' as True)
    jobs = workflow["jobs"]
    assert jobs["pypi"]["needs"] == "github-release"
    assert set(jobs["github-release"]["needs"]) == {"check", "dist", "images"}
    assert jobs["dist"]["needs"] == jobs["images"]["needs"] == "check"
    publish = [s for _, s in _steps({"jobs": {"pypi": jobs["pypi"]}}) if "gh-action-pypi-publish" in s.get("uses", "")]
    assert len(publish) == 1 and "with" not in publish[0]  # no password: the OIDC token
    assert "secrets." not in (WORKFLOWS / "release.yml").read_text().replace("secrets.GITHUB_TOKEN", "")
    conversion, tf = (s["with"] for _, s in _steps(workflow) if s.get("id") in ("conversion", "tf"))
    assert conversion["platforms"] == "linux/amd64,linux/arm64" and conversion["push"] is True
    assert conversion["build-args"] == "VARIANT=conversion" and tf["build-args"] == "VARIANT=tf"


def _run_step(job: str, step_name: str | None, env: dict, cwd: Path, step_id: str | None = None) -> str:
    """A run: step of release.yml, through bash as the runner runs it, with ``env`` for its ${{ }} values."""
    steps = [s for j, s in _steps(_load("release.yml")) if j == job and "run" in s]
    (step,) = [s for s in steps if (step_name and s.get("name") == step_name) or (step_id and s.get("id") == step_id)]
    assert set(step.get("env", {})) <= set(env) | {"GH_TOKEN"}, "a value the step needs is not given"
    env = {**env, "GH_TOKEN": "none"} if "GH_TOKEN" in step.get("env", {}) else env
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full.update(PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(ROOT / "src"))
    full.update(env)
    p = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, env=full, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_the_release_workflows_steps_run_here(tmp_path):
    """check, the version and image outputs, the compile against a digest and the notes, as release.yml
    runs them (python is this venv's; the checkout is this one)."""
    tag = f"v{__version__}"
    _run_step("check", "the tag, the package version, the committed YAML and CHANGELOG.md agree", {"TAG": tag}, ROOT)
    output = tmp_path / "github_output"
    _run_step("check", None, {"TAG": tag, "GITHUB_OUTPUT": str(output)}, ROOT, step_id="version")
    values = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert values == {"version": __version__, "image": DEFAULT_IMAGE.rsplit(":", 1)[0]}

    work = tmp_path / "checkout"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", ".git", "build", "__pycache__", "*.egg-info"))
    env = {"IMAGE": values["image"], "VERSION": __version__, "DIGEST": DIGEST, "TF_DIGEST": TF_DIGEST}
    _run_step(
        "github-release", "pipelines/*.yaml and components/*.yaml against the conversion image's digest", env, work
    )
    attached = sorted(p.relative_to(work / "release").as_posix() for p in (work / "release").rglob("*.yaml"))
    assert attached == sorted(f"{f}/{p.name}" for f in ("pipelines", "components") for p in (ROOT / f).glob("*.yaml"))
    for path in (work / "release").rglob("*.yaml"):
        assert set(re.findall(r"^\s+image: (\S+)$", path.read_text(), re.M)) == {f"{values['image']}@{DIGEST}"}
    _run_step("github-release", "the notes, from CHANGELOG.md, with the images' digests", env, work)
    notes = (work / "notes.md").read_text()
    assert f"| `{values['image']}:{__version__}` | `{values['image']}@{DIGEST}` |" in notes
    assert f"| `{values['image']}:{__version__}-tf` | `{values['image']}@{TF_DIGEST}` |" in notes

    # gh (GitHub's API cannot be reached here) stands in as a script recording its arguments: what is attached
    (work / "dist").mkdir()
    for name in (f"imagenet_tfrecords-{__version__}-py3-none-any.whl", f"imagenet_tfrecords-{__version__}.tar.gz"):
        (work / "dist" / name).touch()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gh").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$GH_ARGS"\n')
    (fake / "gh").chmod(0o755)
    args = tmp_path / "gh-args"
    step_env = {"TAG": tag, "GITHUB_REPOSITORY": "imagenet-tfrecords/imagenet-tfrecords", "GH_ARGS": str(args)}
    step_env["PATH"] = f"{fake}:{BIN}:{os.environ['PATH']}"
    _run_step(
        "github-release", "the GitHub release, with the compiled YAML, the wheel and the sdist attached", step_env, work
    )
    argv = args.read_text().splitlines()
    assert argv[:3] == ["release", "create", tag] and argv[argv.index("--notes-file") + 1] == "notes.md"
    files = sorted(a for a in argv if "/" in a and not a.startswith("imagenet-tfrecords/"))
    assert files == sorted([f"release/{a}" for a in attached] + [f"dist/{p.name}" for p in (work / "dist").iterdir()])


def test_the_kfp_pin_the_release_installs_is_the_images():
    step = next(
        s
        for j, s in _steps(_load("release.yml"))
        if j == "github-release" and s.get("name", "").startswith("the released package")
    )
    grep = re.search(r"\$\((grep [^)]*)\)", step["run"])[1]
    p = subprocess.run(["bash", "-c", grep], cwd=ROOT, capture_output=True, text=True, check=True)
    import kfp

    assert p.stdout.strip() == f"kfp=={kfp.__version__}"
