"""`keras-repro check` on real training scripts, each run twice in fresh processes.

The two checks run at once (2 cores); each starts its two training runs one after the other.
"""

from __future__ import annotations

import sys

import pytest

from helpers import REPO, ChildSpec, run_children_concurrently

pytestmark = pytest.mark.slow
CHILD = str(REPO / "tests" / "programs" / "check_child.py")


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """`check` of the bitwise script (must exit 0) and of the one with unseeded noise (must exit 1)."""
    clean, noisy = tmp_path_factory.mktemp("clean"), tmp_path_factory.mktemp("noisy")
    check = [sys.executable, "-m", "keras_repro", "check", "--", sys.executable, CHILD]
    return run_children_concurrently([ChildSpec([*check, str(clean)], expect=0),
                                      ChildSpec([*check, str(noisy), "--unseeded-noise"], expect=1)])


def test_check_says_reproducible_for_a_bitwise_script(checks):
    out = checks[0].stdout
    # The verdict is the last line, exactly: "not reproducible" contains "reproducible" too.
    assert out.splitlines()[-1] == "reproducible", out
    assert "run 1 vs run 2: identical" in out, out


def test_check_names_the_data_when_a_script_adds_unseeded_noise(checks):
    out = checks[1].stdout
    assert out.splitlines()[-1] == "not reproducible", out
    assert "data x" in out and "content" in out, out
    assert "default_rng" in out or "unseeded" in out, out
