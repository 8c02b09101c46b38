import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet_tfrecords.sample import write_sample

ROOT = Path(__file__).resolve().parent.parent
META = ROOT.parent / "shared" / "data" / "tiny-imagenet-meta"
CLI = [sys.executable, "-m", "imagenet_tfrecords.cli"]


@pytest.fixture(scope="session")
def meta_dir() -> Path:
    if not (META / "wnids.txt").exists():
        pytest.skip(f"the real TinyImageNet metadata is not at {META} (../shared/data/tiny-imagenet-meta)")
    return META


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """A small TinyImageNet-layout dataset of real JPEGs (4% grayscale)."""
    d = tmp_path_factory.mktemp("sample")
    write_sample(str(d), classes=6, train_per_class=12, val=30, test=20)
    return d


@pytest.fixture()
def sample_copy(sample_dir, tmp_path) -> Path:
    """A private copy of the sample dataset that a test may damage."""
    d = tmp_path / "data"
    shutil.copytree(sample_dir, d, symlinks=True)
    return d


def run_cli(*args, check=True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def read_records(path) -> list[dict]:
    """Every record of a TFRecord file, parsed by TensorFlow's own reader and parser."""
    import tensorflow as tf

    from imagenet_tfrecords.records import feature_spec

    spec = feature_spec()
    out = []
    for raw in tf.data.TFRecordDataset(str(path)):
        ex = tf.io.parse_single_example(raw, spec)
        out.append({k: v.numpy() for k, v in ex.items()})
    return out


def read_split(output: Path, split: str) -> list[dict]:
    files = sorted((output / split).glob("*.tfrecord"))
    return [r for f in files for r in read_records(f)]
