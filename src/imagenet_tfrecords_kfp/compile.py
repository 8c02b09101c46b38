"""Compile the pipeline and each component to YAML, into a source checkout's top-level folders.

    python -m imagenet_tfrecords_kfp.compile [ROOT]     # make compile; ROOT defaults to the checkout

writes ROOT/pipelines/tinyimagenet_to_tfrecords.yaml and ROOT/components/<component>.yaml.
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
COMPILED = CHECKOUT / "pipelines" / "tinyimagenet_to_tfrecords.yaml"
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
    for path in compile_all(Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKOUT):
        print(f"wrote {path}")
