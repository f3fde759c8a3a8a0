"""Reproducibility claims, each checked in fresh processes by comparing bits, with negative controls.

The children are tests/training_runs.py's (a session fixture): every claim compares a scenario of one
fresh process with the same scenario of another, after the same scenarios before it; each trains a tiny
model for 2 epochs.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def assert_same_bits(a: dict, b: dict) -> None:
    assert a["initial"] == b["initial"], "initial weights differ"
    assert a["steps"] == b["steps"], "per-step losses differ"
    assert a["final"] == b["final"], "final weights differ"


def assert_different_bits(a: dict, b: dict) -> None:
    assert a["final"] != b["final"] and a["steps"] != b["steps"], "runs that should differ are identical"


@pytest.mark.parametrize("mode, pair", [("bitwise", ("A1", "A2")), ("deterministic", ("D1", "D2"))])
def test_numpy_input_with_dropout_and_builder_is_bit_identical(training_runs, mode, pair):
    a, b = (training_runs.result(child, "s7") for child in pair)
    assert training_runs.children[pair[0]].process_args[:2] == ["--mode", mode]
    assert_same_bits(a, b)
    assert len(a["steps"]) == 2 * 12  # 384 samples / 32 per batch, 2 epochs


def test_negative_controls_other_seed_and_mode_off_differ(training_runs):
    a, b = training_runs.result("A1", "s7"), training_runs.result("A2", "s8")
    assert_different_bits(a, b)
    off_a, off_b = training_runs.result("C1", "off"), training_runs.result("C2", "off")
    assert off_a["initial"] != off_b["initial"], "mode off without a seed must not seed weights"
    assert_different_bits(off_a, off_b)


def test_each_epoch_gets_its_own_order_identical_across_reruns(training_runs):
    a, b = training_runs.result("A1", "s7"), training_runs.result("A2", "s7")
    assert [o["sha256"] for o in a["order"]] == [o["sha256"] for o in b["order"]]
    assert a["order"][0]["sha256"] != a["order"][1]["sha256"], "epoch 2 repeated epoch 1's order"
    assert a["order"][0]["head"] != list(range(len(a["order"][0]["head"]))), "epoch 1 was not shuffled"


@pytest.mark.parametrize("mode, pair", [("bitwise", ("B1", "B2")), ("deterministic", ("D1", "D2"))])
def test_tf_data_pipeline_with_shuffle_and_parallel_map_is_bit_identical(training_runs, mode, pair):
    # D1/D2 build their pipeline first thing after configure(seed=5); B1/B2 after other fits, reseeded.
    a, b = (training_runs.result(child, "ds5") for child in pair)
    assert training_runs.children[pair[0]].process_args[:2] == ["--mode", mode]
    assert_same_bits(a, b)
    assert a["first_elements"] and a["first_elements"] == b["first_elements"]


def test_tf_data_pipeline_negative_control_other_seed_changes_order(training_runs):
    a, b = training_runs.result("B1", "ds5"), training_runs.result("B2", "ds6")
    assert a["first_elements"] != b["first_elements"]
    assert_different_bits(a, b)


def test_model_built_after_configure_is_bit_identical(training_runs):
    # The first scenario of A1/A2: configure(seed=9, mode="bitwise"), build the model, fit it.
    a, b = training_runs.result("A1", "after-configure"), training_runs.result("A2", "after-configure")
    assert_same_bits(a, b)


def test_fit_configures_the_process_itself(training_runs):
    # The first scenario of B1/B2, which never call configure(): fit(seed=9, mode="bitwise") does.
    a, b = training_runs.result("B1", "fit-configures"), training_runs.result("B2", "fit-configures")
    assert_same_bits(a, b)


def test_xla_jit_compile_is_bit_identical(training_runs):
    from keras_repro import load_run

    a, b = training_runs.result("B1", "jit"), training_runs.result("B2", "jit")
    assert load_run(a["path"])["hyperparameters"]["compile"]["jit_compile"] is True, "XLA was not used"
    assert_same_bits(a, b)
