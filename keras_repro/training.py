"""`keras_repro.fit`: `model.fit` under a reproducibility policy, with a run record.

Example:
    >>> import keras_repro
    >>> def build():
    ...     model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    ...     model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ...     return model
    >>> history = keras_repro.fit(build, x, y, epochs=3, batch_size=64, seed=42, mode="bitwise")  # doctest: +SKIP
    >>> history.run.final_weights_sha256                                                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping

from keras_repro import runtime
from keras_repro.data import fingerprint, is_array_like, is_tf_dataset, num_samples
from keras_repro.errors import InvalidPolicyError, PolicyConflictError, ReproducibilityError, ResumeError
from keras_repro.policy import Policy, resolve

__all__ = ["fit"]

logger = logging.getLogger("keras_repro")

# model.fit arguments that describe data rather than how to train; not copied into record["fit"].
_DATA_ARGS = ("x", "y", "sample_weight", "validation_data", "callbacks")


def fit(
    model_or_builder: Any,
    x: Any = None,
    y: Any = None,
    *,
    seed: int | None = None,
    mode: str | None = None,
    threads: int | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool | str | os.PathLike[str] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    strategy: Any = None,
    checkpoint_every_steps: int | None = None,
    checkpoint_keep: int = 2,
    **fit_kwargs: Any,
) -> Any:
    """Trains like `model.fit`, reproducibly, and writes a run record.

    Args:
        model_or_builder: a compiled `keras.Model`, or a zero-argument callable returning one (called
            after seeding, so that weight initialisation is reproducible; prefer this).
        x, y: as for `model.fit` (arrays, dicts/lists of arrays, a `tf.data.Dataset`, ...).
        seed, mode, threads: the policy (see `keras_repro.configure`); None takes the configured
            policy, absl flags or `KERAS_REPRO_*` environment defaults, in that order.
        run_dir: where the record goes (default `--repro_dir`, `$KERAS_REPRO_DIR`, `runs`).
        resume: continue an interrupted run from its last checkpoint, with the same bits as a run that
            never stopped: a run directory (`"runs/<run_id>"`), or True for the latest interrupted run in
            `run_dir` that matches this call (none: a fresh start, with a warning). Raises `ResumeError`
            listing the differences when data, model, hyperparameters or policy differ (docs/resume.md).
        hyperparameters: a dict of your own to record (compared by `keras-repro diff`).
        strategy: a `tf.distribute` strategy to call the builder under (`strategy.scope()`). Not needed
            when the model was built under the scope or fit runs inside it (docs/distributed.md).
        checkpoint_every_steps: also checkpoint every this many training steps (counted over the whole
            run), besides every epoch end; None (default) for epoch ends only. Not in mode "off".
        checkpoint_keep: how many checkpoints to keep in the run directory (default 2).
        **fit_kwargs: every other `model.fit` argument, passed through.

    Returns:
        The Keras `History`, with `history.run` set to the `RunRecord` of this fit.

    Array inputs with `shuffle=True` (Keras's default) or `"batch"` are fed in an order derived from
    (seed, epoch): a new order every epoch, the same on every rerun. (Keras itself repeats the first
    epoch's order once a seed is set.) `shuffle=False` and datasets are passed through unchanged.

    Raises:
        InvalidPolicyError, TooLateError, PolicyConflictError: see `configure`.
        ReproducibilityError: the builder did not return a Keras model, or arguments conflict.
    """
    import keras

    policy, sources = resolve(seed, mode, threads, flag_values=runtime._flag_values())
    _check_checkpoint_args(resume, checkpoint_every_steps, checkpoint_keep)
    _check_fit_kwargs(fit_kwargs)
    was_configured = runtime.configured_policy() is not None
    applied = _ensure_policy(policy, sources)
    effective = runtime.configured_policy()
    assert effective is not None
    run_seed = policy.seed if policy.seed is not None else effective.seed
    if effective.mode != "off":
        runtime.seed_everything(run_seed)  # right before building: Keras draws layer seeds from `random`

    from keras_repro.distribution import Placement

    placement = Placement.find(model_or_builder, strategy)
    placement.check(effective.mode)  # refuse before building anything
    with placement.scope():
        model = _materialise(model_or_builder, keras)
    placement = placement.adopt(model, effective.mode)
    warnings_ = list(applied.get("warnings", [])) + placement.check(effective.mode)
    if (
        effective.mode != "off"
        and not callable_builder(model_or_builder, keras)
        and not was_configured
        and model.built
    ):
        warnings_.append(
            "the model was built before keras_repro seeded this process, so its initial weights are not "
            "reproducible; pass a builder function (keras_repro.fit(build_model, ...)) or call "
            "keras_repro.configure() before building it"
        )
    if policy.seed is not None and effective.seed != policy.seed:
        warnings_.append(f"this fit reseeded with seed={policy.seed} (the process was configured with seed={effective.seed})")
    for message in warnings_[len(applied.get("warnings", [])):]:
        logger.warning("keras_repro: %s", message)

    from keras_repro.callback import ReproCallback

    recorded_fit_args = {k: v for k, v in fit_kwargs.items() if k not in _DATA_ARGS}
    for key, default in (("batch_size", None), ("epochs", 1), ("shuffle", True), ("validation_split", 0.0), ("initial_epoch", 0)):
        recorded_fit_args.setdefault(key, default)
    user_callbacks = list(fit_kwargs.get("callbacks") or [])
    recorded_fit_args["callbacks"] = [type(c).__name__ for c in user_callbacks]

    from keras_repro.callback import default_run_dir

    record_dir = placement.run_dir(default_run_dir(run_dir))  # non-chief workers: run_dir/workers/<task>
    callback = ReproCallback(record_dir, hyperparameters=hyperparameters, fit_args=recorded_fit_args)
    if placement.distributed:
        callback.extra["distribution"] = placement.describe(run_seed if effective.mode != "off" else None)
        callback.announce = placement.layout()["is_chief"]  # `keras-repro check` compares the chief's record
    callback.policy = {**policy.as_dict(), "seed": policy.seed if policy.seed is not None else effective.seed}
    callback.policy["mode"] = effective.mode
    callback.policy["threads"] = effective.threads
    callback.applied = {**applied, "seed": run_seed if effective.mode != "off" else None, "warnings": warnings_}

    call_kwargs = dict(fit_kwargs)
    call_kwargs["callbacks"] = [*user_callbacks, callback]
    data = {
        "x": fingerprint(x),
        "y": fingerprint(y),
        "sample_weight": fingerprint(fit_kwargs.get("sample_weight")),
        "validation": fingerprint(fit_kwargs.get("validation_data")),
        "order": None,
    }
    plan = _plan_resume(resume, effective.mode, callback, model, data, hyperparameters)
    if placement.distributed and effective.mode != "off":  # resume hook: all workers take one common checkpoint
        from keras_repro.resume import agree_across_workers

        plan = agree_across_workers(plan, placement.strategy, resume)
    if plan is not None:  # continue at the checkpoint: Keras's epoch counter, the data stream, the record
        call_kwargs["initial_epoch"] = plan.checkpoint.epoch
        callback.extra["resumed_from"] = plan.resumed_from
        callback.resumed = plan.checkpoint.record
    callback.start()  # the record exists from here on: a fit that fails on its inputs says so too
    callback.source = x  # issue 12: the data source as the user gave it, named by `check --locate`
    try:
        skip = plan.checkpoint.step_in_epoch * int(getattr(model, "steps_per_execution", 1) or 1) if plan else 0
        x, y, call_kwargs, how = _order_inputs(x, y, call_kwargs, effective, run_seed, callback, skip)
        callback.applied["shuffle"] = how
        callback.data = data
        positioned = how.startswith("keras_repro")  # a stream that can start at any step
        if is_tf_dataset(x) and effective.mode != "off" and not positioned:  # the user's own pipeline
            from keras_repro.dataset_tap import DatasetTap
            from keras_repro.resume import dataset_input

            # Array streams record their order themselves (data.order); a user's dataset is tapped.
            x, positioned = dataset_input(x, call_kwargs, model, plan, int(recorded_fit_args.get("initial_epoch") or 0))
            tap = placement.outside(DatasetTap)  # created outside any strategy scope
            x = tap.wrap(x)
            callback.dataset_tap = tap
        elif plan is not None and not positioned and (skip or not _arrays(x)):
            raise ResumeError(
                f"Cannot resume run {plan.record.run_id}: a {type(x).__name__} input cannot be positioned "
                f"{'in the middle of an epoch' if skip else 'at an epoch'} (docs/resume.md). Fix: pass arrays or a "
                "tf.data.Dataset, or start a new run."
            )
        if effective.mode != "off":
            from keras_repro.resume import with_checkpoints

            every = checkpoint_every_steps if positioned else None  # mid-epoch only where data can start there
            with placement.model_scope():  # it builds optimizer variables: under the model's strategy
                with_checkpoints(call_kwargs, callback, model, plan, every, checkpoint_keep, x)
        # autolog hook (keras_repro/autolog.py): reach Keras's own fit once, never back into the patched
        # Model.fit or a subclass's overriding fit that already ran. Without autolog this is model.fit.
        from keras_repro.autolog import keras_fit

        history = keras_fit(model)(x, y, **call_kwargs)
    except KeyboardInterrupt:
        callback.finish("interrupted", "KeyboardInterrupt")
        raise
    except BaseException as e:
        callback.finish("failed", e)
        raise
    callback.finish("completed")  # no-op when on_train_end already completed it
    history.run = callback.record
    return history


def _check_checkpoint_args(resume: Any, every: Any, keep: Any) -> None:
    if not (resume is None or isinstance(resume, (bool, str, os.PathLike))):
        raise InvalidPolicyError(
            f"Expected `resume` to be True, False, None or a run directory. Received: resume={resume!r}."
        )
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise InvalidPolicyError(
            f"Expected `checkpoint_every_steps` to be a positive integer or None. Received: {every!r}."
        )
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidPolicyError(f"Expected `checkpoint_keep` to be a positive integer. Received: {keep!r}.")


def _plan_resume(resume: Any, mode: str, callback: Any, model: Any, data: Any, hyperparameters: Any) -> Any:
    """The checkpoint to continue from (None for a fresh start); raises ResumeError on a mismatch."""
    if resume in (None, False):
        return None
    if mode == "off":
        raise ResumeError(
            "resume= needs a reproducible run, but mode is 'off' (nothing seeded, nothing checkpointed). "
            "Fix: use mode 'deterministic' or 'bitwise' for the run and its resume."
        )
    from keras_repro.resume import plan_resume, provisional_record

    plan = plan_resume(resume, callback.run_dir, provisional_record(callback, model, data, hyperparameters))
    if plan is None:
        logger.warning("keras_repro: resume=True found no interrupted run in %s to resume; starting a new run", callback.run_dir)
    else:
        logger.warning("keras_repro: resuming run %s at epoch %d, step %d", plan.record.run_id,
                       plan.checkpoint.epoch, plan.checkpoint.step_in_epoch)
        for message in plan.warnings:
            logger.warning("keras_repro: resume: %s", message)
    return plan


def callable_builder(obj: Any, keras: Any) -> bool:
    return callable(obj) and not isinstance(obj, keras.Model)


def _materialise(model_or_builder: Any, keras: Any) -> Any:
    if isinstance(model_or_builder, keras.Model):
        return model_or_builder
    if callable(model_or_builder):
        model = model_or_builder()
        if not isinstance(model, keras.Model):
            raise ReproducibilityError(
                f"The builder {getattr(model_or_builder, '__name__', model_or_builder)!r} returned "
                f"{type(model).__name__}, not a keras.Model. Fix: return the compiled model from the builder."
            )
        return model
    raise ReproducibilityError(
        f"Expected a keras.Model or a zero-argument function that builds one. Received: {type(model_or_builder).__name__}. "
        "Fix: keras_repro.fit(build_model, x, y, ...) where build_model() returns a compiled model."
    )


def _ensure_policy(policy: Policy, sources: Mapping[str, str]) -> dict[str, Any]:
    """Configures the process, or checks the asked policy fits the configured one."""
    current = runtime.configured_policy()
    if current is None:
        return runtime.apply_policy(policy, dict(sources))
    explicit_mode = sources.get("mode") not in ("default",)
    explicit_threads = sources.get("threads") not in ("default",)
    if (explicit_mode and policy.mode != current.mode) or (explicit_threads and policy.threads != current.threads):
        # Ambiguous even while TF could still change: which one did the user mean? Say so.
        raise PolicyConflictError(
            f"fit(mode={policy.mode!r}, threads={policy.threads}) conflicts with the policy this process was "
            f"configured with (mode={current.mode!r}, threads={current.threads}). "
            "Fix: pass the same mode and threads to configure() and fit(), or leave them out of fit()."
        )
    applied = runtime.configured_applied()
    assert applied is not None
    return applied


def _check_fit_kwargs(kwargs: Mapping[str, Any]) -> None:
    shuffle = kwargs.get("shuffle", True)
    if shuffle not in (True, False, "batch"):
        raise InvalidPolicyError(
            f"Expected `shuffle` to be True, False or 'batch'. Received: shuffle={shuffle!r}. Fix: pass one of those."
        )
    batch_size = kwargs.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidPolicyError(f"Expected `batch_size` to be a positive integer. Received: batch_size={batch_size!r}.")
    split = kwargs.get("validation_split", 0.0)
    if not isinstance(split, (int, float)) or isinstance(split, bool) or not 0.0 <= split < 1.0:
        raise InvalidPolicyError(f"Expected `validation_split` in [0, 1). Received: validation_split={split!r}.")


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


def _order_inputs(
    x: Any, y: Any, kwargs: dict[str, Any], policy: Policy, seed: int | None, callback: Any, skip: int = 0
) -> tuple[Any, Any, dict[str, Any], str]:
    """Replaces shuffled array inputs by a stream ordered by (seed, epoch); returns what it did."""
    shuffle = kwargs.get("shuffle", True)
    if policy.mode == "off" or seed is None:
        return x, y, kwargs, "keras (unchanged)"
    if not _arrays(x) or shuffle is False:
        return x, y, kwargs, "none (shuffle=False)" if shuffle is False else "keras (dataset or generator input)"
    if y is not None and not _arrays(y):
        return x, y, kwargs, "keras (unchanged)"
    sample_weight = kwargs.pop("sample_weight", None)
    split = kwargs.pop("validation_split", 0.0) or 0.0
    n = num_samples(x) or 0
    if split and kwargs.get("validation_data") is None:
        # Keras's rule: the last fraction, before any shuffling.
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
    batch_size = kwargs.pop("batch_size", None) or 32
    if kwargs.get("validation_data") is not None:
        kwargs.setdefault("validation_batch_size", batch_size)
    kwargs["shuffle"] = False  # the stream is ordered already (and Keras warns about shuffle=True on datasets)
    from keras_repro.shuffle import ArrayStream, order_summary

    arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
    if y is None and sample_weight is None:
        arrays = (x,)
    stream = ArrayStream(arrays, batch_size, shuffle, seed)
    steps = kwargs.get("steps_per_epoch") or stream.batches_per_epoch
    kwargs["steps_per_epoch"] = steps
    start = int(kwargs.get("initial_epoch", 0)) * steps + skip  # skip: batches of a resumed epoch already trained
    if steps == stream.batches_per_epoch:
        callback.order_source = lambda epoch: order_summary(stream.order(epoch), epoch)
    return stream.dataset(start), None, kwargs, f"keras_repro: a new order per epoch from (seed, epoch), shuffle={shuffle!r}"
