"""Reproducibility claims, each checked in fresh processes by comparing bits, with negative controls.

Two children run concurrently (2 cores) to halve the wall time; each trains a tiny model for 2 epochs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, describe_child

pytestmark = pytest.mark.slow
CHILD = REPO / "tests" / "programs" / "train_child.py"


def _launch(tmp_path: Path, tag: str, *args: str, env: dict | None = None) -> tuple[list[str], subprocess.Popen]:
    import os

    cmd = [sys.executable, str(CHILD), "--run-dir", str(tmp_path / tag), *args]
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = str(REPO)
    child_env.update(env or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env)
    return cmd, proc


def train_pair(tmp_path: Path, args_a: list[str], args_b: list[str]) -> tuple[dict, dict]:
    """Runs two training children at once; returns their JSON results (fails with their output)."""
    launched = [_launch(tmp_path, "a", *args_a), _launch(tmp_path, "b", *args_b)]
    results = []
    for cmd, proc in launched:
        out, err = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        assert proc.returncode == 0, describe_child(done, "training child failed")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results[0], results[1]


def assert_same_bits(a: dict, b: dict) -> None:
    assert a["initial"] == b["initial"], "initial weights differ"
    assert a["steps"] == b["steps"], "per-step losses differ"
    assert a["final"] == b["final"], "final weights differ"


def assert_different_bits(a: dict, b: dict) -> None:
    assert a["final"] != b["final"] and a["steps"] != b["steps"], "runs that should differ are identical"


@pytest.mark.parametrize("mode", ["bitwise", "deterministic"])
def test_numpy_input_with_dropout_and_builder_is_bit_identical(tmp_path, mode):
    a, b = train_pair(tmp_path, ["--mode", mode, "--seed", "7"], ["--mode", mode, "--seed", "7"])
    assert_same_bits(a, b)
    assert len(a["steps"]) == 2 * 12  # 384 samples / 32 per batch, 2 epochs


def test_negative_controls_other_seed_and_mode_off_differ(tmp_path):
    a, b = train_pair(tmp_path, ["--mode", "bitwise", "--seed", "7"], ["--mode", "bitwise", "--seed", "8"])
    assert_different_bits(a, b)
    off_a, off_b = train_pair(tmp_path / "off", ["--mode", "off"], ["--mode", "off"])
    assert off_a["initial"] != off_b["initial"], "mode off without a seed must not seed weights"
    assert_different_bits(off_a, off_b)


def test_each_epoch_gets_its_own_order_identical_across_reruns(tmp_path):
    a, b = train_pair(tmp_path, ["--mode", "bitwise", "--seed", "11"], ["--mode", "bitwise", "--seed", "11"])
    assert [o["sha256"] for o in a["order"]] == [o["sha256"] for o in b["order"]]
    assert a["order"][0]["sha256"] != a["order"][1]["sha256"], "epoch 2 repeated epoch 1's order"
    assert a["order"][0]["head"] != list(range(len(a["order"][0]["head"]))), "epoch 1 was not shuffled"


@pytest.mark.parametrize("mode", ["bitwise", "deterministic"])
def test_tf_data_pipeline_with_shuffle_and_parallel_map_is_bit_identical(tmp_path, mode):
    args = ["--mode", mode, "--seed", "5", "--input", "dataset"]
    a, b = train_pair(tmp_path, args, args)
    assert_same_bits(a, b)
    assert a["first_elements"] and a["first_elements"] == b["first_elements"]


def test_tf_data_pipeline_negative_control_other_seed_changes_order(tmp_path):
    a, b = train_pair(tmp_path, ["--seed", "5", "--input", "dataset"], ["--seed", "6", "--input", "dataset"])
    assert a["first_elements"] != b["first_elements"]
    assert_different_bits(a, b)


def test_model_built_after_configure_is_bit_identical(tmp_path):
    args = ["--mode", "bitwise", "--seed", "9", "--model", "after-configure", "--validation-split", "0.25"]
    a, b = train_pair(tmp_path, args, args)
    assert_same_bits(a, b)


def test_fit_configures_the_process_itself(tmp_path):
    args = ["--mode", "bitwise", "--seed", "9", "--no-configure"]
    a, b = train_pair(tmp_path, args, args)
    assert_same_bits(a, b)


def test_xla_jit_compile_is_bit_identical(tmp_path):
    from keras_repro import load_run

    args = ["--mode", "bitwise", "--seed", "4", "--jit"]
    a, b = train_pair(tmp_path, args, args)
    assert load_run(a["path"])["hyperparameters"]["compile"]["jit_compile"] is True, "XLA was not used"
    assert_same_bits(a, b)
