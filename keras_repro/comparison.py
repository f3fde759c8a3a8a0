"""Why two runs differ: `compare(a, b)` turns two run records into ordered causes and a metrics verdict.

TensorFlow-free (it reads records only), so `keras-repro diff` starts fast.

Causes come most likely first, by category: data, hyperparameters, fit arguments, code, model
architecture, seed/mode/threads, initial weights, library versions, hardware, environment variables.
Run ids, times, paths, process ids, host and argv are never causes by themselves. When nothing
recorded differs but the metrics do, the one cause is "leftover nondeterminism", explained by mode.

Example:
    >>> d = compare("runs/run_a", "runs/run_b")           # doctest: +SKIP
    >>> d.identical, [c.message for c in d.causes]        # doctest: +SKIP
    (False, ['hyperparameter learning_rate: 0.001 -> 0.003'])
    >>> d.first_divergence.epoch, d.first_divergence.step  # doctest: +SKIP
    (0, 0)
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Union

from keras_repro.causes import (
    _MISSING,
    CATEGORIES,
    Cause,
    _fmt_gap,
    _leftover,
    _mode,
    _same,
    find_causes,
    format_value,
    leftover_message,
    relative_gap,
)
from keras_repro.errors import RecordError
from keras_repro.record import RunRecord, load_run, validate_record

__all__ = [
    "CATEGORIES",
    "Cause",
    "Divergence",
    "MetricGap",
    "Comparison",
    "compare",
    "as_record",
    "relative_gap",
    "leftover_message",
    "format_value",
]

RecordLike = Union[RunRecord, Mapping[str, Any], str, "os.PathLike[str]"]

@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where two metric series first differ.

    `epoch` and `step` are 0-based; `step` is within the epoch and `global_step` counts over all epochs
    (both None for a per-epoch divergence, or when the record has no `metrics.steps_per_epoch`).

    Example:
        >>> Divergence("loss", 1, 2, 14, 0.5, 0.25, 0.5).describe()
        'loss at epoch 1, step 2 (global step 14): 0.5 vs 0.25 (relative gap 5.0e-01)'
    """

    metric: str
    epoch: int | None
    step: int | None
    global_step: int | None
    a: Any
    b: Any
    relative_gap: float

    def describe(self) -> str:
        if self.epoch is not None and self.step is not None:
            where = f"epoch {self.epoch}, step {self.step} (global step {self.global_step})"
        elif self.epoch is not None:
            where = f"epoch {self.epoch}"
        else:
            where = f"global step {self.global_step}"
        return f"{self.metric} at {where}: {format_value(self.a)} vs {format_value(self.b)} (relative gap {_fmt_gap(self.relative_gap)})"


@dataclasses.dataclass(frozen=True)
class MetricGap:
    """A final metric (last epoch's log) in both runs and how far apart they are."""

    name: str
    a: Any
    b: Any
    absolute_gap: float
    relative_gap: float

    @property
    def identical(self) -> bool:
        return _same(self.a, self.b)

    def describe(self) -> str:
        if self.identical:
            return f"{self.name} {format_value(self.a)} (identical)"
        return f"{self.name} {format_value(self.a)} vs {format_value(self.b)} (relative gap {_fmt_gap(self.relative_gap)})"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The result of `compare(a, b)`.

    Attributes:
        run_a, run_b: the run ids.
        identical: final weights hashes and all metrics (per step and per epoch) are bit-identical
            (floats compared by exact value, NaN equal to NaN).
        causes: recorded differences, most likely first.
        first_divergence: the first step where `metrics.steps` differ (or, if the steps agree or are
            absent, the first epoch whose logs differ); None when the shared metrics agree.
        epoch_divergence: the first epoch whose logs differ, None when they agree.
        final_gaps: the final (last epoch) metrics of both runs, one `MetricGap` per shared key.
        notes: remarks that are not causes: unfinished runs, different lengths, missing sections.
        weights_identical: final weights hashes equal; None when either run has none.
        steps_compared, epochs_compared: how many steps and epochs both runs have.
        metrics_identical: no divergence in the steps and epochs both runs have.
        mode_a, mode_b: the mode each run applied (or asked, in records without `applied`).
    """

    run_a: str | None
    run_b: str | None
    identical: bool
    causes: tuple[Cause, ...]
    first_divergence: Divergence | None
    epoch_divergence: Divergence | None
    final_gaps: tuple[MetricGap, ...]
    notes: tuple[str, ...]
    weights_identical: bool | None
    steps_compared: int
    epochs_compared: int
    metrics_identical: bool
    mode_a: str | None = None
    mode_b: str | None = None

    def lines(self) -> list[str]:
        """The verdict as text, one line per finding: causes first, then the metrics."""
        label = "recorded difference (the results are identical)" if self.identical else "cause"
        out = [f"{label}: {c.message}" for c in self.causes]
        out += [f"note: {n}" for n in self.notes]
        if self.identical:
            out.append(
                f"metrics: identical ({self.steps_compared} steps, {self.epochs_compared} epochs, "
                f"final weights {'identical' if self.weights_identical else 'not recorded'})"
            )
            return out
        if self.first_divergence is not None:
            out.append(f"metrics: first divergence: {self.first_divergence.describe()}")
        elif self.metrics_identical and (self.steps_compared or self.epochs_compared):
            out.append(f"metrics: identical over the {self.steps_compared} shared steps and {self.epochs_compared} shared epochs")
        elif self.metrics_identical:
            out.append("metrics: no shared steps or epochs to compare")
        if self.epoch_divergence is not None and self.epoch_divergence != self.first_divergence:
            out.append(f"metrics: epoch logs first differ: {self.epoch_divergence.describe()}")
        if self.weights_identical is False:
            out.append("weights: final weights differ")
        differing = [g.describe() for g in self.final_gaps if not g.identical]
        if differing:
            out.append("final: " + "; ".join(differing))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (for `keras-repro diff --json`)."""
        return dataclasses.asdict(self)


