"""`RunWriter`: the run record of one fit as a dict, written atomically; no Keras in here.

The writer creates `<run_dir>/<run_id>/run.json` when the run starts (`running`), rewrites it whenever
the Keras hooks (`keras_repro.callback.ReproCallback`) have added to it, and marks it `completed`,
`failed` or `interrupted` at the end. It appends the record's path to `$KERAS_REPRO_RECORDS_FILE` (how
`keras-repro check` finds the records of a child) and keeps a registry of open runs, so that a process
exiting while a record still says `running` marks it `interrupted`.

Example:
    >>> writer = RunWriter("runs", policy={"seed": 1, "mode": "bitwise", "threads": 1}, applied={})  # doctest: +SKIP
    >>> writer.start(); writer.finish("completed")                                                  # doctest: +SKIP
    >>> writer.record.status                                                                        # doctest: +SKIP
    'completed'
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import weakref
from pathlib import Path
from typing import Any, Mapping

from keras_repro.environment import capture_code, capture_environment
from keras_repro.policy import ENV_DIR
from keras_repro.record import (
    RECORD_FILE,
    SCHEMA,
    RunRecord,
    announce_record,
    atomic_write_json,
    create_run_dir,
    to_jsonable,
    utc_now,
)

__all__ = ["RunWriter", "default_run_dir"]

_DEFAULT_RUN_DIR = "runs"
_NOT_CONFIGURED = "keras_repro.configure() was not called: nothing was seeded or fixed; recorded only"


def default_run_dir(run_dir: str | os.PathLike[str] | None = None) -> str:
    """`run_dir` if given, else `--repro_dir`, else `$KERAS_REPRO_DIR`, else `runs`.

    Example:
        >>> default_run_dir("out/runs")
        'out/runs'
    """
    if run_dir is not None:
        return os.fspath(run_dir)
    flags_module = sys.modules.get("keras_repro.flags")
    if flags_module is not None:
        flag_dir = flags_module.parsed_run_dir()
        if flag_dir:
            return flag_dir
    return os.environ.get(ENV_DIR) or _DEFAULT_RUN_DIR


def configured_sections() -> tuple[dict[str, Any], dict[str, Any]]:
    """(policy, applied) of this process, for a record of a `model.fit` that keras_repro did not start."""
    from keras_repro import runtime

    policy = runtime.configured_policy()
    applied = runtime.configured_applied()
    policy_dict = policy.as_dict() if policy is not None else {"seed": None, "mode": "off", "threads": None}
    applied_dict = applied or {"seed": None, "mode": "off", "threads": None, "op_determinism": False,
                               "seeded": [], "warnings": [_NOT_CONFIGURED]}
    return policy_dict, applied_dict


class RunWriter:
    """Builds and writes one run record.

    Args:
        run_dir: the directory that gets `<run_id>/run.json`.
        policy: the record's `policy` section; None: the process's configured policy.
        applied: the record's `applied` section; None: what the process applied.
        fit_args: the `model.fit` arguments to record (None: filled in from Keras's params).
        extra: top-level fields to set when the record is created (`resumed_from`, `distribution`).
        announce: append the record's path to `$KERAS_REPRO_RECORDS_FILE` (False for non-chief workers).
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, policy: Mapping[str, Any] | None = None,
                 applied: Mapping[str, Any] | None = None, fit_args: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None, announce: bool = True) -> None:
        self.run_dir = default_run_dir(run_dir)
        self.policy = dict(policy) if policy is not None else None
        self.applied = dict(applied) if applied is not None else None
        self.fit_args = dict(fit_args) if fit_args is not None else None
        self.extra = dict(extra or {})
        self.announce = announce
        self.data: dict[str, Any] | None = None
        self.path: Path | None = None
        self.finished = False
        self._model: Any = None

    def attach_model(self, model: Any) -> None:
        """The trained model: `finish` records its final weights' SHA-256, whatever the status."""
        self._model = model

    @property
    def record(self) -> RunRecord | None:
        """The run record as last built (None before the run started)."""
        return None if self.data is None else RunRecord(self.data, self.path)

    @property
    def started(self) -> bool:
        return self.data is not None

    def start(self) -> None:
        """Creates the run directory and writes the `running` record (once)."""
        if self.data is not None:
            return
        if self.policy is None or self.applied is None:
            policy, applied = configured_sections()
            self.policy = self.policy if self.policy is not None else policy
            self.applied = self.applied if self.applied is not None else applied
        run_id, directory = create_run_dir(self.run_dir)
        self.path = directory / RECORD_FILE
        flags_module = sys.modules.get("keras_repro.flags")
        self.data = {
            "schema": SCHEMA, "run_id": run_id, "status": "running", "started_at": utc_now(), "ended_at": None,
            "error": None, "pid": os.getpid(), "host": socket.gethostname(), "resumed_from": None,
            "policy": self.policy, "applied": self.applied, "environment": capture_environment(),
            "code": capture_code(flags_module.all_flag_values() if flags_module is not None else None),
            "fit": None, "hyperparameters": None, "model": None, "data": None,
            "metrics": {"epochs": [], "steps": [], "steps_per_epoch": []},
            **self.extra,
        }
        self._announce()
        _OPEN_RUNS.add(self)

    def set_applied(self, key: str, value: Any) -> None:
        """One more `applied` entry (e.g. `shuffle`, known once the inputs were fed)."""
        if self.applied is None:
            self.applied = {}
        self.applied[key] = value

    def set_sections(self, **sections: Any) -> None:
        """Top-level sections (`fit`, `hyperparameters`, `model`, `data`), made JSON-safe."""
        assert self.data is not None, "RunWriter.start() first"
        for name, value in sections.items():
            self.data[name] = to_jsonable(value) if name == "fit" else value

    def add_step(self, loss: float | None) -> None:
        assert self.data is not None
        self.data["metrics"]["steps"].append(loss)

    def end_epoch(self, logs: Mapping[str, Any], steps: int) -> None:
        assert self.data is not None
        self.data["metrics"]["epochs"].append(to_jsonable(dict(logs)))
        self.data["metrics"]["steps_per_epoch"].append(steps)

    def write(self) -> None:
        assert self.data is not None and self.path is not None
        atomic_write_json(self.path, self.data)

    def finish(self, status: str, error: BaseException | str | None = None) -> None:
        """Marks the record `completed`, `failed` or `interrupted` and writes it (once)."""
        if self.data is None or self.finished:
            return
        self.finished = True
        _OPEN_RUNS.discard(self)
        if self._model is not None and isinstance(self.data.get("model"), dict):
            from keras_repro import model_info

            try:
                self.data["model"]["final_weights_sha256"] = model_info.weights_sha256(self._model)
            except Exception:
                if status == "completed":
                    raise
        self.data["status"] = status
        self.data["ended_at"] = utc_now()
        if error is not None:
            self.data["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.write()

    def _announce(self) -> None:
        """Appends this record's path to $KERAS_REPRO_RECORDS_FILE (how `keras-repro check` finds it)."""
        if self.path is not None and self.announce:
            announce_record(self.path)


# Records still `running` when the interpreter exits (an exception or Ctrl-C escaped model.fit, or
# sys.exit inside a callback) are marked `interrupted`, so no record claims to run forever. A SIGKILL
# leaves `running`; `keras-repro show` reports those as stale when their process is gone.
_OPEN_RUNS: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _close_open_runs() -> None:
    for run in list(_OPEN_RUNS):
        try:
            reason = getattr(sys, "last_value", None)
            run.finish("interrupted", reason if isinstance(reason, BaseException) else "the process exited during training")
        except Exception:
            pass
