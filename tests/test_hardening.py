"""Hardening, end to end in fresh processes: bad inputs are refused with one line and write nothing
half-way; SIGKILL at any point leaves every record readable; concurrent runs never collide; NaN,
infinite, huge or non-JSON values in a run are stored faithfully."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import (
    PYTHON,
    REPO,
    ChildSpec,
    describe_child,
    in_parallel,
    run_child,
    run_children_concurrently,
    start_child,
)

from keras_repro.errors import RecordError
from keras_repro.record import STATUSES, load_run

CHILD = str(REPO / "tests" / "programs" / "hardening_child.py")
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_REPRO_SEED": None, "KERAS_REPRO_MODE": None, "KERAS_REPRO_THREADS": None,
       "KERAS_REPRO_DIR": None, "KERAS_REPRO_RECORDS_FILE": None}
# Inputs Python's truthiness lets through on purpose (Keras takes them too), and calls that succeed.
ACCEPTED = {"shuffle=1", "resume=True", "good fit"}


def _assert_every_record_readable(run_dir: Path, allowed: tuple[str, ...] = STATUSES) -> list:
    records = []
    for entry in sorted(run_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        rec = load_run(entry)  # raises RecordError if half-written
        assert rec.status in allowed, (entry, rec.status)
        records.append(rec)
    return records


@pytest.mark.slow
def test_bad_fit_inputs_raise_one_line_and_write_nothing_half_way(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    proc = run_child([PYTHON, CHILD, "bad-fit", str(run_dir)], env=ENV, timeout=300)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    refused = {name: r for name, r in results.items() if name not in ACCEPTED}
    assert len(refused) >= 55, sorted(results)
    for name, r in refused.items():
        assert r["repro"], (name, r, describe_child(proc))
        assert "\n" not in r["message"] and len(r["message"]) < 600, (name, r["message"])
        for entry in r["new_entries"]:  # a refusal after the run began leaves a complete `failed` record
            rec = load_run(run_dir / entry)
            assert rec.status == "failed" and rec["error"], (name, rec.status)
    conflicts = [n for n in refused if n.startswith("after start")]
    assert all(refused[n]["raised"] == "PolicyConflictError" for n in conflicts) and len(conflicts) == 4
    _assert_every_record_readable(run_dir)
    assert not list(run_dir.glob("*/.*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize("argv", [["--repro_seed=-1"], ["--repro_mode=fast"], ["--repro_threads=0"]])
def test_bad_absl_flags_stop_the_program_with_a_message(tmp_path: Path, argv: list[str]) -> None:
    program = tmp_path / "prog.py"
    program.write_text("from absl import app\nimport keras_repro, keras_repro.flags\n"
                       "app.run(lambda argv: keras_repro.configure())\n")
    proc = run_child([PYTHON, str(program), *argv], expect=1, env=ENV, timeout=60)
    assert argv[0].split("=")[0].lstrip("-") in proc.stderr and "Traceback" not in proc.stderr


def test_sigkill_during_record_writes_never_leaves_a_half_written_record(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites a 4 MB record as fast as it can, at 12 random moments."""
    rng = random.Random(6)
    delays = [rng.uniform(0.0, 0.6) for _ in range(12)]
    for i, delay in enumerate(delays):
        path = tmp_path / f"r{i}" / "run.json"
        path.parent.mkdir()
        proc = start_child([PYTHON, CHILD, "write-loop", str(path)], env=ENV, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        if path.exists():  # killed before the first rename: no record at all, which is fine
            rec = load_run(path)
            assert rec.status == "running" and len(rec.steps) == 200_000, f"kill {i} after {delay:.3f}s"


@pytest.mark.slow
def test_sigkill_at_random_points_of_a_training_run(tmp_path: Path) -> None:
    """Kill training at 4 points spread over the run (TF start-up, between epochs, mid epoch, end).

    Two runs at a time (2 cores), each into a run_dir of its own so that what it left is its own.
    """
    rng = random.Random(7)
    points = [("start-up", None, rng.uniform(0.5, 2.0)), ("after epoch 0", "epoch 0", rng.uniform(0, 0.05)),
              ("mid epoch 3", "epoch 2", rng.uniform(0.02, 0.06)),
              ("after epoch 5", "epoch 5", 0.0)]

    def kill_at(index: int, wait_for: str | None, delay: float) -> Path:
        run_dir = tmp_path / f"runs-{index}"
        proc = start_child([PYTHON, CHILD, "train", str(run_dir), "--epochs", "6"], env=ENV, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        if wait_for is not None:
            for line in proc.stdout:
                if line.strip() == wait_for:
                    break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.communicate()
        return run_dir

    run_dirs = in_parallel([lambda i=i, w=w, d=d: kill_at(i, w, d) for i, (_, w, d) in enumerate(points)])
    outcomes = []
    for (name, wait_for, _), run_dir in zip(points, run_dirs, strict=True):
        new = sorted(run_dir.iterdir()) if run_dir.exists() else []
        for entry in new:
            rec = load_run(entry)
            assert rec.status in ("running", "completed"), (name, rec.status)
            outcomes.append((name, rec.status, len(rec.epochs)))
        if wait_for is not None:
            assert new, f"{name}: the run had started but left no record"
        if run_dir.exists():
            _assert_every_record_readable(run_dir, ("running", "completed"))
    assert len(outcomes) >= 3, outcomes


@pytest.mark.slow
def test_four_concurrent_runs_get_distinct_ids_and_intact_records(tmp_path: Path) -> None:
    """Four runs at once into one run_dir; one of them has a NaN loss and non-JSON hyperparameters."""
    run_dir = tmp_path / "runs"
    procs = run_children_concurrently(
        [ChildSpec([PYTHON, CHILD, "train", str(run_dir), *(["--nan"] if i == 0 else [])], env=ENV) for i in range(4)],
        parallel=4)  # all four at once: that is the claim
    outputs = [json.loads(proc.stdout.strip().splitlines()[-1]) for proc in procs]
    records = _assert_every_record_readable(run_dir, ("completed",))
    assert len(records) == 4 and len({r.run_id for r in records}) == 4
    assert sorted(str(r.path) for r in records) == sorted(o["path"] for o in outputs)

    nan_run = load_run(outputs[0]["path"])
    losses = [float.fromhex(h) for h in outputs[0]["loss"]]
    assert all(math.isnan(v) for v in losses)  # sample 5 poisons every epoch's mean
    assert all(math.isnan(e["loss"]) for e in nan_run.epochs)
    assert any(math.isnan(s) for s in nan_run.steps)
    user = nan_run["hyperparameters"]["user"]
    assert math.isnan(user["nan"]) and user["inf"] == -math.inf and user["huge"] == 2**200
    assert user["np"] == 0.25 and user["arr"] == [[1.0, 0.0], [0.0, 1.0]] and user["tuple"] == [1, "a"]
    assert user["set"] == [1, 3] and user["nested"] == {"k": [7, None]}
    assert "object" in user["obj"]["__repr__"] and "build" in user["fn"]["__repr__"]
    ok_run = load_run(outputs[1]["path"])
    assert [float.hex(e["loss"]) for e in ok_run.epochs] == outputs[1]["loss"]  # stored bit for bit


def test_record_error_is_what_a_missing_run_gives(tmp_path: Path) -> None:
    with pytest.raises(RecordError):
        load_run(tmp_path / "nothing")
