"""The release's own checks (scripts/release.py): a tag whose version, compiled YAML or changelog disagree is
refused, and the release notes are CHANGELOG.md's section plus the images' digests."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet_tfrecords import __version__
from imagenet_tfrecords_kfp.components.image import DEFAULT_IMAGE

from .conftest import ROOT

SCRIPT = ROOT / "scripts" / "release.py"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def release(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def tree(tmp_path) -> Path:
    """What the checks read, copied: the version, the image name, the compiled YAML, the changelog."""
    root = tmp_path / "checkout"
    for rel in (
        "src/imagenet_tfrecords/__init__.py",
        "src/imagenet_tfrecords_kfp/components/image.py",
        "CHANGELOG.md",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    for folder in ("pipelines", "components"):
        shutil.copytree(ROOT / folder, root / folder)
    return root


def test_the_committed_tree_is_ready_for_its_versions_tag():
    p = release("check", f"v{__version__}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"v{__version__}: version, compiled YAML and CHANGELOG.md agree"
    assert release("images").stdout.split() == [DEFAULT_IMAGE]


def test_another_tag_is_refused():
    p = release("check", "v9.9.9")
    assert p.returncode == 1
    assert p.stderr.strip() == (
        f"release refused: tag v9.9.9 is not v{__version__}, the package version (src/imagenet_tfrecords/__init__.py)"
    )


def test_yaml_compiled_for_another_version_is_refused(tree):
    path = tree / "components" / "convert_shards.yaml"
    path.write_text(path.read_text().replace(f":{__version__}\n", ":0.0.9\n"))
    p = release("check", f"v{__version__}", "--root", str(tree))
    assert p.returncode == 1
    assert p.stderr.strip() == (
        f"release refused: components/convert_shards.yaml name {DEFAULT_IMAGE.rsplit(':', 1)[0]}:0.0.9, "
        f"not {DEFAULT_IMAGE}: run make compile and commit"
    )


def test_a_version_bumped_without_recompiling_is_refused(tree):
    init = tree / "src" / "imagenet_tfrecords" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', '"9.0.0"'))
    p = release("check", "v9.0.0", "--root", str(tree))
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("release refused: components/aggregate_stats.yaml, components/convert_shards.yaml, ")
    new = DEFAULT_IMAGE.rsplit(":", 1)[0] + ":9.0.0"
    assert lines[0].endswith(f"name {DEFAULT_IMAGE}, not {new}: run make compile and commit")
    assert lines[1] == "release refused: CHANGELOG.md has no section '## [9.0.0]' with the release's notes"


def test_an_empty_changelog_section_is_refused(tree):
    log = tree / "CHANGELOG.md"
    text = log.read_text()
    start = text.index(f"## [{__version__}]")
    end = text.index("\n## [", start + 1) if "\n## [" in text[start + 1 :] else text.index("\n[Unreleased]:")
    log.write_text(text[:start] + f"## [{__version__}] - 2030-01-01\n\n" + text[end:])
    p = release("check", f"v{__version__}", "--root", str(tree))
    assert p.returncode == 1
    assert "CHANGELOG.md has no section" in p.stderr


def test_the_dist_files_must_carry_the_version(tree, tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / f"imagenet_tfrecords-{__version__}-py3-none-any.whl").touch()
    (dist / "imagenet_tfrecords-0.0.1.tar.gz").touch()
    p = release("check", f"v{__version__}", "--root", str(tree), "--dist", str(dist))
    assert p.returncode == 1
    assert p.stderr.strip() == f"release refused: imagenet_tfrecords-0.0.1.tar.gz is not version {__version__}"
    (dist / "imagenet_tfrecords-0.0.1.tar.gz").rename(dist / f"imagenet_tfrecords-{__version__}.tar.gz")
    assert release("check", f"v{__version__}", "--root", str(tree), "--dist", str(dist)).returncode == 0


def test_the_notes_are_the_changelog_section_and_the_images_digests():
    name = DEFAULT_IMAGE.rsplit(":", 1)[0]
    p = release("notes", __version__, "--image", f"{DEFAULT_IMAGE}@{DIGEST}", "--image", f"{DEFAULT_IMAGE}-tf@{DIGEST}")
    assert p.returncode == 0, p.stderr
    notes = p.stdout
    section = (ROOT / "CHANGELOG.md").read_text().split(f"## [{__version__}]", 1)[1].split("\n## [", 1)[0]
    first_line = section.strip().splitlines()[0] if section.strip() else ""
    assert first_line and notes.startswith(first_line)
    assert "## [Unreleased]" not in notes and "]: https://" not in notes  # the section only, no link references
    assert f"| `{DEFAULT_IMAGE}` | `{name}@{DIGEST}` |" in notes
    assert f"| `{DEFAULT_IMAGE}-tf` | `{name}@{DIGEST}` |" in notes
    assert f"pip install 'imagenet-tfrecords=={__version__}'" in notes


def test_a_reference_without_its_digest_is_refused():
    p = release("notes", __version__, "--image", DEFAULT_IMAGE)
    assert p.returncode == 1
    assert "not NAME:TAG@sha256:<64 hex digits>" in p.stderr
