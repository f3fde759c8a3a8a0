"""The exceptions keras_repro raises.

Every refusal is a `ReproducibilityError` (a `RuntimeError`), so one `except`
catches them all; the subclasses name the cases a caller may want to single out.

Example:
    >>> import keras_repro
    >>> try:
    ...     keras_repro.configure(seed=-1)
    ... except keras_repro.ReproducibilityError as e:
    ...     print(type(e).__name__)
    InvalidPolicyError
"""

from __future__ import annotations

__all__ = [
    "ReproducibilityError",
    "InvalidPolicyError",
    "InvalidInputError",
    "TooLateError",
    "PolicyConflictError",
    "RecordError",
    "ResumeError",
    "CompatError",
]


class ReproducibilityError(RuntimeError):
    """Base class: keras_repro refused to do something, and says why and the fix."""


class InvalidPolicyError(ReproducibilityError, ValueError):
    """An argument of `configure`/`fit` is not of the expected type or range.

    The policy (`seed`, `mode`, `threads`) and the arguments `fit` validates before training: `batch_size`,
    `shuffle`, `validation_split`, `resume`, `checkpoint_every_steps` and `checkpoint_keep`.
    """


class InvalidInputError(ReproducibilityError, ValueError):
    """Training data that cannot be fed as given: no samples, or arrays of different lengths.

    Also a `ValueError`, which Keras raises for the same inputs.
    """


class TooLateError(ReproducibilityError):
    """A setting can no longer be applied because TensorFlow already started."""


class PolicyConflictError(ReproducibilityError):
    """A policy differs from the one this process already runs under."""


class RecordError(ReproducibilityError):
    """A run record is missing, unreadable, truncated or of another schema."""


class ResumeError(ReproducibilityError):
    """A run cannot be resumed (nothing to resume, or its inputs differ)."""


class CompatError(ReproducibilityError):
    """A TensorFlow/Keras internal keras_repro relies on is missing or changed (an untested version).

    Raised only by `keras_repro._compat`, the one module that touches TF/Keras internals; the message
    names the symbol, the versions keras_repro was tested with, and the fix.
    """
