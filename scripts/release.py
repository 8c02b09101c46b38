"""What a release checks and writes, with the standard library only (the release workflow runs it before it
installs anything).

    python scripts/release.py check TAG [--dist DIR]       # exit 1, one line per disagreement
    python scripts/release.py notes VERSION [--image NAME:TAG@sha256:DIGEST ...]
    python scripts/release.py compile OUT --image NAME@sha256:DIGEST [--python PY]
    python scripts/release.py images [ROOT]                # every image the compiled YAML names, one a line
    python scripts/release.py name                         # the image's name without its tag (ghcr.io/...)

``check``: the tag is ``v`` + ``imagenet_tfrecords.__version__``; every ``image:`` of the committed
``pipelines/*.yaml`` and ``components/*.yaml`` is the version's image (``ghcr.io/...:VERSION``, what
``make compile`` writes); CHANGELOG.md has a section for the version with something in it; with ``--dist``,
the wheel and sdist there carry the version.

``compile``: ``pipelines/*.yaml`` and ``components/*.yaml`` compiled into OUT against the image by digest (with
PY, a Python where the package is installed), then checked: every executor names that reference and the files
are the ones the checkout commits. These are the files attached to the GitHub release.

``notes``: the version's CHANGELOG.md section, then the images with their digests and how to pin them:
the GitHub release's notes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "imagenet-tfrecords"
COMPILED = ("pipelines", "components")


def version(root: Path = ROOT) -> str:
    """imagenet_tfrecords.__version__, read as text (the one place it is written)."""
    text = (root / "src" / "imagenet_tfrecords" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if not m:
        raise SystemExit("src/imagenet_tfrecords/__init__.py: no __version__ line")
    return m[1]


def default_image(root: Path = ROOT) -> str:
    """The image name without its tag, as components/image.py writes it (ghcr.io/<owner>/<name>)."""
    text = (root / "src" / "imagenet_tfrecords_kfp" / "components" / "image.py").read_text()
    m = re.search(r'^DEFAULT_IMAGE = f"([^"{]+):\{__version__\}"$', text, re.M)
    if not m:
        raise SystemExit("src/imagenet_tfrecords_kfp/components/image.py: no DEFAULT_IMAGE line")
    return m[1]


def images(root: Path = ROOT) -> dict[str, set[str]]:
    """image -> the compiled files naming it."""
    found: dict[str, set[str]] = {}
    for folder in COMPILED:
        for path in sorted((root / folder).glob("*.yaml")):
            for image in re.findall(r"^\s+image: (\S+)\s*$", path.read_text(), re.M):
                found.setdefault(image, set()).add(f"{folder}/{path.name}")
    return found


_SECTION = re.compile(r"^## \[([^\]]+)\][^\n]*\n", re.M)


def changelog_section(wanted: str, root: Path = ROOT) -> str:
    """The body of CHANGELOG.md's ``## [wanted]`` section (its link references left out), or ''."""
    text = (root / "CHANGELOG.md").read_text()
    heads = list(_SECTION.finditer(text))
    for n, head in enumerate(heads):
        if head[1] == wanted:
            end = heads[n + 1].start() if n + 1 < len(heads) else len(text)
            body = text[head.end() : end]
            body = re.sub(r"^\[[^\]]+\]: \S+\s*$", "", body, flags=re.M)
            return body.strip()
    return ""


def problems(tag: str, root: Path = ROOT, dist: Path | None = None) -> list[str]:
    """Every way the tag, the package version, the committed YAML and CHANGELOG.md disagree."""
    v = version(root)
    out = []
    if tag != f"v{v}":
        out.append(f"tag {tag} is not v{v}, the package version (src/imagenet_tfrecords/__init__.py)")
    expected = f"{default_image(root)}:{v}"
    found = images(root)
    if not found:
        out.append("no image: line in pipelines/*.yaml or components/*.yaml")
    for image, files in sorted(found.items()):
        if image != expected:
            out.append(f"{', '.join(sorted(files))} name {image}, not {expected}: run make compile and commit")
    if not changelog_section(v, root):
        out.append(f"CHANGELOG.md has no section '## [{v}]' with the release's notes")
    if dist is not None:
        name = PACKAGE.replace("-", "_")
        wheels = sorted(dist.glob(f"{name}-*.whl"))
        sdists = sorted(dist.glob(f"{name}-*.tar.gz"))
        if not wheels or not sdists:
            out.append(f"{dist}: no wheel or no sdist of {PACKAGE}")
        for path in wheels + sdists:
            if not path.name.startswith(f"{name}-{v}-") and path.name != f"{name}-{v}.tar.gz":
                out.append(f"{path.name} is not version {v}")
    return out


