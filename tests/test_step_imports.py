"""Each pipeline step is a fresh Python process (kfp's executor): what it imports is paid on every run.

The plan step (parse-metadata) reads the dataset's listing and metadata, never a pixel: it must not
load the decoders (numpy, Pillow, simplejpeg), which only the conversion and the report use.
"""

from __future__ import annotations

import json
import subprocess
import sys

DECODERS = ("numpy", "PIL", "simplejpeg")

PLAN_STEP = """
import json, sys
from imagenet_tfrecords.tasks import plan_step

numbers, summary = plan_step(sys.argv[1], sys.argv[2], 4, 2, sys.argv[3], sys.argv[4])
print(json.dumps({"tasks": numbers, "loaded": [m for m in DECODERS if m in sys.modules]}))
""".replace("DECODERS", repr(DECODERS))


def _python(code: str, *args) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_plan_step_plans_without_loading_the_decoders(sample_dir, tmp_path):
    out = tmp_path / "out"
    got = _python(PLAN_STEP, sample_dir, out, tmp_path / "plan.json", tmp_path / "labels.txt")
    assert got["tasks"] == [0, 1]
    assert json.loads((tmp_path / "plan.json").read_text())["shards"]  # it did plan
    assert got["loaded"] == []


def test_the_check_sees_a_decoder_loaded():
    code = (
        f"import json, sys, imagenet_tfrecords.sample; print(json.dumps([m for m in {DECODERS!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "numpy" in json.loads(done.stdout)


RUN_IMPORTS = """
import json, os, sys
from imagenet_tfrecords_kfp.commands import _import_kfp_for_local

_import_kfp_for_local()
from kfp import local
from imagenet_tfrecords_kfp.pipelines.tinyimagenet_to_tfrecords import build_pipeline

build_pipeline(4, retries=False)
unloaded = [m for m in ("kfp.client", "kubernetes") if m in sys.modules]
variable = os.environ.get("_KFP_RUNTIME")
from imagenet_tfrecords_kfp.api import Client  # (submit, in the same process, still has kfp's client)

print(json.dumps({"loaded": unloaded, "variable": variable, "client": Client.__mro__[1].__module__}))
"""


def test_run_builds_the_pipeline_without_kfps_api_client():
    got = _python(RUN_IMPORTS)
    assert got == {"loaded": [], "variable": None, "client": "kfp.client.client"}
