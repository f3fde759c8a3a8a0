"""The record of a process that ran TensorFlow but no `fit` (a custom training loop) under autolog.

keras_repro records what `keras.Model.fit` does: weights, per-step losses, the sample order. A custom
loop (`tf.GradientTape` and `optimizer.apply_gradients`) has none of these hooks, so there is nothing
to compare; but the policy was applied, and `keras-repro check` must be able to say *why* it has
nothing to compare rather than "wrote no record". This record says it in its `no_fit` field.

Example:
    >>> write_no_fit_record(None, Policy.create(seed=3, mode="bitwise"), started_at=None)   # doctest: +SKIP
    PosixPath('runs/20261128-021500-1a2b3c/run.json')
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from keras_repro.policy import Policy
from keras_repro.record import RECORD_FILE, SCHEMA, announce_record, atomic_write_json, create_run_dir, utc_now

__all__ = ["NO_FIT_MESSAGE", "write_no_fit_record"]

NO_FIT_MESSAGE = (
    "no keras Model.fit ran in this process (a custom training loop, or training outside Keras's fit): "
    "the policy was applied, but no weights, losses or sample order were recorded, so there is nothing to compare"
)


def write_no_fit_record(run_dir: str | os.PathLike[str] | None, policy: Policy, started_at: str | None) -> Path:
    """Writes `<run_dir>/<run_id>/run.json` for a process in which no fit ran; returns its path."""
    from keras_repro import runtime
    from keras_repro.environment import capture_code, capture_environment
    from keras_repro.record_writer import default_run_dir

    configured = runtime.configured_policy()
    applied = runtime.configured_applied() or {
        "seed": None, "mode": "off", "threads": None, "op_determinism": False, "seeded": [], "warnings": [],
    }
    run_id, directory = create_run_dir(default_run_dir(run_dir))
    path = directory / RECORD_FILE
    error = getattr(sys, "last_value", None)  # an exception that ended the script
    flags_module = sys.modules.get("keras_repro.flags")
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": run_id,
        "status": "failed" if isinstance(error, BaseException) else "completed",
        "started_at": started_at or utc_now(),
        "ended_at": utc_now(),
        "error": f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "resumed_from": None,
        "no_fit": NO_FIT_MESSAGE,
        "policy": (configured or policy).as_dict(),
        "applied": applied,
        "environment": capture_environment(),
        "code": capture_code(flags_module.all_flag_values() if flags_module is not None else None),
        "fit": None,
        "hyperparameters": None,
        "model": None,
        "data": None,
        "metrics": {"epochs": [], "steps": [], "steps_per_epoch": []},
    }
    atomic_write_json(path, data)
    announce_record(path)
    return path
