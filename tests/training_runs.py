"""The training children that test_reproducibility, test_training and test_resume assert on, run once per session.

Eleven fresh processes of tests/programs/train_child.py, two at a time (2 cores), each running several
scenarios in sequence (one TensorFlow import each). A claim compares a scenario of one child with the same
scenario of another child, never two fits of one process. Children that must differ in what is fixed per
process (configure() or not, the mode, the environment) are separate; so is every process a test kills.

Phase 1 (independent):
    A1, A2   configure(seed=9, mode="bitwise"), PYTHONHASHSEED=0: a model built after configure, seeds 7
             and 8, the record of test_training (A1 also the fit errors); then each is killed mid-run
             (A1: array input, checkpoints every 5 steps; A2: a shuffled tf.data pipeline).
    B1, B2   bitwise without configure(): the first fit configures the process; tf.data with seeds 5 and
             6; XLA. B1 is then killed mid-run (tf.data, checkpoints every 5 steps, resume=True later);
             B2 runs the uninterrupted runs the resumes must equal.
    C1, C2   mode "off" (the negative control: no seed, nothing seeded).
    D1       deterministic: tf.data, seed 7, then killed mid-run.
    V        bitwise, dies inside its 2nd checkpoint write (the test hook, exit 77).
Phase 2 (they resume what phase 1 left):
    D2       deterministic: the same first scenarios as D1, the uninterrupted run, the resume of D1.
    R1       bitwise: resumes A1, A2 and B1.
    R2       bitwise: resumes V, the same without the Dropout seed state (negative control), and three
             resumes that must be refused (other data, learning rate, seed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import REPO, describe_child, finish_child, in_parallel, start_child

CHILD = REPO / "tests" / "programs" / "train_child.py"
STEPS_PER_EPOCH = 12
DIE_IN_WRITE = "KERAS_REPRO_TEST_DIE_IN_CHECKPOINT_WRITE"  # keras_repro.checkpoint's test hook
RESUMABLE = "--seed 3 --epochs 4 --watch"  # the runs that are killed, resumed, and run whole


@dataclass
class Child:
    """One train_child process: its process-level arguments and its scenarios (name -> scenario args)."""

    name: str
    process_args: list[str]
    scenarios: dict[str, str]
    env: dict[str, str | None] = field(default_factory=dict)
    kill_at_pause: bool = False
    expect: int = 0

    def command(self, tmp: Path) -> list[str]:
        args = [sys.executable, str(CHILD), *self.process_args]
        for name, scenario in self.scenarios.items():
            run_dir = tmp / self.name / name
            args += ["--scenario", f"--name {name} --run-dir {run_dir} {scenario}"]  # a later --run-dir wins
        return args


def _run(child: Child, tmp: Path) -> subprocess.CompletedProcess[str]:
    proc = start_child(child.command(tmp), env={"TF_CPP_MIN_LOG_LEVEL": "3", **child.env})
    if not child.kill_at_pause:
        return finish_child(proc, expect=None, timeout=600)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the results of the scenarios before, then "PAUSED n"
        seen.append(line)
        if line.startswith("PAUSED"):
            os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no atexit, no record update
            break
    return finish_child(proc, expect=None, timeout=600, before="".join(seen))


@dataclass
class TrainingRuns:
    """What the children printed, by child and scenario, plus what the test saw between the phases."""

    tmp: Path
    children: dict[str, Child]
    procs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def proc(self, child: str) -> subprocess.CompletedProcess[str]:
        proc = self.procs[child]
        spec = self.children[child]
        expect = -signal.SIGKILL if spec.kill_at_pause else spec.expect
        if proc.returncode != expect or (spec.kill_at_pause and "PAUSED" not in proc.stdout):
            raise AssertionError(describe_child(proc, f"child {child}: expected exit code {expect}"
                                                + (" after PAUSED" if spec.kill_at_pause else "")))
        return proc

    def result(self, child: str, scenario: str) -> dict[str, Any]:
        """The JSON line scenario `scenario` of child `child` printed (fails with the child's output)."""
        proc = self.proc(child)
        for line in proc.stdout.splitlines():
            if line.startswith("{") and json.loads(line).get("name") == scenario:
                return json.loads(line)
        raise AssertionError(describe_child(proc, f"child {child} printed no result for scenario {scenario!r}"))

    def run_dir(self, child: str, scenario: str) -> Path:
        return self.tmp / child / scenario

    def only_run(self, child: str, scenario: str) -> Path:
        """The one run directory a (killed) scenario left."""
        self.proc(child)
        base = self.run_dir(child, scenario)
        runs = [p for p in base.iterdir() if (p / "run.json").is_file()] if base.is_dir() else []
        assert len(runs) == 1, f"{child}/{scenario}: expected one run in {base}, found {runs}"
        return runs[0]


def _phase1(tmp: Path) -> list[Child]:
    bitwise_configured = ["--mode", "bitwise", "--seed", "9"]
    shared_a = {"after-configure": "--model after-configure --validation-split 0.25", "s7": "--seed 7",
                "s8": "--seed 8", "record": "--seed 21 --validation-split 0.25"}
    shared_b = {"fit-configures": "--seed 9", "ds5": "--input dataset --seed 5", "ds6": "--input dataset --seed 6",
                "jit": "--seed 4 --jit"}
    hash_seed = {"PYTHONHASHSEED": "0"}
    # train_child imports TensorFlow itself before its first fit (it builds tf.data inputs), so on a CPU
    # where TF turns oneDNN on by default (AVX-512 VNNI/BF16) a bitwise fit() must refuse as too late; B sets
    # TF_ENABLE_ONEDNN_OPTS=0 as the error's fix says. A fit() that configures a process which has not
    # imported TF yet is proven in tests/test_fit_steps.py and tests/test_isa.py (fit alone).
    onednn_off = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    return [
        Child("A1", bitwise_configured, {**shared_a, "errors": "--kind errors",
                                         "killed": f"{RESUMABLE} --checkpoint-every 5 --pause-at-step 30"},
              env=hash_seed, kill_at_pause=True),
        Child("A2", bitwise_configured, {**shared_a, "killed": f"{RESUMABLE} --input dataset --pause-at-step 30"},
              env=hash_seed, kill_at_pause=True),
        Child("B1", ["--mode", "bitwise", "--no-configure"],
              {**shared_b, "killed": f"{RESUMABLE} --input dataset --checkpoint-every 5 --pause-at-step 20"},
              env=onednn_off, kill_at_pause=True),
        Child("B2", ["--mode", "bitwise", "--no-configure"],
              {**shared_b, "whole-numpy-every5": f"{RESUMABLE} --checkpoint-every 5",
               "whole-dataset": f"{RESUMABLE} --input dataset",
               "whole-dataset-every5": f"{RESUMABLE} --input dataset --checkpoint-every 5",
               "whole-numpy": RESUMABLE}, env=onednn_off),
        Child("C1", ["--mode", "off"], {"off": ""}),
        Child("C2", ["--mode", "off"], {"off": ""}),
        Child("D1", ["--mode", "deterministic", "--seed", "5"],
              {"ds5": "--input dataset", "s7": "--seed 7",
               "killed": f"{RESUMABLE} --checkpoint-every 5 --pause-at-step 30"}, kill_at_pause=True),
        Child("V", ["--mode", "bitwise", "--seed", "3"], {"died": RESUMABLE}, env={DIE_IN_WRITE: "2"}, expect=77),
    ]


def _phase2(runs: TrainingRuns) -> list[Child]:
    def killed(child: str) -> str:  # if it left no run, the resume fails and the test shows the child's output
        return str(runs.seen.get(f"{child} killed run", runs.tmp / f"{child}-left-no-run"))

    died = Path(runs.seen.get("died", runs.tmp / "V-left-no-run"))
    refusable = runs.tmp / "refusable"  # a copy of the died run, in a folder of its own for resume=True
    if died.is_dir():
        shutil.copytree(died, refusable / died.name)
    return [
        Child("D2", ["--mode", "deterministic", "--seed", "5"],
              {"ds5": "--input dataset", "s7": "--seed 7", "whole": f"{RESUMABLE} --checkpoint-every 5",
               "resumed": f"{RESUMABLE} --checkpoint-every 5 --resume {killed('D1')}"}),
        Child("R1", ["--mode", "bitwise", "--seed", "3"],
              {"numpy": f"{RESUMABLE} --checkpoint-every 5 --resume {killed('A1')}",
               "dataset": f"{RESUMABLE} --input dataset --resume {killed('A2')}",
               # resume=True finds the interrupted run in run_dir: B1's killed one (the resume goes there too)
               "dataset-true": f"{RESUMABLE} --input dataset --checkpoint-every 5 --resume true "
                               f"--run-dir {runs.run_dir('B1', 'killed')}"}),
        Child("R2", ["--mode", "bitwise", "--seed", "3"],
              {"died": f"{RESUMABLE} --resume {died}",
               "forgetful": f"{RESUMABLE} --resume {died} --forget-seed-state",
               "other-data": f"{RESUMABLE} --resume {refusable / died.name} --data-seed 99",
               "other-lr": f"{RESUMABLE} --resume {refusable / died.name} --lr 0.02",
               "other-seed": f"--epochs 4 --watch --seed 4 --resume true --run-dir {refusable}"}),
    ]


def run_training_children(tmp: Path) -> TrainingRuns:
    """Runs both phases (two children at a time) and returns what they printed."""
    phase1 = _phase1(tmp)
    runs = TrainingRuns(tmp, {c.name: c for c in phase1})
    for child, proc in zip(phase1, in_parallel([lambda c=c: _run(c, tmp) for c in phase1]), strict=True):
        runs.procs[child.name] = proc
    for child in ("A1", "A2", "B1", "D1"):  # SIGKILL: nobody updated the record
        try:
            path = runs.only_run(child, "killed")
            runs.seen[f"{child} killed run"] = path
            runs.seen[f"{child} killed status"] = json.loads((path / "run.json").read_text())["status"]
        except AssertionError as e:
            runs.seen[f"{child} killed status"] = str(e)
    try:
        died = runs.only_run("V", "died")
        runs.seen["died"] = died
        runs.seen["died checkpoints"] = sorted(p.name for p in (died / "checkpoints").iterdir())
    except (AssertionError, OSError) as e:
        runs.seen["died checkpoints"] = str(e)
    phase2 = _phase2(runs)
    runs.children.update({c.name: c for c in phase2})
    for child, proc in zip(phase2, in_parallel([lambda c=c: _run(c, tmp) for c in phase2]), strict=True):
        runs.procs[child.name] = proc
    return runs
