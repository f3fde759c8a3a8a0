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
import sys
from pathlib import Path
from typing import Any

from keras_repro.policy import Policy

__all__ = ["NO_FIT_MESSAGE", "write_no_fit_record"]

NO_FIT_MESSAGE = (
    "no keras Model.fit ran in this process (a custom training loop, or training outside Keras's fit): "
    "the policy was applied, but no weights, losses or sample order were recorded, so there is nothing to compare"
)


def write_no_fit_record(run_dir: str | os.PathLike[str] | None, policy: Policy, started_at: str | None) -> Path:
    """Writes `<run_dir>/<run_id>/run.json` for a process in which no fit ran; returns its path."""
    from keras_repro import runtime
    from keras_repro.record_writer import RunWriter

    configured = runtime.configured_policy()
    applied = runtime.configured_applied() or {
        "seed": None, "mode": "off", "threads": None, "op_determinism": False, "seeded": [], "warnings": [],
    }
    extra: dict[str, Any] = {"no_fit": NO_FIT_MESSAGE}
    if started_at:
        extra["started_at"] = started_at
    writer = RunWriter(run_dir, policy=(configured or policy).as_dict(), applied=applied, extra=extra)
    writer.start()  # the record skeleton and the announcement to `keras-repro check`, as for a fit
    error = getattr(sys, "last_value", None)  # an exception that ended the script
    failed = isinstance(error, BaseException)
    writer.finish("failed" if failed else "completed", error if failed else None)
    assert writer.path is not None
    return writer.path
