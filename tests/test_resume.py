"""Resume after a crash gives the same bits as a run that never stopped, each claim in fresh processes.

A child pauses after a known global step ("PAUSED n" on stdout) and the test kills it with SIGKILL; a
third child resumes it. Final weights, every step loss (float.hex) and the epoch metrics must equal the
uninterrupted run's, and `keras-repro diff` must say identical. Negative controls: a resume that does not
restore the Dropout seed state differs, and resumes on other data, learning rate or seed are refused.
Two children run at once where they are independent (2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, describe_child

pytestmark = pytest.mark.slow
CHILD = REPO / "tests" / "programs" / "resume_child.py"
STEPS_PER_EPOCH = 12


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def launch(run_dir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(CHILD), "--run-dir", str(run_dir), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(env))


def result(proc: subprocess.Popen, expect: int = 0) -> dict:
    out, err = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert proc.returncode == expect, describe_child(done, f"expected exit code {expect}")
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def kill_when_paused(proc: subprocess.Popen) -> None:
    """Waits for the child's "PAUSED n" line, then SIGKILLs it (no cleanup, no atexit, no record update)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PAUSED"):
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(describe_child(subprocess.CompletedProcess(proc.args, proc.returncode, line + out, err),
                                            "the child did not pause"))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()


def only_run(run_dir: Path) -> Path:
    runs = [p for p in run_dir.iterdir() if (p / "run.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


def diff(a: str, b: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keras_repro", "diff", str(Path(a).parent), str(Path(b).parent)],
                          capture_output=True, text=True, env=_env())


def assert_same_as_uninterrupted(whole: dict, resumed: dict) -> None:
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


def kill_and_resume(tmp_path: Path, *args: str, pause_at: int) -> tuple[dict, dict, Path]:
    whole = launch(tmp_path / "whole", *args)
    victim = launch(tmp_path / "killed", *args, "--pause-at-step", str(pause_at))
    kill_when_paused(victim)
    killed = only_run(tmp_path / "killed")
    assert json.loads((killed / "run.json").read_text())["status"] == "running"  # SIGKILL: nobody updated it
    resumed = result(launch(tmp_path / "resumed", *args, "--resume", str(killed)))
    return result(whole), resumed, killed


@pytest.mark.parametrize("mode", ["bitwise", "deterministic"])
def test_numpy_input_killed_mid_epoch_resumes_from_a_step_checkpoint(tmp_path, mode):
    # Steps are checkpointed every 5: the kill after step 30 (epoch 2, batch 6) resumes at step 25.
    whole, resumed, killed = kill_and_resume(tmp_path, "--mode", mode, "--checkpoint-every", "5", pause_at=30)
    assert resumed["resumed_from"]["epoch"] == 2 and resumed["resumed_from"]["step_in_epoch"] == 1
    assert resumed["resumed_from"]["run_id"] == killed.name
    assert_same_as_uninterrupted(whole, resumed)
    assert len(resumed["events"]) == 4 * STEPS_PER_EPOCH - 25


def test_shuffled_tf_data_pipeline_killed_mid_epoch_resumes_from_the_epoch_checkpoint(tmp_path):
    # shuffle() reshuffles each epoch and a parallel map adds random noise: the resume must advance the
    # shuffle's seed state past epochs 0 and 1 and restart the noise as a fresh epoch iterator does.
    whole, resumed, _ = kill_and_resume(tmp_path, "--input", "dataset", pause_at=30)
    assert (resumed["resumed_from"]["epoch"], resumed["resumed_from"]["step_in_epoch"]) == (2, 0)
    assert_same_as_uninterrupted(whole, resumed)


def test_shuffled_tf_data_pipeline_resumes_mid_epoch_and_resume_true_finds_the_run(tmp_path):
    whole = launch(tmp_path / "whole", "--input", "dataset", "--checkpoint-every", "5")
    victim = launch(tmp_path / "runs", "--input", "dataset", "--checkpoint-every", "5", "--pause-at-step", "20")
    kill_when_paused(victim)
    resumed = result(launch(tmp_path / "runs", "--input", "dataset", "--checkpoint-every", "5", "--resume", "true"))
    assert (resumed["resumed_from"]["epoch"], resumed["resumed_from"]["step_in_epoch"]) == (1, 3)
    assert_same_as_uninterrupted(result(whole), resumed)


def test_kill_during_checkpoint_write_resumes_from_the_previous_one_and_forgetting_seed_state_differs(tmp_path):
    # The 2nd checkpoint write (end of epoch 1) dies between writing its temporary folder and the rename.
    whole = launch(tmp_path / "whole")
    dying = launch(tmp_path / "died", env={"KERAS_REPRO_TEST_DIE_IN_CHECKPOINT_WRITE": "2"})
    result(dying, expect=77)
    died = only_run(tmp_path / "died")
    checkpoints = sorted(p.name for p in (died / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "epoch-000001-step-00000000" in checkpoints, checkpoints
    assert any(name.startswith(".tmp-epoch-000002-step-00000000") for name in checkpoints), checkpoints
    good = launch(tmp_path / "resumed", "--resume", str(died))
    forgetful = launch(tmp_path / "forgetful", "--resume", str(died), "--forget-seed-state")
    resumed, control, whole = result(good), result(forgetful), result(whole)
    assert resumed["resumed_from"]["epoch"] == 1
    assert_same_as_uninterrupted(whole, resumed)
    # Negative control: the same resume without the Dropout seed state restored must differ.
    n = STEPS_PER_EPOCH
    assert control["steps"][:n] == whole["steps"][:n]  # the carried history is the same ...
    assert control["steps"][n] != whole["steps"][n]    # ... and the first resumed step already differs
    assert control["final"] != whole["final"]


def test_resume_on_other_data_learning_rate_or_seed_is_refused(tmp_path):
    result(launch(tmp_path / "runs", env={"KERAS_REPRO_TEST_DIE_IN_CHECKPOINT_WRITE": "2"}), expect=77)
    died = str(only_run(tmp_path / "runs"))
    other_data = launch(tmp_path / "runs", "--resume", died, "--data-seed", "99")
    other_lr = launch(tmp_path / "runs", "--resume", died, "--lr", "0.02")
    data_error = result(other_data, expect=3)["resume_error"]
    lr_error = result(other_lr, expect=3)["resume_error"]
    assert "data x: content changed" in data_error and "data y" in data_error, data_error
    assert "learning_rate: 0.01 -> 0.02" in lr_error, lr_error
    assert "Cannot resume run" in lr_error and "Fix:" in lr_error
    other_seed = launch(tmp_path / "runs", "--resume", "true", "--seed", "4")
    seed_error = result(other_seed, expect=3)["resume_error"]
    assert "seed: 3 -> 4" in seed_error, seed_error
