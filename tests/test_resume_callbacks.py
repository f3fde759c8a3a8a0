"""Resume continues the callbacks too: Keras's stateful built-ins, a user's get_state/set_state, the History.

Fresh processes (tests/programs/callbacks_child.py: real digits, Adam at 0.05, ~1 s an epoch). The
uninterrupted run halves the rate after epochs 3 and 5 (ReduceLROnPlateau, patience 1) and EarlyStopping
(patience 3, restore_best_weights) stops it after epoch 7. A second run is SIGKILLed in epoch 6, after the
rate was halved and while EarlyStopping is counting; the resumed run must stop at the same epoch with the
same rates, weights, whole History, ModelCheckpoint best files and CSV log, having trained fewer batches.
Negative control: the same resume without the callbacks' state must differ. The same claims under
MirroredStrategy (2 logical CPUs, a LearningRateScheduler, mid-epoch) and for a 2-worker
MultiWorkerMirroredStrategy job whose workers must agree on a common checkpoint. Children that do not
depend on each other run at once (2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, describe_child

CHILD = REPO / "tests" / "programs" / "callbacks_child.py"
STEPS = 9  # batches per epoch in the child


def launch(tmp: Path, name: str, *args: str, out: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(CHILD), "--run-dir", str(tmp / name), "--out", str(tmp / (out or name) / "out"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen, expect: int = 0) -> dict:
    out, err = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert proc.returncode == expect, describe_child(done, f"expected exit code {expect}")
    return json.loads(out.strip().splitlines()[-1])


def kill_when_paused(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PAUSED"):
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(describe_child(subprocess.CompletedProcess(proc.args, proc.returncode, line + out, err),
                                            "the child did not pause"))
    proc.kill()  # SIGKILL: no cleanup, no atexit, no record update
    proc.communicate(timeout=30)


def the_run(run_dir: Path) -> Path:
    (run,) = [p for p in run_dir.iterdir() if (p / "run.json").is_file()]
    return run


def assert_resumed_like_whole(whole: dict, resumed: dict) -> None:
    assert resumed["resumed_from"], "the record does not say resumed_from"
    assert resumed["history"]["learning_rate"] == whole["history"]["learning_rate"], "learning-rate trajectory differs"
    assert resumed["stopped_epoch"] == whole["stopped_epoch"], "EarlyStopping stopped at another epoch"
    assert resumed["history_epoch"] == whole["history_epoch"], "History.epoch is not the whole run's"
    assert resumed["history"] == whole["history"], "History.history is not the whole run's"
    assert resumed["steps"] == whole["steps"], "per-step losses differ"
    assert resumed["final"] == whole["final"], "final weights differ"
    assert resumed["tally"] == whole["tally"], "the get_state/set_state callback did not continue"
    assert resumed["trained_here"] < whole["trained_here"], "the resumed process should train fewer batches"


@pytest.mark.slow
def test_killed_mid_epoch_resume_continues_plateau_early_stopping_best_file_csv_and_history(tmp_path):
    # Checkpoints every 4 steps; the kill after global step 59 (epoch 6, batch 4) resumes at step 56 (6, 2).
    common = ["--callbacks", "plateau", "--checkpoint-every", "4"]
    whole = launch(tmp_path, "whole", *common)
    victim = launch(tmp_path, "killed", *common, "--pause-at-step", "59")
    # Killed after EarlyStopping stopped the run (epoch 7) but before it completed: no checkpoint is written
    # once a callback stops training, so the resume redoes the end of epoch 7 and stops there too.
    late_victim = launch(tmp_path, "late", *common, "--pause-at-train-end")
    kill_when_paused(victim)
    kill_when_paused(late_victim)
    killed = the_run(tmp_path / "killed")
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    shutil.copytree(tmp_path / "killed" / "out", tmp_path / "control" / "out")  # the control's own files
    resumed = launch(tmp_path, "resumed", *common, "--resume", str(killed), out="killed")
    control = launch(tmp_path, "control", *common, "--resume", str(killed), "--forget-callback-state")
    late = launch(tmp_path, "late_resumed", *common, "--resume", str(the_run(tmp_path / "late")), out="late")
    whole, resumed, control, late = result(whole), result(resumed), result(control), result(late)

    assert (resumed["resumed_from"]["epoch"], resumed["resumed_from"]["step_in_epoch"]) == (6, 2)
    lrs = [float.fromhex(v) for v in whole["history"]["learning_rate"]]
    assert lrs[5] > lrs[6] > lrs[7] and whole["stopped_epoch"] == 7, "the scenario lost its point: retune the child"
    assert_resumed_like_whole(whole, resumed)
    assert resumed["trained_here"] == len(whole["steps"]) - 56
    assert resumed["history_epoch"][0] == 0
    assert resumed["best_files"] == whole["best_files"], "ModelCheckpoint(save_best_only) wrote other best files"
    assert resumed["csv_sha256"] == whole["csv_sha256"], "the CSV log differs"
    # The callback without get_state/set_state is named in a recorded warning, in both runs.
    for run in (whole, resumed):
        assert any(w.startswith("callback Loose (callbacks[5]) holds state (batches)") for w in run["warnings"])
    assert resumed["loose_batches"] == resumed["trained_here"]  # it restarted from scratch, as warned

    assert (late["resumed_from"]["epoch"], late["resumed_from"]["step_in_epoch"]) == (7, 5)
    assert_resumed_like_whole(whole, late)
    assert late["best_files"] == whole["best_files"] and late["csv_sha256"] == whole["csv_sha256"]

    # Negative control: the same resume without the callbacks' state restored must differ.
    assert control["steps"][:56] == whole["steps"][:56]
    assert control["history"]["learning_rate"] != whole["history"]["learning_rate"]
    assert control["stopped_epoch"] != whole["stopped_epoch"]
    assert control["final"] != whole["final"]


@pytest.mark.slow
def test_mirrored_resume_mid_epoch_continues_a_learning_rate_schedule_and_early_stopping(tmp_path):
    # MirroredStrategy over 2 logical CPUs; LearningRateScheduler (x0.7 from epoch 2) and EarlyStopping.
    # Killed after global step 32 (epoch 3, batch 4), resumed from the checkpoint at step 28 (3, 1): the
    # schedule must not be applied twice to epoch 3, and the metric accumulators of every replica continue.
    common = ["--callbacks", "schedule", "--strategy", "mirrored", "--checkpoint-every", "4", "--epochs", "12"]
    whole = launch(tmp_path, "whole", *common)
    victim = launch(tmp_path, "killed", *common, "--pause-at-step", "32")
    kill_when_paused(victim)
    resumed = result(launch(tmp_path, "resumed", *common, "--resume", str(the_run(tmp_path / "killed")), out="killed"))
    whole = result(whole)
    assert (resumed["resumed_from"]["epoch"], resumed["resumed_from"]["step_in_epoch"]) == (3, 1)
    lrs = [float.fromhex(v) for v in whole["history"]["learning_rate"]]
    assert lrs[1] == lrs[0] > lrs[2] > lrs[3] > lrs[4], "the schedule did not act: retune the child"
    assert_resumed_like_whole(whole, resumed)


def launch_job(tmp: Path, name: str, *args: str, run: str | None = None) -> list[subprocess.Popen]:
    """A 2-worker MultiWorkerMirroredStrategy job on 127.0.0.1 (as tests/programs/dist_cluster.py starts one)."""
    import socket

    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    procs = []
    for index in range(2):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        cmd = [sys.executable, str(CHILD), "--strategy", "multiworker", "--run-dir", str(tmp / (run or name)),
               "--out", str(tmp / name / "out"), *args]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


@pytest.mark.slow
def test_multiworker_job_killed_and_restarted_resumes_from_the_newest_checkpoint_all_workers_hold(tmp_path):
    # Both workers are SIGKILLed in epoch 3. Then the chief's newest checkpoint is deleted, as when a kill
    # lands between the workers' checkpoint writes: the restarted workers must agree on epoch 2's.
    common = ["--callbacks", "plateau", "--epochs", "30"]
    whole = launch_job(tmp_path, "whole", *common)
    victims = launch_job(tmp_path, "killed", *common, "--pause-at-step", "32")
    for victim in victims:
        kill_when_paused(victim)
    chief = the_run(tmp_path / "killed")
    worker = the_run(tmp_path / "killed" / "workers" / "worker-1")
    for run in (chief, worker):
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
            "epoch-000002-step-00000000", "epoch-000003-step-00000000"]
    shutil.rmtree(chief / "checkpoints" / "epoch-000003-step-00000000")
    shutil.copytree(tmp_path / "killed" / "out", tmp_path / "resumed" / "out")
    resumed = [result(p) for p in launch_job(tmp_path, "resumed", *common, "--resume", "true", run="killed")]
    whole = [result(p) for p in whole]
    for index, (w, r) in enumerate(zip(whole, resumed, strict=True)):
        assert (r["resumed_from"]["epoch"], r["resumed_from"]["step_in_epoch"]) == (2, 0), f"worker {index}"
        assert_resumed_like_whole(w, r)
        assert r["best_files"] == w["best_files"] and r["csv_sha256"] == w["csv_sha256"]
    assert Path(resumed[1]["path"]).parent.parent == tmp_path / "killed" / "workers" / "worker-1"
    assert whole[0]["final"] == whole[1]["final"], "the two workers of one synchronous job"
