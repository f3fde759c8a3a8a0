"""Resuming an interrupted run: which run, whether it may be resumed, and where its data continues.

`keras_repro.fit(..., resume=True)` picks the latest interrupted run in `run_dir` (a `running` record whose
process is gone, or `interrupted`/`failed`) that has a checkpoint, was not resumed already, and whose
policy, data, model and hyperparameters match this call; `resume="runs/<run_id>"` names one. A mismatch
raises `ResumeError` listing every difference: resuming on changed data is the very bug keras_repro exists
to catch.

Example:
    >>> plan = plan_resume("runs/20261127-101500-3f2a9c", "runs", provisional)   # doctest: +SKIP
    >>> plan.checkpoint.epoch, plan.resumed_from["run_id"]                       # doctest: +SKIP
    (6, '20261127-101500-3f2a9c')
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from pathlib import Path
from typing import Any, Mapping

from keras_repro import _compat
from keras_repro.checkpoint import Checkpoint, latest_checkpoint
from keras_repro.errors import CompatError, RecordError, ResumeError
from keras_repro.record import RECORD_FILE, RunRecord, load_run

__all__ = ["ResumePlan", "plan_resume", "provisional_record", "resumable_runs", "differences", "position_dataset",
           "dataset_input", "with_checkpoints", "agree_across_workers"]

# Differences in these categories make a resume give other bits than the run that never stopped: refused.
_REFUSED = ("data", "hyperparameters", "fit", "model", "policy")
# Fields that may differ: how much is printed, the callback list, details of what was recorded.
_IGNORED = ("fit.verbose", "fit.callbacks", "fit.steps", "fit.epochs", "applied.warnings",
            "applied.seed_source", "applied.shuffle")


@dataclasses.dataclass(frozen=True)
class ResumePlan:
    """What a resumed fit continues: the interrupted run's record and its newest loadable checkpoint."""

    record: RunRecord
    checkpoint: Checkpoint
    warnings: tuple[str, ...]

    @property
    def resumed_from(self) -> dict[str, Any]:
        """The `resumed_from` field of the new record."""
        return {
            "run_id": self.record.run_id,
            "path": str(self.record.path.resolve()) if self.record.path else None,
            "checkpoint": self.checkpoint.path.name,
            "epoch": self.checkpoint.epoch,
            "step_in_epoch": self.checkpoint.step_in_epoch,
            "warnings": list(self.warnings),
        }


def _process_gone(rec: RunRecord) -> bool:
    pid, host = rec.get("pid"), rec.get("host")
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False  # cannot tell: treat as alive
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _interrupted(rec: RunRecord) -> bool:
    return rec.status in ("interrupted", "failed") or (rec.status == "running" and _process_gone(rec))


def _records(run_dir: str | os.PathLike[str]) -> list[RunRecord]:
    base = Path(run_dir)
    found = []
    if base.is_dir():
        for path in base.iterdir():
            if (path / RECORD_FILE).is_file():
                try:
                    found.append(load_run(path))
                except RecordError:
                    continue
    return found


def resumable_runs(run_dir: str | os.PathLike[str]) -> list[RunRecord]:
    """Interrupted runs in `run_dir` that no other run resumed yet, latest started first."""
    records = _records(run_dir)
    resumed = {(r.get("resumed_from") or {}).get("run_id") for r in records if isinstance(r.get("resumed_from"), dict)}
    runs = [r for r in records if _interrupted(r) and r.run_id not in resumed]
    return sorted(runs, key=lambda r: str(r.get("started_at") or ""), reverse=True)


