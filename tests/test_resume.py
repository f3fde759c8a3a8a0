"""Resume after a crash gives the same bits as a run that never stopped, each claim in fresh processes.

A child pauses after a known global step ("PAUSED n" on stdout) and is killed with SIGKILL; another child
resumes it. Final weights, every step loss (float.hex) and the epoch metrics must equal the uninterrupted
run's, and `keras-repro diff` must say identical. Negative controls: a resume that does not restore the
Dropout seed state differs, and resumes on other data, learning rate or seed are refused.

The children are tests/training_runs.py's (a session fixture): the killed runs are the last scenarios of
A1, A2, B1 and D1, the uninterrupted runs are B2's and D2's, the resumes R1's, R2's and D2's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import describe_child, run_child

pytestmark = pytest.mark.slow
STEPS_PER_EPOCH = 12


def diff(a: str, b: str):
    return run_child([sys.executable, "-m", "keras_repro", "diff", str(Path(a).parent), str(Path(b).parent)],
                     expect=None)


def assert_same_as_uninterrupted(whole: dict, resumed: dict) -> None:
    assert "resume_error" not in resumed, resumed["resume_error"]
    assert resumed["resumed_from"], "the record does not say resumed_from"
    assert resumed["initial"] == whole["initial"]
    assert resumed["steps"] == whole["steps"], "per-step losses differ"
    assert resumed["epochs"] == whole["epochs"], "epoch metrics differ"
    assert resumed["steps_per_epoch"] == whole["steps_per_epoch"]
    assert resumed["order"] == whole["order"]
    assert resumed["first_elements"] == whole["first_elements"]
    assert resumed["final"] == whole["final"], "final weights differ"
    # A user callback saw, after the resume point, exactly the steps of the uninterrupted run.
    assert resumed["events"] == whole["events"][len(whole["events"]) - len(resumed["events"]):]
    verdict = diff(whole["path"], resumed["path"])
    assert verdict.returncode == 0, describe_child(verdict, "keras-repro diff should say identical")


@pytest.mark.parametrize("mode, killed, whole, resumed", [
    ("bitwise", "A1", ("B2", "whole-numpy-every5"), ("R1", "numpy")),
    ("deterministic", "D1", ("D2", "whole"), ("D2", "resumed")),
])
def test_numpy_input_killed_mid_epoch_resumes_from_a_step_checkpoint(training_runs, mode, killed, whole, resumed):
    # Steps are checkpointed every 5: the kill after step 30 (epoch 2, batch 6) resumes at step 25.
    assert training_runs.children[killed].process_args[:2] == ["--mode", mode]
    assert training_runs.seen[f"{killed} killed status"] == "running"  # SIGKILL: nobody updated it
    killed_run = training_runs.seen[f"{killed} killed run"]
    whole, resumed = training_runs.result(*whole), training_runs.result(*resumed)
    assert "resume_error" not in resumed, resumed["resume_error"]
    assert resumed["resumed_from"]["epoch"] == 2 and resumed["resumed_from"]["step_in_epoch"] == 1
    assert resumed["resumed_from"]["run_id"] == killed_run.name
    assert_same_as_uninterrupted(whole, resumed)
    assert len(resumed["events"]) == 4 * STEPS_PER_EPOCH - 25


def test_shuffled_tf_data_pipeline_killed_mid_epoch_resumes_from_the_epoch_checkpoint(training_runs):
    # shuffle() reshuffles each epoch and a parallel map adds random noise: the resume must advance the
    # shuffle's seed state past epochs 0 and 1 and restart the noise as a fresh epoch iterator does.
    assert training_runs.seen["A2 killed status"] == "running"
    whole, resumed = training_runs.result("B2", "whole-dataset"), training_runs.result("R1", "dataset")
    assert "resume_error" not in resumed, resumed["resume_error"]
    assert (resumed["resumed_from"]["epoch"], resumed["resumed_from"]["step_in_epoch"]) == (2, 0)
    assert_same_as_uninterrupted(whole, resumed)


def test_shuffled_tf_data_pipeline_resumes_mid_epoch_and_resume_true_finds_the_run(training_runs):
    # B1 was killed after step 20 with checkpoints every 5 steps; R1 fits with resume=True in the same run_dir.
    assert training_runs.seen["B1 killed status"] == "running"
    killed_run = training_runs.seen["B1 killed run"]
    whole, resumed = training_runs.result("B2", "whole-dataset-every5"), training_runs.result("R1", "dataset-true")
    assert "resume_error" not in resumed, resumed["resume_error"]
    assert (resumed["resumed_from"]["epoch"], resumed["resumed_from"]["step_in_epoch"]) == (1, 3)
    assert resumed["resumed_from"]["run_id"] == killed_run.name
    assert_same_as_uninterrupted(whole, resumed)


def test_kill_during_checkpoint_write_resumes_from_the_previous_one_and_forgetting_seed_state_differs(training_runs):
    # V's 2nd checkpoint write (end of epoch 1) dies between writing its temporary folder and the rename.
    training_runs.proc("V")  # exit code 77: the test hook
    checkpoints = training_runs.seen["died checkpoints"]
    assert len(checkpoints) == 2 and "epoch-000001-step-00000000" in checkpoints, checkpoints
    assert any(name.startswith(".tmp-epoch-000002-step-00000000") for name in checkpoints), checkpoints
    whole = training_runs.result("B2", "whole-numpy")
    resumed, control = training_runs.result("R2", "died"), training_runs.result("R2", "forgetful")
    assert "resume_error" not in resumed, resumed["resume_error"]
    assert resumed["resumed_from"]["epoch"] == 1
    assert_same_as_uninterrupted(whole, resumed)
    # Negative control: the same resume without the Dropout seed state restored must differ.
    n = STEPS_PER_EPOCH
    assert control["steps"][:n] == whole["steps"][:n]  # the carried history is the same ...
    assert control["steps"][n] != whole["steps"][n]    # ... and the first resumed step already differs
    assert control["final"] != whole["final"]


def test_resume_on_other_data_learning_rate_or_seed_is_refused(training_runs):
    # R2 resumes a copy of V's died run (seed 3, lr 0.01, data seed 1234) with one thing changed each time.
    data_error = training_runs.result("R2", "other-data")["resume_error"]
    lr_error = training_runs.result("R2", "other-lr")["resume_error"]
    assert "data x: content changed" in data_error and "data y" in data_error, data_error
    assert "learning_rate: 0.01 -> 0.02" in lr_error, lr_error
    assert "Cannot resume run" in lr_error and "Fix:" in lr_error
    seed_error = training_runs.result("R2", "other-seed")["resume_error"]  # resume=True in the copy's folder
    assert "seed: 3 -> 4" in seed_error, seed_error
