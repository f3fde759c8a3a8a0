"""`keras-repro check` on real training scripts, each run twice in fresh processes."""

from __future__ import annotations

import sys

import pytest

from helpers import REPO, run_child

pytestmark = pytest.mark.slow
CHILD = str(REPO / "tests" / "programs" / "check_child.py")


def test_check_says_reproducible_for_a_bitwise_script(tmp_path):
    proc = run_child([sys.executable, "-m", "keras_repro", "check", "--", sys.executable, CHILD, str(tmp_path)],
                     expect=0, timeout=300)
    assert "reproducible" in proc.stdout.lower(), proc.stdout


def test_check_names_the_data_when_a_script_adds_unseeded_noise(tmp_path):
    proc = run_child([sys.executable, "-m", "keras_repro", "check", "--", sys.executable, CHILD, str(tmp_path),
                      "--unseeded-noise"], expect=1, timeout=300)
    out = proc.stdout
    assert "data x" in out and "content" in out, out
    assert "default_rng" in out or "unseeded" in out, out