def differences(old: Mapping[str, Any], provisional: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(refusals, warnings) between an interrupted run's record and this call's provisional record."""
    from keras_repro.comparison import compare

    refusals, warnings = [], []
    for cause in compare(old, provisional).causes:
        if cause.field in _IGNORED:
            if cause.field == "fit.epochs":
                warnings.append(f"{cause.message} (the result equals an uninterrupted run with the new epochs)")
            continue
        (refusals if cause.category in _REFUSED else warnings).append(cause.message)
    return refusals, warnings


def _refusal(rec: RunRecord, refusals: list[str]) -> ResumeError:
    lines = "\n".join(f"  - {r}" for r in refusals)
    return ResumeError(
        f"Cannot resume run {rec.run_id} ({rec.path}): this fit differs from it, so the result would not equal "
        f"a run that never stopped:\n{lines}\nFix: resume with the same data, model, hyperparameters and policy, "
        "or start a new run without resume=."
    )


def _open(path: str | os.PathLike[str]) -> RunRecord:
    try:
        rec = load_run(path)
    except RecordError as e:
        raise ResumeError(f"Cannot resume {str(path)!r}: {e}") from None
    if rec.status == "completed":
        raise ResumeError(f"Run {rec.run_id} completed; there is nothing to resume. Fix: leave out resume=.")
    if not _interrupted(rec):
        raise ResumeError(
            f"Run {rec.run_id} is still running (process {rec.get('pid')} on {rec.get('host')}). "
            "Fix: wait for it or stop it before resuming it."
        )
    return rec


def plan_resume(resume: Any, run_dir: str | os.PathLike[str], provisional: Mapping[str, Any]) -> ResumePlan | None:
    """Chooses and checks the run to resume; None when `resume=True` finds no interrupted run at all.

    Raises:
        ResumeError: the named run cannot be resumed (missing, completed, running, no checkpoint), or it
            (for `resume=True`: every candidate) differs from this call; the message lists the differences.
    """
    if resume is True:
        candidates = resumable_runs(run_dir)
        first_refusal: ResumeError | None = None
        for rec in candidates:
            checkpoint = latest_checkpoint(rec.directory or ".")
            if checkpoint is None:
                continue
            refusals, warnings = differences(rec, provisional)
            if refusals:
                first_refusal = first_refusal or _refusal(rec, refusals)
                continue
            return ResumePlan(rec, checkpoint, tuple(warnings))
        if first_refusal is not None:
            raise first_refusal
        return None
    rec = _open(resume)
    checkpoint = latest_checkpoint(rec.directory or ".")
    if checkpoint is None:
        raise ResumeError(
            f"Run {rec.run_id} has no checkpoint (it stopped before its first epoch ended). "
            "Fix: start it again without resume= (same seed, same bits)."
        )
    refusals, warnings = differences(rec, provisional)
    if refusals:
        raise _refusal(rec, refusals)
    return ResumePlan(rec, checkpoint, tuple(warnings))


# --- where a tf.data pipeline continues ----------------------------------------------------------


def position_dataset(dataset: Any, kwargs: dict[str, Any], *, initial_epoch: int, epochs: int,
                     start_epoch: int | None = None, per_execution: int = 1,
                     expect_first: list[str] | None = None) -> tuple[Any, str | None]:
    """Turns a dataset into what Keras iterates, positioned at the start of `start_epoch`; returns
    (dataset, None) or (dataset unchanged, why it cannot be resumed). Steps already trained inside the
    epoch are read and dropped by `checkpoint.Restorer` (the pipeline runs for them, without training).

    - finite, known cardinality, `steps_per_epoch` absent or at least the cardinality: Keras makes a fresh
      iterator per epoch (and one more at the epoch's end), each advancing reshuffling `shuffle()`s' seed state. To
      resume at epoch e, as many iterators as Keras made before epoch e are made and dropped first
      (advancing those seed states exactly as the run did; the first also checks the first elements
      against the record); the dataset itself is then handed to Keras unchanged, so its steps are exactly
      those of `model.fit`.
    - infinite (`repeat()`) with `steps_per_epoch`: Keras keeps one iterator, taking
      ceil(steps_per_epoch / per_execution) * per_execution batches an epoch; a resume skips those.
    - unknown cardinality, or `steps_per_epoch` shorter than the data: Keras's own handling, not resumable.
    """
    import tensorflow as tf

    cardinality = int(dataset.cardinality().numpy())
    steps = kwargs.get("steps_per_epoch")
    start = initial_epoch if start_epoch is None else start_epoch
    if cardinality > 0 and (steps is None or steps >= cardinality):
        # Keras makes an iterator when an epoch begins and another when its data ran out at the epoch's
        # end; the next epoch uses that one only with steps_per_epoch. Every iterator made advances a
        # reshuffling shuffle()'s seed state, read or not (measured, docs/tf-notes.md).
        for i in range((start - initial_epoch) * (1 if steps else 2)):
            if i == 0 and expect_first:
                _check_first_elements(dataset, expect_first)
            else:
                iter(dataset)  # dropped at once: advances reshuffling seed states as an epoch did
        return dataset, None
    if cardinality == tf.data.INFINITE_CARDINALITY and steps:
        done = (start - initial_epoch) * -(-int(steps) // per_execution) * per_execution
        return (dataset.skip(done) if done else dataset), None
    why = ("its cardinality is unknown (use steps_per_epoch with a repeated dataset, or "
           "dataset.apply(tf.data.experimental.assert_cardinality(n)))" if cardinality < 0 and cardinality != -1
           else "steps_per_epoch is shorter than the dataset (Keras then continues it across epochs)")
    return dataset, f"the tf.data input cannot be positioned at a step: {why}"


def _check_first_elements(dataset: Any, expected: list[str]) -> None:
    from keras_repro.dataset_tap import DatasetTap

    tap = DatasetTap(limit=len(expected))
    for _ in tap.wrap(dataset):
        if tap.count() >= len(expected):
            break
    got = tap.digests()
    if tap.enabled and got != expected[: len(got)]:
        index = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
        raise ResumeError(
            f"The tf.data input now feeds other elements than the interrupted run did (first difference at "
            f"element {index} of its first epoch). Fix: resume with the same dataset, or start a new run."
        )


# --- wiring, for keras_repro.fit ------------------------------------------------------------------


def provisional_record(writer: Any, model: Any, data: Mapping[str, Any], user_hyperparameters: Any) -> dict[str, Any]:
    """What this fit's record will say, as far as a resume check needs it (before training starts)."""
    import sys

    from keras_repro import model_info
    from keras_repro.environment import capture_code, capture_environment
    from keras_repro.record import SCHEMA

    flags_module = sys.modules.get("keras_repro.flags")

    summary = model_info.model_summary(model)
    summary["initial_weights_sha256"] = model_info.weights_sha256(model)
    return {
        "schema": SCHEMA, "run_id": "(this fit)", "status": "running",
        "policy": writer.policy, "applied": writer.applied,
        "environment": capture_environment(), "code": capture_code(flags_module.all_flag_values() if flags_module is not None else None),
        "fit": dict(writer.fit_args or {}),
        "hyperparameters": model_info.hyperparameters(model, user_hyperparameters),
        "model": summary, "data": dict(data),
        **({"distribution": writer.extra["distribution"]} if writer.extra.get("distribution") else {}),
    }


def dataset_input(x: Any, kwargs: dict[str, Any], model: Any, plan: ResumePlan | None,
                  initial_epoch: int) -> tuple[Any, bool]:
    """The dataset Keras gets, positioned (see `position_dataset`), and whether it could be."""
    epochs = int(kwargs.get("epochs", 1))
    if plan is None:
        x, why = position_dataset(x, kwargs, initial_epoch=initial_epoch, epochs=epochs)
    else:
        old_x = ((plan.checkpoint.record.get("data") or {}).get("x")) or {}
        x, why = position_dataset(
            x, kwargs, initial_epoch=initial_epoch, epochs=epochs, start_epoch=plan.checkpoint.epoch,
            per_execution=_steps_per_execution(model), expect_first=old_x.get("first_elements"),
        )
        if why:
            raise ResumeError(f"Cannot resume run {plan.record.run_id}: {why}.")
    return x, why is None


def _steps_per_execution(model: Any) -> int:
    return int(getattr(model, "steps_per_execution", 1) or 1)


def with_checkpoints(kwargs: dict[str, Any], record_callback: Any, model: Any, plan: ResumePlan | None,
                     every_steps: int | None, keep: int, x: Any = None) -> None:
    """Puts a `Restorer` first (when resuming) and a `Checkpointer` last in kwargs["callbacks"].

    The model's metrics and optimizer are built first, from the input's element spec (Keras's TF trainer
    builds them only when it traces the first step, after the moment a resume must restore them); every
    run does it, so that resumed and uninterrupted runs take the same path.
    """
    from keras_repro.checkpoint import Checkpointer, Restorer, ResumingCallbackList

    spec = getattr(x, "element_spec", None)
    if spec is not None:
        try:
            _compat.symbolic_build(model, spec)
        except CompatError:
            raise  # Keras moved it: resumed and uninterrupted runs could take different paths
        except Exception:  # a model that cannot be built from a spec: Keras builds it in the first step
            pass

    from keras_repro.callback_state import CallbackStates

    # The callbacks' state: captured by the Checkpointer, restored after every on_train_begin (placed last).
    states = CallbackStates(kwargs["callbacks"], record_callback, plan.checkpoint if plan is not None else None)
    checkpointer = Checkpointer(record_callback, every_steps, keep)
    checkpointer.callback_states = states
    callbacks = [*kwargs["callbacks"], checkpointer, states]
    if plan is None:
        kwargs["callbacks"] = callbacks
        return
    restorer = Restorer(plan.checkpoint)
    if not plan.checkpoint.step_in_epoch:
        kwargs["callbacks"] = [restorer, *callbacks]
        return
    verbose = kwargs.get("verbose", "auto")
    kwargs["callbacks"] = ResumingCallbackList(
        restorer, [restorer, *callbacks], add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=kwargs.get("epochs", 1), steps=kwargs.get("steps_per_epoch") or _cardinality(x),
        skip_epoch_begin=states.skip_epoch_begin(),
    )


def _cardinality(x: Any) -> int | None:
    """Batches per epoch as Keras's epoch iterator counts them for a dataset (None: unknown)."""
    cardinality = getattr(x, "cardinality", None)
    if cardinality is None:
        return None
    value = int(cardinality())
    return value if value > 0 else None


_NO_POSITION = -1.0
_MAX_CHECKPOINTS = 16  # positions each worker contributes to the agreement


def _position(epoch: int, step: int) -> float:
    return float(epoch) * 1e9 + float(step)  # exact in float64 for any real run


def agree_across_workers(plan: ResumePlan | None, strategy: Any, resume: Any) -> ResumePlan | None:
    """Under a multi-worker strategy, makes every worker resume from the same checkpoint.

    Each worker keeps its own checkpoints, and a kill leaves them up to one checkpoint apart (a worker may
    write the checkpoint of a step its killed peer never reached). The workers all-gather the positions
    of the checkpoints they hold and all take the newest position every worker has; every worker computes
    the same answer from the same gathered list, so all continue, or all refuse, together. A no-op
    outside a multi-worker strategy.

    Example:
        >>> plan = agree_across_workers(plan, strategy, resume=True)   # doctest: +SKIP

    Raises:
        ResumeError: the workers hold no common checkpoint (or only some found a run to resume).
    """
    from keras_repro.checkpoint import list_checkpoints, load_checkpoint
    from keras_repro.distribution import _multi_worker

    if resume in (None, False) or strategy is None or not _multi_worker(strategy):
        return plan
    held: dict[float, Path] = {}
    if plan is not None:
        for path in list_checkpoints(plan.record.directory or ".")[:_MAX_CHECKPOINTS]:
            epoch, step = (int(part) for part in path.name.split("-")[1::2])
            held[_position(epoch, step)] = path
    gathered = _all_gather(strategy, sorted(held, reverse=True) + [_NO_POSITION] * (_MAX_CHECKPOINTS - len(held)))
    common = set.intersection(*({p for p in row if p != _NO_POSITION} for row in gathered))
    if not common:
        if plan is None and all(all(p == _NO_POSITION for p in row) for row in gathered):
            return None  # no worker has anything to resume: a fresh start everywhere
        raise ResumeError(
            f"Cannot resume this multi-worker job: its {len(gathered)} workers hold no common checkpoint "
            f"(positions per worker, epoch*1e9+step: {[sorted(set(r) - {_NO_POSITION}) for r in gathered]}). "
            "Expected every worker to resume its own record of the same interrupted job. Fix: start every worker "
            "with the same resume= and run_dir, or restart the job from scratch with the same seed."
        )
    assert plan is not None
    target = max(common)
    if held[target] != plan.checkpoint.path:
        plan = dataclasses.replace(plan, checkpoint=load_checkpoint(held[target]))
        logging.getLogger("keras_repro").warning(
            "keras_repro: the workers' newest common checkpoint is %s: resuming there", held[target].name)
    return plan


def _all_gather(strategy: Any, values: list[float]) -> list[list[float]]:
    """Every replica's `values`, in replica order, on every worker (one collective)."""
    import tensorflow as tf

    local = tf.constant([values], tf.float64)

    def gather(value: Any) -> Any:
        return tf.distribute.get_replica_context().all_gather(value, axis=0)

    result = strategy.experimental_local_results(strategy.run(gather, args=(local,)))[0]
    return [list(map(float, row)) for row in result.numpy()]
