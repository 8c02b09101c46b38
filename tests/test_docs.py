"""The README's commands run as written, and docs/cli.md is the parser's.

The README's shell blocks are read from the file itself: every `imagenet-tfrecords` command and
option they name must exist in the parser (the cluster commands too, which cannot run here), every
`make` target in the Makefile, and the blocks of "Convert your own dataset" run in a temporary folder
(all but the lines that need the network), followed by the README's Python readers on their output.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet_tfrecords.cli import parser

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
# Lines that need the network (PyPI for make install is not needed: the venv exists; the download is).
NEEDS_NETWORK = {
    ".venv/bin/imagenet-tfrecords download --output data/",
    ".venv/bin/imagenet-tfrecords run --data data/tiny-imagenet-200 --output out/",
}


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def _commands(block: str) -> list[list[str]]:
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_every_command_and_option_the_readme_names_exists():
    p = parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    seen = set()
    for block in _blocks(README, "sh"):
        for argv in _commands(block):
            if argv[0] == "make":
                assert argv[1] in targets, f"the README runs make {argv[1]}, which the Makefile lacks"
                seen.add("make")
            elif Path(argv[0]).name == "imagenet-tfrecords":
                command, options = argv[1], [a.split("=")[0] for a in argv[2:] if a.startswith("--")]
                assert command in sub, f"the README names imagenet-tfrecords {command}"
                known = {s for a in sub[command]._actions for s in a.option_strings}
                assert set(options) <= known, f"{command}: {set(options) - known} named in the README, not in --help"
                seen.add(command)
    assert {"make", "run", "convert", "verify", "sample", "compile", "submit"} <= seen


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_docs_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
    pages += [ROOT / "components" / "README.md", ROOT / "pipelines" / "README.md"]
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            linked = (page.parent / target) if target else page
            assert linked.exists(), f"{page.name} links to {target}, which does not exist"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked), f"{page.name} links to {target}#{anchor}: no such heading"


def test_docs_cli_md_is_generated_from_the_parser():
    env = {k: v for k, v in os.environ.items() if k != "IMAGENET_TFRECORDS_IMAGE"}
    p = subprocess.run(
        [sys.executable, "-m", "imagenet_tfrecords.clidoc", str(ROOT / "docs" / "cli.md"), "--check"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    text = (ROOT / "docs" / "cli.md").read_text()
    sub = next(a for a in parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for command, sp in sub.items():
        section = text.split(f"\n## `{command}`\n", 1)[1].split("\n## ", 1)[0]
        for a in sp._actions:
            for s in a.option_strings:
                assert s in section or s in ("-h", "--help") or a.help == argparse.SUPPRESS, (command, s)


def test_a_stale_cli_md_says_run_make_docs(tmp_path):
    stale = tmp_path / "cli.md"
    stale.write_text((ROOT / "docs" / "cli.md").read_text().replace("--workers", "--threads"))
    p = subprocess.run(
        [sys.executable, "-m", "imagenet_tfrecords.clidoc", str(stale), "--check"], capture_output=True, text=True
    )
    assert p.returncode == 1 and "run make docs" in p.stderr


@pytest.mark.slow
def test_the_readme_local_commands_run_as_written(tmp_path):
    """The by-hand blocks in a fresh folder, then the README's readers on what they wrote."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    ran = []
    for block in _blocks(_section("Convert your own dataset"), "sh"):
        for line in block.splitlines():
            if not line.strip() or line in NEEDS_NETWORK or line == "make install":
                continue
            p = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env)
            assert p.returncode == 0, f"{line}\n{p.stdout}\n{p.stderr}"
            ran.append(line)
    sizes = (tmp_path / "build" / "tfrecords" / "sizes.txt").read_text()
    assert len(ran) >= 6 and sizes == "train,200\nval,50\ntest,30"
    for source in _blocks(_section("Read the records"), "python"):
        p = subprocess.run([sys.executable, "-c", source], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert p.returncode == 0, f"{source}\n{p.stderr[-3000:]}"
        assert p.stdout.strip(), source
