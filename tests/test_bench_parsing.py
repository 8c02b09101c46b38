"""The benchmark reads the figures the command line prints: a change to those lines must not break it."""

from __future__ import annotations

import sys

from .conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import _images_and_inner_s  # noqa: E402


def test_the_benchmark_parses_what_convert_prints(sample_dir, tmp_path):
    p = run_cli("convert", "--data", sample_dir, "--output", tmp_path / "out")
    images, seconds = _images_and_inner_s("convert", "convert", p.stdout, 122)
    assert images == 122 and seconds is not None and seconds > 0
