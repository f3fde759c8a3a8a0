"""Shared test helpers: launch child programs with readable failures, and hand-made run records.

Every test that starts a process goes through `run_child` (one child, waited for), `start_child` +
`finish_child` (a child the test talks to or kills) or `run_children_concurrently` (several, two at a
time: each TensorFlow child spends ~9 s importing it, and the machine has 2 cores). Each failure message
is `describe_child`'s: the command, exit code, stdout and stderr.

Example:
    >>> from helpers import ChildSpec, make_record, run_child, run_children_concurrently
    >>> path = make_record(tmp_path, run_id="a", hyperparameters__learning_rate=0.003)   # doctest: +SKIP
    >>> run_child([sys.executable, "-m", "keras_repro", "show", str(path)])             # doctest: +SKIP
    >>> a, b = run_children_concurrently([[sys.executable, "train.py"],                 # doctest: +SKIP
    ...                                   ChildSpec([sys.executable, "bad.py"], expect=3)])
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")
DELETE = object()  # make_record(..., environment=DELETE) drops a section or key

def _sha(tag: str) -> str:
    import hashlib

    return hashlib.sha256(tag.encode()).hexdigest()


def base_record(run_id: str = "20261127-101500-aaaaaa") -> dict[str, Any]:
    """A complete, valid `keras_repro.run/1` record of a 3-epoch, 4-steps-per-epoch bitwise run."""
    steps = [2.5, 2.25, 2.125, 2.0, 1.5, 1.25, 1.125, 1.0, 0.75, 0.625, 0.5, 0.4375]
    return {
        "schema": "keras_repro.run/1",
        "run_id": run_id,
        "status": "completed",
        "started_at": "2026-11-27T10:15:00.123456+00:00",
        "ended_at": "2026-11-27T10:15:09.654321+00:00",
        "error": None,
        "pid": 1234,
        "host": "box",
        "resumed_from": None,
        "policy": {"seed": 42, "mode": "bitwise", "threads": None},
        "applied": {
            "seed": 42, "mode": "bitwise", "threads": 1, "seed_source": "explicit", "op_determinism": True,
            "intra_op_threads": 1, "inter_op_threads": 1, "devices": "cpu-only", "onednn": "off",
            "seeded": ["python", "numpy", "tensorflow", "keras"], "shuffle": "per-epoch (seed, epoch)",
            "warnings": [],
        },
        "environment": {
            "python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6",
            "platform": "Linux-6.1-x86_64", "machine": "x86_64", "cpu_model": "AMD EPYC", "cpu_count": 2,
            "devices": ["/device:CPU:0"],
            "env": {"PYTHONHASHSEED": "42", "CUDA_VISIBLE_DEVICES": "-1", "TF_DETERMINISTIC_OPS": "1",
                    "TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                    "OMP_NUM_THREADS": "1"},
        },
        "code": {"argv": ["train.py"], "script": "/abs/train.py", "script_sha256": _sha("script"),
                 "git": {"commit": "c0ffee" * 6 + "abcd", "dirty": False}, "flags": None},
        "fit": {"epochs": 3, "batch_size": 64, "shuffle": True, "validation_split": 0.0, "initial_epoch": 0,
                "steps_per_epoch": None, "class_weight": None, "callbacks": []},
        "hyperparameters": {"optimizer": "Adam", "learning_rate": 0.001,
                            "optimizer_config": {"name": "adam", "learning_rate": 0.001, "beta_1": 0.9},
                            "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"], "user": {}},
        "model": {"class": "Sequential", "architecture_sha256": _sha("arch"), "param_count": 1234,
                  "initial_weights_sha256": _sha("init"), "final_weights_sha256": _sha("final")},
        "data": {
            "x": {"kind": "ndarray", "shape": [256, 4], "dtype": "float32", "samples": 256,
                  "sha256": _sha("x"), "rows_sha256": _sha("x-rows")},
            "y": {"kind": "ndarray", "shape": [256], "dtype": "int64", "samples": 256,
                  "sha256": _sha("y"), "rows_sha256": _sha("y-rows")},
            "sample_weight": None,
            "validation": None,
            "order": [{"epoch": e, "sha256": _sha(f"order{e}"), "head": [17 + e, 3, 250]} for e in range(3)],
        },
        "metrics": {
            "epochs": [{"loss": 2.0, "accuracy": 0.5}, {"loss": 1.0, "accuracy": 0.75}, {"loss": 0.4375, "accuracy": 0.875}],
            "steps": steps,
            "steps_per_epoch": [4, 4, 4],
        },
    }


def record_dict(run_id: str = "20261127-101500-aaaaaa", **overrides: Any) -> dict[str, Any]:
    """`base_record` with overrides; `__` in a keyword nests (`hyperparameters__learning_rate=0.003`).

    A value of `DELETE` removes the key.
    """
    data = copy.deepcopy(base_record(run_id))
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        target = data
        for p in parents:
            target = target.setdefault(p, {})
        if value is DELETE:
            target.pop(leaf, None)
        else:
            target[leaf] = copy.deepcopy(value)
    return data


def write_record(directory: Path | str, data: Mapping[str, Any]) -> Path:
    """Writes `data` as `<directory>/<run_id>/run.json` and returns the path of run.json."""
    run_dir = Path(directory) / str(data.get("run_id") or "run")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run.json"
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    return path


def make_record(directory: Path | str, run_id: str = "20261127-101500-aaaaaa", **overrides: Any) -> Path:
    """Writes a valid run.json (with `record_dict` overrides) under `directory`; returns its path."""
    return write_record(directory, record_dict(run_id, **overrides))


def child_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """A copy of `os.environ` with the repository first on PYTHONPATH and `env` applied (None removes a key)."""
    child = dict(os.environ)
    child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), child.get("PYTHONPATH")]))
    for key, value in (env or {}).items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = value
    return child


def start_child(
    args: Sequence[str],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | str | None = None,
    stderr: int | None = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Starts a child program (text pipes, `child_env(env)`); finish it with `finish_child`."""
    return subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                            text=True, env=child_env(env), cwd=cwd)


