"""Compile the pipeline and each component to YAML, into a source checkout's top-level folders.

    python -m imagenet_tfrecords_kfp.compile [ROOT]     # make compile; ROOT defaults to the checkout

writes ROOT/pipelines/tinyimagenet_to_tfrecords.yaml and ROOT/components/<component>.yaml (ROOT is required
outside a source checkout). The wheel carries the committed files in imagenet_tfrecords_kfp/compiled/;
``compiled_file`` finds them in either place.
``make compile-check`` compiles into a temporary folder and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kfp import compiler

from imagenet_tfrecords.plan import DEFAULT_PARALLELISM

from .components import aggregate_stats, convert_shards, parse_metadata
from .pipelines.tinyimagenet_to_tfrecords import compile_pipeline

CHECKOUT = Path(__file__).resolve().parents[2]  # src/imagenet_tfrecords_kfp/compile.py -> the checkout
PACKAGED = Path(__file__).resolve().parent / "compiled"  # the wheel's copy of pipelines/ and components/


def compiled_file(folder: str, name: str) -> Path:
    """The committed ``pipelines/`` or ``components/`` YAML ``name``: the installed package's copy (a wheel
    carries them in imagenet_tfrecords_kfp/compiled/), else the source checkout's."""
    packaged = PACKAGED / folder / name
    return packaged if packaged.exists() else CHECKOUT / folder / name


COMPILED = compiled_file("pipelines", "tinyimagenet_to_tfrecords.yaml")
COMPONENTS = {c.name.replace("-", "_"): c for c in (parse_metadata, convert_shards, aggregate_stats)}


def compile_all(root: Path = CHECKOUT, parallelism: int = DEFAULT_PARALLELISM) -> list[Path]:
    """Write the pipeline's and every component's YAML under ``root``; return the files written."""
    for folder in ("pipelines", "components"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    written = [root / "pipelines" / COMPILED.name]
    compile_pipeline(str(written[0]), parallelism)
    for name, component in COMPONENTS.items():
        written.append(root / "components" / f"{name}.yaml")
        compiler.Compiler().compile(component, package_path=str(written[-1]))
    return written


if __name__ == "__main__":
    if len(sys.argv) < 2 and not (CHECKOUT / "pyproject.toml").exists():
        sys.exit("not in a source checkout: name the folder to write pipelines/ and components/ into")
    for path in compile_all(Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKOUT):
        print(f"wrote {path}")