def as_record(value: RecordLike) -> RunRecord:
    """A `RunRecord` from a record, a dict of run.json content, or a path (run directory or run.json).

    Example:
        >>> as_record({"schema": "keras_repro.run/1", "run_id": "r"}).run_id
        'r'
    """
    if isinstance(value, RunRecord):
        return value
    if isinstance(value, Mapping):
        validate_record(dict(value), where="record given as a dict")
        return RunRecord(value)
    if isinstance(value, (str, os.PathLike)):
        return load_run(value)
    raise RecordError(
        f"Expected a RunRecord, a dict or a path to compare. Received: {value!r} (of type {type(value).__name__}). "
        f"Fix: pass keras_repro.load_run(path) or the path itself."
    )


def compare(a: RecordLike, b: RecordLike) -> Comparison:
    """Compares two runs and explains why they differ, most likely cause first.

    Args:
        a, b: `RunRecord`s, dicts of run.json content, or paths to run directories / run.json files.

    Returns:
        A frozen `Comparison`.

    Raises:
        RecordError: a path is missing or not a valid record.

    Example:
        >>> d = compare("runs/a", "runs/b")               # doctest: +SKIP
        >>> print("\\n".join(d.lines()))                  # doctest: +SKIP
        cause: hyperparameter learning_rate: 0.001 -> 0.003
        metrics: first divergence: loss at epoch 0, step 1 (global step 1): 2.2 vs 2.1 (relative gap 4.5e-02)
    """
    ra, rb = as_record(a), as_record(b)
    notes: list[str] = []
    causes = find_causes(ra, rb, notes)

    steps_a, steps_b = ra.steps, rb.steps
    step_div = _first_step_divergence(ra, rb)
    epoch_div = _first_epoch_divergence(ra.epochs, rb.epochs)
    steps_same = step_div is None and len(steps_a) == len(steps_b)
    epochs_same = epoch_div is None and len(ra.epochs) == len(rb.epochs)
    wa, wb = ra.final_weights_sha256, rb.final_weights_sha256
    weights_identical = None if wa is None or wb is None else wa == wb
    identical = steps_same and epochs_same and (weights_identical is True or (wa is None and wb is None))
    notes += _status_notes(ra, rb, len(steps_a), len(steps_b), len(ra.epochs), len(rb.epochs))
    no_fit = [label for label, rec in (("A", ra), ("B", rb)) if rec.get("no_fit")]
    if no_fit:  # a custom training loop under autolog: no weights, no metrics, nothing compared
        identical = False
        notes.append(f"run {' and '.join(no_fit)} ran no fit (a custom training loop?): nothing recorded to compare")
    elif identical and wa is None and wb is None:
        notes.append("neither run recorded final weights: identical by metrics only")
    if not causes and (step_div is not None or epoch_div is not None or weights_identical is False):
        causes.append(_leftover_with_inputs(ra, rb, step_div))  # not for a run that merely stopped early
    return Comparison(
        run_a=ra.run_id,
        run_b=rb.run_id,
        identical=identical,
        causes=tuple(causes),
        first_divergence=step_div or epoch_div,
        epoch_divergence=epoch_div,
        final_gaps=_final_gaps(ra.epochs, rb.epochs),
        notes=tuple(notes),
        weights_identical=weights_identical,
        steps_compared=min(len(steps_a), len(steps_b)),
        epochs_compared=min(len(ra.epochs), len(rb.epochs)),
        metrics_identical=step_div is None and epoch_div is None,
        mode_a=_mode(ra),
        mode_b=_mode(rb),
    )