def finish_child(
    proc: subprocess.Popen[str], *, expect: int | None = 0, timeout: float = 300, before: str = ""
) -> subprocess.CompletedProcess[str]:
    """Waits for a started child; if its exit code is not `expect`, fails with `describe_child`.

    `before` is stdout the test already read from the child (it is put in front of the rest).
    """
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        done = subprocess.CompletedProcess(proc.args, proc.returncode, before + out, err)
        raise AssertionError(describe_child(done, f"timed out after {timeout} s")) from None
    done = subprocess.CompletedProcess(proc.args, proc.returncode, before + out, err)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(describe_child(done, f"expected exit code {expect}"))
    return done


def run_child(
    args: Sequence[str],
    *,
    expect: int | None = 0,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a child program; if its exit code is not `expect`, fails with command, code, stdout and stderr.

    `env` entries are added to a copy of `os.environ` (a value of None removes the variable), with
    the repository on PYTHONPATH so children import this checkout.
    """
    proc = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=child_env(env), cwd=cwd,
                          timeout=timeout, input=input)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(describe_child(proc, f"expected exit code {expect}"))
    return proc


@dataclasses.dataclass
class ChildSpec:
    """One child for `run_children_concurrently`: its command, extra environment and expected exit code."""

    args: Sequence[str]
    env: Mapping[str, str | None] | None = None
    expect: int | None = 0
    timeout: float = 300


def in_parallel(jobs: Sequence[Callable[[], T]], *, parallel: int = 2) -> list[T]:
    """Calls `jobs` `parallel` at a time in threads (2 cores: two TensorFlow imports at once); results in order.

    A job that raises makes the call raise the same exception once the jobs already started have ended.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def run_children_concurrently(
    specs: Sequence[ChildSpec | Sequence[str]], *, parallel: int = 2, check: bool = True
) -> list[subprocess.CompletedProcess[str]]:
    """Runs children `parallel` at a time; returns their CompletedProcess in `specs` order.

    With `check` (default) a child whose exit code is not its spec's `expect` fails the call with
    `describe_child`; without it, every CompletedProcess is returned for the test to judge.
    """
    specs = [s if isinstance(s, ChildSpec) else ChildSpec(list(s)) for s in specs]

    def job(spec: ChildSpec) -> Callable[[], subprocess.CompletedProcess[str]]:
        return lambda: finish_child(start_child(spec.args, env=spec.env), expect=spec.expect if check else None,
                                    timeout=spec.timeout)

    return in_parallel([job(spec) for spec in specs], parallel=parallel)


def json_lines(proc: subprocess.CompletedProcess[str]) -> list[Any]:
    """Every stdout line of a finished child that is a JSON object, in order (children print one per result)."""
    out = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(describe_child(proc, f"unreadable JSON line: {line[:200]}")) from None
    if not out:
        raise AssertionError(describe_child(proc, "the child printed no JSON result"))
    return out


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The last JSON line a finished child printed."""
    return json_lines(proc)[-1]


def describe_child(proc: subprocess.CompletedProcess[str], what: str = "") -> str:
    """Command, exit code, stdout and stderr of a finished child, for assertion messages."""
    return (
        f"{what}\ncommand: {' '.join(map(str, proc.args))}\nexit code: {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


PYTHON = sys.executable
