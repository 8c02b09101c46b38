"""What the messages of a missing optional package tell the user to run: a pip command that works for the
installation at hand (fs.install_command), never the name of a release that may not exist.

Each installation form is made for real: the package's modules copied into a folder standing for
site-packages, with the dist-info pip writes (METADATA, and direct_url.json, PEP 610, when pip installed
from a folder or a file), and read by importlib.metadata in a fresh Python."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from imagenet_tfrecords import __version__

from .conftest import ROOT

# a Python without TensorFlow or torch: importing them fails as if they were not installed
HIDE = "import sys; sys.modules['tensorflow'] = None; sys.modules['torch'] = None; "


def _site(tmp_path, direct_url: dict | None):
    """A site-packages holding the package as pip installs it (not a checkout), and its dist-info."""
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "src" / "imagenet_tfrecords", site / "imagenet_tfrecords")
    info = site / f"imagenet_tfrecords-{__version__}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: imagenet-tfrecords\nVersion: {__version__}\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    return site


def _python(code: str, site=None, cwd=None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "NO_GCE_CHECK": "true"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd)


def _command(site, extra="tf") -> str:
    p = _python(f"from imagenet_tfrecords.fs import install_command; print(install_command({extra!r}))", site)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_from_pypi_the_same_release(tmp_path):
    assert _command(_site(tmp_path, None)) == f"pip install 'imagenet-tfrecords[tf]=={__version__}'"


def test_from_a_checkout_folder_that_folder(tmp_path):
    checkout = tmp_path / "my checkout"
    checkout.mkdir()
    (checkout / "pyproject.toml").write_text("[project]\nname = 'imagenet-tfrecords'\n")
    site = _site(tmp_path, {"url": checkout.as_uri(), "dir_info": {}})
    assert _command(site, "torch") == f"pip install '{checkout}[torch]'"
    shutil.rmtree(checkout)  # gone since: PyPI's release
    assert _command(site, "torch") == f"pip install 'imagenet-tfrecords[torch]=={__version__}'"


def test_from_a_wheel_file_that_file(tmp_path):
    wheel = tmp_path / f"imagenet_tfrecords-{__version__}-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    site = _site(tmp_path, {"url": wheel.as_uri(), "archive_info": {}})
    assert _command(site, "gcs") == f"pip install '{wheel}[gcs]'"
    wheel.unlink()
    assert _command(site, "gcs") == f"pip install 'imagenet-tfrecords[gcs]=={__version__}'"


def test_from_a_url_the_release_on_pypi(tmp_path):
    site = _site(tmp_path, {"url": "https://example.com/imagenet_tfrecords.whl", "archive_info": {}})
    assert _command(site) == f"pip install 'imagenet-tfrecords[tf]=={__version__}'"


def test_from_this_checkout_this_checkout_editable():
    p = _python("from imagenet_tfrecords.fs import install_command; print(install_command('tf'))", ROOT / "src")
    assert p.stdout.strip() == f"pip install -e '{ROOT}[tf]'"


def test_without_torch_the_torch_reader_says_what_to_install(tmp_path):
    """It was a bare ModuleNotFoundError."""
    p = _python(HIDE + "from imagenet_tfrecords.torch import TFRecordImages", _site(tmp_path, None))
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("imagenet_tfrecords.fs.MissingPackageError: imagenet_tfrecords.torch needs PyTorch (")
    assert last.endswith(
        f"pip install 'imagenet-tfrecords[torch]=={__version__}' (or read the records with TensorFlow: "
        f"imagenet_tfrecords.load, pip install 'imagenet-tfrecords[tf]=={__version__}')"
    )
    p = _python(HIDE + "from imagenet_tfrecords.torch import TFRecordImages", ROOT / "src")
    assert f"pip install -e '{ROOT}[torch]'" in p.stderr.strip().splitlines()[-1]
    p = _python(HIDE + "\ntry:\n import imagenet_tfrecords.torch\nexcept ImportError:\n print('ok')", ROOT / "src")
    assert p.stdout.strip() == "ok"  # still an ImportError for code that tries it


def test_without_tensorflow_load_says_what_to_install(tmp_path):
    p = _python(HIDE + "from imagenet_tfrecords.reader import tensorflow; tensorflow()", _site(tmp_path, None))
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("imagenet_tfrecords.fs.MissingPackageError: reading the records with tf.data needs")
    assert f"pip install 'imagenet-tfrecords[tf]=={__version__}'" in last
    assert f"imagenet_tfrecords.torch, pip install 'imagenet-tfrecords[torch]=={__version__}')" in last


@pytest.mark.parametrize("scheme, extra, module", [("gs", "gcs", "gcsfs"), ("s3", "s3", "s3fs")])
def test_an_object_store_without_its_client_is_bad_environment_with_the_install_command(scheme, extra, module):
    """It was 'internal error: ImportError: Install s3fs to access S3', exit 1."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from imagenet_tfrecords.cli import main\n"
        f"sys.exit(main(['verify', '{scheme}://bucket/out']))"
    )
    env_code = (
        "import os; os.environ.update(FSSPEC_GS_TOKEN='anon', AWS_ACCESS_KEY_ID='x', AWS_SECRET_ACCESS_KEY='y')\n"  # noqa: E501
    )
    p = _python(env_code + code, ROOT / "src")
    assert p.returncode == 3, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"error: {scheme}://bucket/out: ")
    assert line.endswith(f"(pip install -e '{ROOT}[{extra}]')")


DOC_PAGES = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "components" / "README.md",
    ROOT / "pipelines" / "README.md",
]


def test_every_pypi_install_line_in_the_docs_gives_the_checkout_form_beside_it():
    """Until a version is on PyPI its pip line fails: every paragraph naming one also names the checkout's."""
    seen = 0
    for page in DOC_PAGES:
        for paragraph in page.read_text().split("\n\n"):
            if "pip install 'imagenet-tfrecords" in paragraph:
                seen += 1
                assert "pip install '.[" in paragraph, f"{page.name}: {paragraph[:300]}"
                assert re.search(r"(release )?\d+\.\d+\.\d+ and later|PyPI, \d+\.\d+\.\d+ and later", paragraph), (
                    f"{page.name}: a PyPI line that does not say from which release: {paragraph[:300]}"
                )
    assert seen >= 3


def test_every_image_the_docs_name_is_one_a_release_publishes():
    name = "ghcr.io/imagenet-tfrecords/imagenet-tfrecords"
    allowed = {":VERSION", ":VERSION-tf", ":<version>", ":<version>-tf", f":{__version__}", f":{__version__}-tf"}
    seen = 0
    for page in [*DOC_PAGES, ROOT / "src" / "imagenet_tfrecords_kfp" / "commands.py"]:
        for suffix in re.findall(re.escape(name) + r"([:@][\w.<>:-]+)?", page.read_text()):
            seen += 1
            assert suffix in allowed or suffix.startswith("@sha256:"), f"{page.name}: {name}{suffix}"
    assert seen >= 5


def test_the_code_names_install_commands_only_through_install_command():
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        if path.name == "fs.py":
            text = text.split("def install_command", 1)[0] + text.split("def install_command", 1)[1].split("\n\n\n")[1]
        assert "pip install" not in text, f"{path.relative_to(ROOT)} names a pip command of its own"