def _leftover_with_inputs(ra: RunRecord, rb: RunRecord, step_div: Divergence | None) -> Cause:
    """issue 12: the leftover cause, saying whether the per-step inputs agreed (keras_repro/explain_inputs.py)."""
    from keras_repro.explain_inputs import refine_leftover

    return refine_leftover(_leftover(ra, rb), ra, rb, step_div.global_step if step_div is not None else None)


# --- metrics --------------------------------------------------------------------------------------


def _locate(steps_per_epoch: Any, global_step: int) -> tuple[int | None, int | None]:
    """(epoch, step within epoch) of a global step, from `metrics.steps_per_epoch`."""
    if not isinstance(steps_per_epoch, list):
        return None, None
    start = 0
    for epoch, count in enumerate(steps_per_epoch):
        if not isinstance(count, int):
            return None, None
        if global_step < start + count:
            return epoch, global_step - start
        start += count
    return None, None


def _first_step_divergence(ra: RunRecord, rb: RunRecord) -> Divergence | None:
    a, b = ra.steps, rb.steps
    for i, (x, y) in enumerate(zip(a, b, strict=False)):  # the steps both runs reached
        if x == y and x.__class__ is y.__class__:
            continue
        if x != x and y != y:  # both NaN
            continue
        epoch, step = _locate(ra.metrics.get("steps_per_epoch"), i)
        return Divergence("loss", epoch, step, i, x, y, relative_gap(x, y))
    return None


def _first_epoch_divergence(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> Divergence | None:
    for epoch, (la, lb) in enumerate(zip(a, b, strict=False)):  # the epochs both runs reached
        if not isinstance(la, dict) or not isinstance(lb, dict):
            continue
        for key in list(la) + [k for k in lb if k not in la]:
            va, vb = la.get(key, _MISSING), lb.get(key, _MISSING)
            if not _same(va, vb):
                return Divergence(key, epoch, None, None, None if va is _MISSING else va,
                                  None if vb is _MISSING else vb, relative_gap(va, vb))
    return None


def _final_gaps(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[MetricGap, ...]:
    if not a or not b or not isinstance(a[-1], dict) or not isinstance(b[-1], dict):
        return ()
    la, lb = a[-1], b[-1]
    gaps = []
    for key in la:
        if key in lb:
            va, vb = la[key], lb[key]
            try:
                absolute = abs(float(va) - float(vb)) if not _same(va, vb) else 0.0
            except (TypeError, ValueError):
                absolute = math.inf
            gaps.append(MetricGap(key, va, vb, absolute if absolute == absolute else math.inf, relative_gap(va, vb)))
    return tuple(gaps)


def _status_notes(ra: RunRecord, rb: RunRecord, na: int, nb: int, ea: int, eb: int) -> list[str]:
    notes = []
    for label, rec in (("A", ra), ("B", rb)):
        if rec.status in ("running", "interrupted", "failed"):
            error = rec.get("error")
            extra = f": {error}" if isinstance(error, str) and error else ""
            notes.append(f"run {label} is {rec.status} (not completed){extra}")
        if rec.get("resumed_from"):
            notes.append(f"run {label} was resumed from {format_value(rec.get('resumed_from'))}")
    if ea == eb and na != nb:
        notes.append(
            f"the runs took different numbers of steps per epoch (A: {na} steps, B: {nb} steps in {ea} epochs); "
            f"compared the first {min(na, nb)} steps"
        )
    elif na != nb or ea != eb:
        shorter = "A" if (ea, na) < (eb, nb) else "B"
        notes.append(
            f"runs have different lengths (A: {ea} epochs/{na} steps, B: {eb} epochs/{nb} steps): run {shorter} "
            f"stopped earlier; compared the first {min(ea, eb)} epochs/{min(na, nb)} steps"
        )
    return notes


