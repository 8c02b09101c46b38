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


# --- every Python block of docs/*.md runs -------------------------------------------------------

DOCS_BLOCKS = [
    (page.name, n, block)
    for page in sorted((ROOT / "docs").glob("*.md"))
    for n, block in enumerate(_blocks(page.read_text(), "python"))
]
# Blocks that need a cloud project or a GPU: compiled only, and why.
NEEDS = {
    "aiplatform": "submits to Vertex AI (a Google Cloud project)",
    'device="mixed"': "decodes on an NVIDIA GPU",
}


@pytest.fixture(scope="module")
def outputs(sample_dir, tmp_path_factory) -> dict[str, Path]:
    """The sample converted in each format, each in a folder of its own as ``out``."""
    from .conftest import run_cli

    found = {}
    for fmt in ("seed", "tf-models", "tfds"):
        where = tmp_path_factory.mktemp(fmt)
        run_cli("convert", "--data", sample_dir, "--output", where / "out", "--format", fmt, "--workers", "1")
        found[fmt] = where
    return found


def _probe(block: str) -> str:
    """A line that uses what the block made (most end by defining a dataset or a pipeline)."""
    if "pipe.run()" in block:
        return "assert len(images) > 0, images"
    if "\nds = " in block:
        return "print(next(iter(ds)))"
    if "\ntrain = builder" in block:
        return "print(next(iter(train)))"
    return ""


@pytest.mark.parametrize("page, n, block", DOCS_BLOCKS, ids=[f"{p}-{n}" for p, n, _ in DOCS_BLOCKS])
def test_every_python_block_of_the_docs_runs(outputs, page, n, block):
    compile(block, f"{page} block {n}", "exec")
    why = next((reason for marker, reason in NEEDS.items() if marker in block), None)
    if why:
        pytest.skip(f"{page} block {n} {why}: compiled only")
    if "nvidia.dali" in block:
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (the [dali] extra, about 450 MB)")
    if "from kfp" in block:  # a pipeline around the compiled conversion: it must compile
        block = block.replace("    train(dataset=", "    print(")
        for folder in ("pipelines", "components"):  # (the committed YAML, wherever the block runs)
            block = block.replace(f'"{folder}/', f'"{ROOT}/{folder}/')
        (name,) = re.findall(r"^@dsl\.pipeline(?:\(.*\))?\ndef (\w+)\(", block, re.M)
        block += f"\nfrom kfp import compiler\ncompiler.Compiler().compile({name}, 'pipeline.yaml')\n"
    fmt = "tf-models" if "image/encoded" in block else "tfds" if "tensorflow_datasets" in block else "seed"
    source = block.replace("gs://bucket/tinyimagenet-tfrecords", "out") + "\n" + _probe(block) + "\n"
    p = subprocess.run(
        [sys.executable, "-c", source],
        cwd=outputs[fmt],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])},
    )
    assert p.returncode == 0, f"{page} block {n}:\n{source}\n{p.stderr[-3000:]}"


def test_the_output_help_says_what_is_refused(sample_copy):
    """--output inside --data is refused only in its split folders (or as --data itself): the help says so."""
    from .conftest import run_cli

    sub = next(a for a in parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    output = next(a for a in sub["convert"]._actions if "--output" in a.option_strings)
    assert output.help == "where shards and reports go (not --data itself, nor inside one of its split folders)"
    refused = run_cli("convert", "--data", sample_copy, "--output", sample_copy / "train" / "out", check=False)
    assert refused.returncode == 3, refused.stderr
    same = run_cli("convert", "--data", sample_copy, "--output", sample_copy, check=False)
    assert same.returncode == 3, same.stderr
    run_cli("convert", "--data", sample_copy, "--output", sample_copy / "converted")  # inside, beside the splits
