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

import dataclasses
import logging
import numbers
import os
import types
from typing import Any, Mapping

from keras_repro import runtime
from keras_repro.data import fingerprint
from keras_repro.errors import InvalidPolicyError, PolicyConflictError, ReproducibilityError, ResumeError
from keras_repro.feeding import InputFeed, feed_inputs
from keras_repro.policy import Policy, resolve
from keras_repro.record_writer import RunWriter, default_run_dir

__all__ = ["FitCall", "fit"]

logger = logging.getLogger("keras_repro")

# model.fit arguments that describe data rather than how to train; not copied into record["fit"].
_DATA_ARGS = ("x", "y", "sample_weight", "validation_data", "callbacks")


@dataclasses.dataclass(frozen=True)
class FitCall:
    """One `keras_repro.fit` call, resolved: the policy in force and every argument that is not data.

    Attributes:
        policy: the policy this call asked for (after flags and environment defaults).
        effective: the policy the process runs under (configured by this call or before it).
        applied: what configuring the process did (`runtime.apply_policy`), the record's `applied` base.
        was_configured: the process was configured before this call.
        fit_kwargs: the user's `model.fit` keyword arguments, read-only.
        run_dir, resume, hyperparameters, strategy, checkpoint_every_steps, checkpoint_keep: as passed.
    """

    policy: Policy
    effective: Policy
    applied: Mapping[str, Any]
    was_configured: bool
    fit_kwargs: Mapping[str, Any]
    run_dir: str | os.PathLike[str] | None = None
    resume: Any = None
    hyperparameters: Mapping[str, Any] | None = None
    strategy: Any = None
    checkpoint_every_steps: int | None = None
    checkpoint_keep: int = 2

    @property
    def mode(self) -> str:
        return self.effective.mode

    @property
    def seed(self) -> int | None:
        """The run seed: this call's, else the process's."""
        return self.policy.seed if self.policy.seed is not None else self.effective.seed

    @property
    def seeded(self) -> bool:
        return self.effective.mode != "off"

    def record_policy(self) -> dict[str, Any]:
        """The record's `policy` section."""
        return {**self.policy.as_dict(), "seed": self.seed, "mode": self.effective.mode, "threads": self.effective.threads}

    def record_fit_args(self) -> dict[str, Any]:
        """The record's `fit` section: every argument but the data, with Keras's defaults filled in."""
        recorded = {k: v for k, v in self.fit_kwargs.items() if k not in _DATA_ARGS}
        for key, default in (("batch_size", None), ("epochs", 1), ("shuffle", True), ("validation_split", 0.0),
                             ("initial_epoch", 0)):
            recorded.setdefault(key, default)
        recorded["callbacks"] = [type(c).__name__ for c in user_callbacks(self.fit_kwargs.get("callbacks"))]
        return recorded


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
    epoch's order once a seed is set.) `shuffle=False` and datasets are passed through unchanged. Keras
    takes the same steps as in `model.fit` (its `steps_per_epoch` and `steps_per_execution` rules).

    The steps: `resolve_call` applies the policy (before Keras or TF is imported), `_build_model` seeds
    and builds, `_record_header` and `_plan_resume` prepare the record and the resume, `feed_inputs`
    decides what Keras iterates (`feeding.InputFeed`), `_fit_arguments` adds the callbacks.

    Raises:
        InvalidPolicyError, TooLateError, PolicyConflictError: see `configure`.
        ReproducibilityError: the builder did not return a Keras model, or arguments conflict.
    """
    call = resolve_call(seed, mode, threads, fit_kwargs, run_dir=run_dir, resume=resume,
                        hyperparameters=hyperparameters, strategy=strategy,
                        checkpoint_every_steps=checkpoint_every_steps, checkpoint_keep=checkpoint_keep)
    model, placement, warnings = _build_model(call, model_or_builder)  # Keras is imported from here on
    data = _fingerprints(x, y, fit_kwargs)
    writer_args = _record_header(call, placement, warnings)
    plan = _plan_resume(call, RunWriter(**writer_args), model, data, placement)
    if plan is not None:
        writer_args["extra"]["resumed_from"] = plan.resumed_from
    writer = RunWriter(**writer_args)
    writer.start()  # the record exists from here on: a fit that fails on its inputs says so too
    try:
        feed = feed_inputs(x, y, {k: v for k, v in fit_kwargs.items() if k != "callbacks"}, seed=call.seed,
                           mode=call.mode, model=model, plan=plan, placement=placement)
        writer.set_applied("shuffle", feed.shuffle)
        kwargs = _fit_arguments(call, writer, feed, plan, model, placement, data, source=x)
        history = _keras_fit(model)(feed.x, feed.y, **kwargs)
    except KeyboardInterrupt:
        writer.finish("interrupted", "KeyboardInterrupt")
        raise
    except BaseException as e:
        writer.finish("failed", e)
        raise
    writer.finish("completed")  # no-op when on_train_end already completed it
    history.run = writer.record
    return history


def resolve_call(seed: int | None, mode: str | None, threads: int | None, fit_kwargs: Mapping[str, Any],
                 **options: Any) -> FitCall:
    """Checks the arguments and applies the policy to the process, before anything imports Keras or TF.

    (TF fixes some settings, such as oneDNN, when it is first imported: docs/tf-notes.md.)
    """
    policy, sources = resolve(seed, mode, threads, flag_values=runtime._flag_values())
    _check_checkpoint_args(options.get("resume"), options.get("checkpoint_every_steps"), options.get("checkpoint_keep", 2))
    _check_fit_kwargs(fit_kwargs)
    was_configured = runtime.configured_policy() is not None
    applied = _ensure_policy(policy, sources)
    effective = runtime.configured_policy()
    assert effective is not None
    return FitCall(policy, effective, applied, was_configured, types.MappingProxyType(dict(fit_kwargs)), **options)


def _build_model(call: FitCall, model_or_builder: Any) -> tuple[Any, Any, list[str]]:
    """Seeds, finds the strategy, builds the model under it; returns (model, placement, record warnings)."""
    import keras

    from keras_repro.distribution import Placement

    if call.seeded:
        runtime.seed_everything(call.seed)  # right before building: Keras draws layer seeds from `random`
    placement = Placement.find(model_or_builder, call.strategy)
    strategy_warnings = placement.check(call.mode)  # refuse before building anything
    with placement.scope():
        model = _materialise(model_or_builder, keras)
    adopted = placement.adopt(model, call.mode)
    if adopted.strategy is not placement.strategy:  # the builder entered another strategy's scope itself
        strategy_warnings = adopted.check(call.mode)
    new = list(strategy_warnings)
    if call.seeded and not callable_builder(model_or_builder, keras) and not call.was_configured and model.built:
        new.append(
            "the model was built before keras_repro seeded this process, so its initial weights are not "
            "reproducible; pass a builder function (keras_repro.fit(build_model, ...)) or call "
            "keras_repro.configure() before building it"
        )
    if call.policy.seed is not None and call.effective.seed != call.policy.seed:
        new.append(f"this fit reseeded with seed={call.policy.seed} (the process was configured with seed={call.effective.seed})")
    for message in new:
        logger.warning("keras_repro: %s", message)
    return model, adopted, [*call.applied.get("warnings", []), *new]


def _fingerprints(x: Any, y: Any, fit_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "x": fingerprint(x),
        "y": fingerprint(y),
        "sample_weight": fingerprint(fit_kwargs.get("sample_weight")),
        "validation": fingerprint(fit_kwargs.get("validation_data")),
        "order": None,
    }


def _record_header(call: FitCall, placement: Any, warnings: list[str]) -> dict[str, Any]:
    """The `RunWriter` arguments: where the record goes and what it says before training."""
    extra: dict[str, Any] = {}
    announce = True
    if placement.distributed:
        extra["distribution"] = placement.describe(call.seed if call.seeded else None)
        announce = placement.layout()["is_chief"]  # `keras-repro check` compares the chief's record
    return {
        "run_dir": placement.run_dir(default_run_dir(call.run_dir)),  # non-chief workers: run_dir/workers/<task>
        "policy": call.record_policy(),
        "applied": {**call.applied, "seed": call.seed if call.seeded else None, "warnings": warnings},
        "fit_args": call.record_fit_args(),
        "extra": extra,
        "announce": announce,
    }


def _fit_arguments(call: FitCall, writer: RunWriter, feed: InputFeed, plan: Any, model: Any, placement: Any,
                   data: Mapping[str, Any], source: Any = None) -> dict[str, Any]:
    """The keyword arguments of the `model.fit` call: the feed's, and the callbacks around the user's."""
    from keras_repro.callback import ReproCallback

    record = ReproCallback(hyperparameters=call.hyperparameters, writer=writer, data=data,
                           order_source=feed.order_source, dataset_tap=feed.tap,
                           resumed=plan.checkpoint.record if plan is not None else None, source=source)
    callbacks = [*user_callbacks(call.fit_kwargs.get("callbacks")), record]
    if feed.rewind is not None:
        callbacks.insert(0, _rewind_callback(feed.rewind))
    kwargs = {**feed.kwargs, "callbacks": callbacks}
    if call.seeded:
        from keras_repro.resume import with_checkpoints

        every = call.checkpoint_every_steps if feed.positioned else None  # mid-epoch only where data can start
        with placement.model_scope():  # it builds optimizer variables: under the model's strategy
            with_checkpoints(kwargs, record, model, plan, every, call.checkpoint_keep, feed.x)
    return kwargs


def user_callbacks(value: Any) -> list[Any]:
    """The user's `callbacks=` as Keras reads it: None, one Callback, a (nested) list, or a CallbackList."""
    if value is None:
        return []
    inner = getattr(value, "callbacks", None)  # a keras.callbacks.CallbackList
    if isinstance(inner, list):
        return list(inner)
    if isinstance(value, (list, tuple)):
        return [c for item in value for c in user_callbacks(item)]
    return [value]