DIGEST_REF = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


def compile_release(out: Path, image: str, python: str = sys.executable, root: Path = ROOT) -> list[str]:
    """Compile the release's YAML into ``out`` against ``image`` (NAME@sha256:...); every problem found."""
    if not DIGEST_REF.fullmatch(image):
        return [f"--image {image}: not NAME@sha256:<64 hex digits> (a release pins its image by digest)"]
    env = {**os.environ, "IMAGENET_TFRECORDS_IMAGE": image}
    p = subprocess.run(
        [python, "-m", "imagenet_tfrecords_kfp.compile", str(out)], env=env, capture_output=True, text=True
    )
    if p.returncode != 0:
        return [f"compiling failed: {p.stderr.strip()[-2000:]}"]
    problems = []
    wanted = sorted(f"{f}/{p.name}" for f in COMPILED for p in (root / f).glob("*.yaml"))
    made = sorted(f"{f}/{p.name}" for f in COMPILED for p in (out / f).glob("*.yaml"))
    if made != wanted:
        problems.append(f"compiled {made}, the checkout commits {wanted}")
    for named, files in sorted(images(out).items()):
        if named != image:
            problems.append(f"{', '.join(sorted(files))} name {named}, not {image}")
    if not images(out):
        problems.append(f"no image: line in {out}")
    return problems


def notes(v: str, refs: list[str], root: Path = ROOT) -> str:
    body = changelog_section(v, root)
    if not body:
        raise SystemExit(f"CHANGELOG.md has no section '## [{v}]'")
    lines = [body, "", "## Images", ""]
    if refs:
        lines += ["Pin an image by its digest (a tag can be moved; a digest cannot):", ""]
        lines += ["| image | reference |", "| --- | --- |"]
        for ref in refs:
            m = re.fullmatch(r"([^@\s]+):([\w.-]+)@(sha256:[0-9a-f]{64})", ref)
            if not m:
                raise SystemExit(f"--image {ref}: not NAME:TAG@sha256:<64 hex digits>")
            lines.append(f"| `{m[1]}:{m[2]}` | `{m[1]}@{m[3]}` |")
        lines += [
            "",
            "Every image is multi-platform (linux/amd64, linux/arm64). The attached `pipelines/*.yaml` and",
            "`components/*.yaml` name the conversion image by this digest: upload them as they are.",
        ]
    else:
        lines.append("(none recorded)")
    extras = "# extras: [tf], [torch], [gcs], [s3]"
    lines += ["", "## Install", "", f"    pip install '{PACKAGE}=={v}'    {extras}", ""]
    return "\n".join(lines)


def _verdict(found: list[str], ok: str) -> int:
    """Each problem on stderr as a refusal and exit 1; else the ``ok`` line and exit 0."""
    for line in found:
        print(f"release refused: {line}", file=sys.stderr)
    if not found:
        print(ok)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="refuse a release whose tag, version, YAML or changelog disagree")
    p.add_argument("tag")
    p.add_argument("--dist", type=Path, help="also check the wheel and sdist in this folder")
    p.add_argument("--root", type=Path, default=ROOT)
    p = sub.add_parser("notes", help="the release notes: the CHANGELOG section and the images' digests")
    p.add_argument("version")
    p.add_argument("--image", action="append", default=[], help="NAME:TAG@sha256:DIGEST (as pushed), once per image")
    p.add_argument("--root", type=Path, default=ROOT)
    p = sub.add_parser("compile", help="compile the release's YAML against an image digest, and check it")
    p.add_argument("out", type=Path)
    p.add_argument("--image", required=True, help="NAME@sha256:DIGEST")
    p.add_argument("--python", default=sys.executable, help="a Python with the package installed")
    p = sub.add_parser("images", help="every image the compiled YAML names")
    p.add_argument("root", nargs="?", type=Path, default=ROOT)
    sub.add_parser("name", help="the image's name without its tag, as components/image.py writes it")
    args = parser.parse_args(argv)
    if args.command == "name":
        print(default_image())
        return 0
    if args.command == "check":
        agree = f"{args.tag}: version, compiled YAML and CHANGELOG.md agree"
        return _verdict(problems(args.tag, args.root, args.dist), agree)
    if args.command == "compile":
        found = compile_release(args.out, args.image, args.python)
        files = len(list(args.out.glob("*/*.yaml")))
        return _verdict(found, f"compiled {files} files into {args.out}, every step in {args.image}")
    if args.command == "notes":
        print(notes(args.version, args.image, args.root))
        return 0
    for image in images(args.root):
        print(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
