"""What `keras_repro.fit` hands `model.fit` as data: the `InputFeed` decision, made once per fit.

- Shuffled arrays (`shuffle=True` or `"batch"`, a seed, a mode other than `off`) become an `ArrayStream`:
  one pass per Keras iterator, ordered by (seed, pass), with Keras's own epoch, `steps_per_epoch` and
  `steps_per_execution` rules (docs/tf-notes.md). `validation_split` is applied first, as Keras does.
- A user's `tf.data.Dataset` is positioned for a resume (`keras_repro.resume.position_dataset`) and
  tapped (`DatasetTap`: its first elements go into the record).
- Everything else (generators, `PyDataset`, `shuffle=False`, mode `off`) reaches Keras unchanged.

Example:
    >>> feed = feed_inputs(x, y, {"batch_size": 32}, seed=1, mode="bitwise", model=model)  # doctest: +SKIP
    >>> feed.kind, feed.kwargs["shuffle"]                                                  # doctest: +SKIP
    ('array_stream', False)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from keras_repro.data import is_array_like, is_tf_dataset, num_samples
from keras_repro.errors import ReproducibilityError, ResumeError

__all__ = ["InputFeed", "feed_inputs"]

ARRAY_STREAM = "array_stream"  # keras_repro's (seed, pass) order over arrays
DATASET = "dataset"  # the user's tf.data pipeline, positioned and tapped
UNCHANGED = "unchanged"  # what the user passed, as Keras would get it


@dataclasses.dataclass(frozen=True)
class InputFeed:
    """The data `model.fit` gets and what keras_repro knows about it.

    Attributes:
        x, y: the first two arguments of `model.fit`.
        kwargs: the other `model.fit` arguments (without `callbacks`).
        kind: ARRAY_STREAM, DATASET or UNCHANGED.
        positioned: the input can start at any (epoch, step) of the run, so mid-epoch checkpoints are
            resumable.
        order_source: epoch -> the record's summary of that epoch's sample order, when keras_repro sets it.
        tap: the `DatasetTap` on a user's dataset, or None.
        rewind: called when training begins (puts an array stream's pass counter back), or None.
        shuffle: the display value recorded as `applied.shuffle` (never used for control flow).
    """

    x: Any
    y: Any
    kwargs: Mapping[str, Any]
    kind: str = UNCHANGED
    positioned: bool = False
    order_source: Callable[[int], Any] | None = None
    tap: Any = None
    rewind: Callable[[], None] | None = None
    shuffle: str = "keras (unchanged)"


def feed_inputs(x: Any, y: Any, kwargs: Mapping[str, Any], *, seed: int | None, mode: str, model: Any,
                plan: Any = None, placement: Any = None) -> InputFeed:
    """Decides how `x, y` reach `model.fit` (see the module docstring); `plan` is a `ResumePlan` or None.

    Raises:
        ReproducibilityError: `validation_split` leaves no training or no validation sample.
        ResumeError: a resume needs a position this input cannot start at.
    """
    shuffle = kwargs.get("shuffle", True)
    kwargs = dict(kwargs)
    initial_epoch = int(kwargs.get("initial_epoch") or 0)  # the run's, also when resuming it
    if plan is not None:
        kwargs["initial_epoch"] = plan.checkpoint.epoch  # Keras's epoch counter continues at the checkpoint
    if mode != "off" and seed is not None and shuffle is not False and _arrays(x) and (y is None or _arrays(y)):
        return _array_feed(x, y, kwargs, seed, model, plan, placement, initial_epoch)
    if mode != "off" and is_tf_dataset(x):
        return _dataset_feed(x, y, kwargs, model, plan, placement, initial_epoch)
    if mode == "off" or seed is None:
        how = "keras (unchanged)"
    elif shuffle is False:
        how = "none (shuffle=False)"
    elif not _arrays(x):
        how = "keras (dataset or generator input)"
    else:
        how = "keras (unchanged)"
    if plan is not None and (plan.checkpoint.step_in_epoch or not _arrays(x)):
        raise ResumeError(
            f"Cannot resume run {plan.record.run_id}: a {type(x).__name__} input cannot be positioned "
            f"{'in the middle of an epoch' if plan.checkpoint.step_in_epoch else 'at an epoch'} (docs/resume.md). "
            "Fix: pass arrays or a tf.data.Dataset, or start a new run."
        )
    return InputFeed(x, y, kwargs, shuffle=how)


def _array_feed(x: Any, y: Any, kwargs: dict[str, Any], seed: int, model: Any, plan: Any, placement: Any,
                initial_epoch: int) -> InputFeed:
    from keras_repro.shuffle import ArrayStream, order_summary

    shuffle = kwargs.get("shuffle", True)
    sample_weight = kwargs.pop("sample_weight", None)
    x, y, sample_weight = _split_validation(x, y, sample_weight, kwargs)
    batch_size = kwargs.pop("batch_size", None) or 32
    if kwargs.get("validation_data") is not None:
        kwargs.setdefault("validation_batch_size", batch_size)  # Keras's default: the training batch size
    kwargs["shuffle"] = False  # the stream is ordered already (and Keras warns about shuffle=True on datasets)
    arrays = (x,) if y is None and sample_weight is None else (x, y) if sample_weight is None else (x, y, sample_weight)
    stream = ArrayStream(arrays, batch_size, shuffle, seed)
    steps = kwargs.get("steps_per_epoch")
    first_pass = initial_epoch if plan is None else _resumed_pass(stream, steps, model, plan, initial_epoch)
    dataset = placement.outside(lambda: stream.dataset(first_pass)) if placement else stream.dataset(first_pass)
    one_pass_per_epoch = steps is None or steps >= stream.batches_per_epoch  # then pass index == epoch
    source = (lambda epoch: order_summary(stream.order(epoch), epoch)) if one_pass_per_epoch else None
    return InputFeed(dataset, None, kwargs, ARRAY_STREAM, positioned=True, order_source=source, rewind=stream.rewind,
                     shuffle=f"keras_repro: a new order per epoch from (seed, epoch), shuffle={shuffle!r}")


def _resumed_pass(stream: Any, steps: int | None, model: Any, plan: Any, initial_epoch: int) -> int:
    """The pass Keras begins the checkpoint's epoch with; refuses an epoch that begins inside a pass."""
    from keras_repro.shuffle import pass_at_epoch

    passes, into = pass_at_epoch(stream.batches_per_epoch, steps, _per_execution(model),
                                 plan.checkpoint.epoch - initial_epoch)
    if into:
        raise ResumeError(
            f"Cannot resume run {plan.record.run_id} at epoch {plan.checkpoint.epoch}: with steps_per_epoch={steps} "
            f"and {stream.batches_per_epoch} batches of data, Keras begins that epoch {into} batches into a pass "
            "over the data, which a new model.fit cannot continue (docs/resume.md). Fix: use steps_per_epoch of at "
            "least the number of batches (or leave it out), or start a new run."
        )
    return initial_epoch + passes


def _dataset_feed(x: Any, y: Any, kwargs: dict[str, Any], model: Any, plan: Any, placement: Any,
                  initial_epoch: int) -> InputFeed:
    from keras_repro.dataset_tap import DatasetTap
    from keras_repro.resume import dataset_input

    x, positioned = dataset_input(x, kwargs, model, plan, initial_epoch)
    tap = placement.outside(DatasetTap) if placement else DatasetTap()  # created outside any strategy scope
    return InputFeed(tap.wrap(x), y, kwargs, DATASET, positioned=positioned, tap=tap,
                     shuffle="keras (dataset or generator input)")


def _per_execution(model: Any) -> int:
    return int(getattr(model, "steps_per_execution", 1) or 1)


def _split_validation(x: Any, y: Any, sample_weight: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Keras's `validation_split`: the last fraction of the arrays, before any shuffling."""
    split = kwargs.pop("validation_split", 0.0) or 0.0
    if not split or kwargs.get("validation_data") is not None:
        return x, y, sample_weight
    n = num_samples(x) or 0
    at = int(math.floor(n * (1.0 - split)))
    if at == 0 or at == n:
        raise ReproducibilityError(
            f"Training data contains {n} samples, which is not sufficient to split it into a validation and "
            f"training set as specified by `validation_split={split}`. Fix: provide more data or another split."
        )
    x, x_val = _split(x, at)
    y, y_val = _split(y, at)
    sample_weight, sw_val = _split(sample_weight, at)
    kwargs["validation_data"] = (x_val, y_val) if sw_val is None else (x_val, y_val, sw_val)
    return x, y, sample_weight


def _arrays(value: Any) -> bool:
    if value is None:
        return False
    if is_array_like(value):
        return True
    if isinstance(value, Mapping):
        return bool(value) and all(is_array_like(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return bool(value) and all(is_array_like(v) for v in value)
    return False


def _split(value: Any, at: int) -> tuple[Any, Any]:
    if value is None:
        return None, None
    if isinstance(value, Mapping):
        pairs = {k: _split(v, at) for k, v in value.items()}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    if isinstance(value, (list, tuple)):
        pairs_list = [_split(v, at) for v in value]
        return type(value)(p[0] for p in pairs_list), type(value)(p[1] for p in pairs_list)
    return value[:at], value[at:]