def _rewind_callback(rewind: Any) -> Any:
    """A callback that calls `rewind()` when training begins (after Keras's own look at the data)."""
    import keras

    class RewindInput(keras.callbacks.Callback):
        def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
            rewind()

    return RewindInput()


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


def _keras_fit(model: Any) -> Any:
    """Keras's own `fit` of `model`, reached once: never back into an autolog-patched `Model.fit` or into a
    subclass's overriding `fit` that already ran (keras_repro/autolog.py); without autolog, `model.fit`."""
    from keras_repro.autolog import keras_fit

    return keras_fit(model)


def _plan_resume(call: FitCall, header: RunWriter, model: Any, data: Any, placement: Any) -> Any:
    """The checkpoint to continue from (None for a fresh start); raises ResumeError on a mismatch.

    Under a multi-worker strategy every worker takes the newest checkpoint all of them hold."""
    if call.resume in (None, False):
        return None
    if call.mode == "off":
        raise ResumeError(
            "resume= needs a reproducible run, but mode is 'off' (nothing seeded, nothing checkpointed). "
            "Fix: use mode 'deterministic' or 'bitwise' for the run and its resume."
        )
    from keras_repro.resume import plan_resume, provisional_record

    provisional = provisional_record(header, model, data, call.hyperparameters)
    plan = plan_resume(call.resume, header.run_dir, provisional)
    if placement.distributed:
        from keras_repro.resume import agree_across_workers

        plan = agree_across_workers(plan, placement.strategy, call.resume)
    if plan is None:
        logger.warning("keras_repro: resume=True found no interrupted run in %s to resume; starting a new run", header.run_dir)
    else:
        logger.warning("keras_repro: resuming run %s at epoch %d, step %d", plan.record.run_id,
                       plan.checkpoint.epoch, plan.checkpoint.step_in_epoch)
        for message in plan.warnings:
            logger.warning("keras_repro: resume: %s", message)
    return plan


def callable_builder(obj: Any, keras: Any) -> bool:
    return callable(obj) and not isinstance(obj, keras.Model)


def _materialise(model_or_builder: Any, keras: Any) -> Any:
    from keras_repro.autolog import refuse_legacy_keras

    refuse_legacy_keras(model_or_builder)  # a tf_keras (Keras 2) model is callable: never call it as a builder
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
    # numbers.Integral: NumPy integers too (Keras takes them; a script may compute batch_size with NumPy).
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise InvalidPolicyError(f"Expected `batch_size` to be a positive integer. Received: batch_size={batch_size!r}.")
    split = kwargs.get("validation_split", 0.0)
    if not isinstance(split, (int, float)) or isinstance(split, bool) or not 0.0 <= split < 1.0:
        raise InvalidPolicyError(f"Expected `validation_split` in [0, 1). Received: validation_split={split!r}.")
