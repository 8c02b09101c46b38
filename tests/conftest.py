import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet_tfrecords.sample import write_sample

from .servers import gcs_emulator, moto_s3, s3_user_and_enforce_auth

ROOT = Path(__file__).resolve().parent.parent
META = ROOT.parent / "shared" / "data" / "tiny-imagenet-meta"
CLI = [sys.executable, "-m", "imagenet_tfrecords"]
REGION = "us-east-1"
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCSFS_", "FSSPEC_", "CLOUDSDK_", "BOTO_")


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


@pytest.fixture(scope="module")
def converted(sample_dir, tmp_path_factory) -> Path:
    """The sample dataset converted by the CLI (a module may define its own), one class a train
    shard: the order readers must still shuffle well."""
    out = tmp_path_factory.mktemp("converted") / "out"
    run_cli("convert", "--data", sample_dir, "--output", out, "--workers", "2", "--train-order", "per-class")
    return out


@pytest.fixture()
def output(converted, tmp_path) -> Path:
    """A private copy of the converted sample that a test may damage."""
    d = tmp_path / "out"
    shutil.copytree(converted, d)
    return d


def convert_small_shards(data, out, *extra, **kw) -> subprocess.CompletedProcess:
    """``convert`` with two images per val/test shard, every reject allowed (fixtures full of them)."""
    return run_cli(
        "convert", "--data", data, "--output", out, "--shard-size", "2", "--max-reject-fraction", "1", *extra, **kw
    )


def run_cli(*args, check=True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
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


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    server = gcs_emulator(tmp_path_factory.mktemp("gcs-log"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = moto_s3(tmp_path_factory.mktemp("moto-log"))
    server.key_id, server.secret = s3_user_and_enforce_auth(server, REGION)
    yield server
    server.stop()


@pytest.fixture()
def store_env(gcs_server, s3_server, monkeypatch, tmp_path):
    """Only the standard variables: nothing from the machine's own cloud configuration."""
    for var in list(os.environ):
        if var.startswith(_ENV_PREFIXES) or var in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK"):
            monkeypatch.delenv(var)
    nowhere = tmp_path / "no-cloud-config"
    env = {
        # GCS: the emulator, unauthenticated, over its JSON API only
        "STORAGE_EMULATOR_HOST": gcs_server.url,
        "FSSPEC_GS_TOKEN": "anon",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_GCE_CHECK": "true",  # never probe a metadata server (google-auth)
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "none",  # nor TensorFlow's own GCS client, should it ever be used
        "CLOUDSDK_CONFIG": str(nowhere),
        # S3: moto, with a key it generated and checks
        "AWS_ENDPOINT_URL": s3_server.url,
        "AWS_ACCESS_KEY_ID": s3_server.key_id,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(nowhere / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    gcs_server.check_alive()
    s3_server.check_alive()
