"""`keras_repro.autolog`: every `keras.Model.fit` in the process runs through `keras_repro.fit`.

For a script you cannot (or would rather not) change: one call first thing, or no call at all through
`keras-repro run -- python train.py`, which makes this call in the child before the script's code.

    >>> import keras_repro
    >>> keras_repro.autolog(seed=3, mode="bitwise")   # doctest: +SKIP
    >>> import keras                                  # doctest: +SKIP
    >>> model.fit(x, y, epochs=3)                     # doctest: +SKIP

`import keras` applies the policy and patches `fit`; the fit is recorded in `runs/<run_id>/run.json`.

What it does, in order:
1. the policy (`seed`, `mode`, `threads`, with the same rules and errors as `configure`) is applied the
   moment TensorFlow is imported, or now if it already is. Before that, Python's `random` is seeded now
   and NumPy when it is imported, so data drawn before `import tensorflow` repeats too. Mode "off"
   applies nothing: fits are only recorded.
2. `keras.Model.fit` (the same class as `tf.keras.Model` in TF >= 2.16) is replaced, once Keras is
   imported, by a function that binds the call's arguments to Keras's signature and hands them,
   unchanged, to `keras_repro.fit(model, x, y, **fit_kwargs)`, which calls Keras's own `fit` and
   returns its `History`. A fit that already carries a `ReproCallback`, or that comes from inside
   `keras_repro.fit`, goes straight to Keras: nothing is recorded twice.
3. a process in which TensorFlow ran ops but no `fit` did (a custom training loop) writes a record
   saying so at exit (`no_fit`), so that `keras-repro check` can say why it has nothing to compare.

`autolog(disable=True)` puts Keras's `fit` back. A policy already applied stays: TensorFlow's thread
pools and op determinism cannot be undone in a running process.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
import os
import sys
import threading
from typing import Any, Callable

from keras_repro import import_hooks
from keras_repro.errors import PolicyConflictError, ReproducibilityError
from keras_repro.policy import Policy, draw_seed, resolve

__all__ = ["autolog", "active_policy", "keras_fit", "refuse_legacy_keras"]

logger = logging.getLogger("keras_repro")

_MARK = "__keras_repro_autolog__"
_ABSENT = object()

# Models whose fit is being handled by keras_repro.fit because the patched fit routed it there
# (their overriding `fit`, if any, already ran), and models whose next fit must reach Keras untouched
# (keras_repro.fit calls it). Context variables: threads and tasks each see their own.
_ROUTED: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("keras_repro_routed", default=())
_PASS: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("keras_repro_pass", default=())


@dataclasses.dataclass(frozen=True)
class _Settings:
    """What `autolog` was asked for, after `resolve` (explicit > absl flags > KERAS_REPRO_* > default)."""

    policy: Policy
    sources: tuple[tuple[str, str], ...]
    run_dir: str | None

    def given(self, key: str) -> bool:
        return dict(self.sources).get(key, "default") not in ("default", "drawn")

    def describe(self) -> str:
        p = self.policy
        isa = f", isa={p.isa!r}" if p.isa is not None else ""
        return f"mode={p.mode!r}, seed={p.seed}, threads={p.threads}{isa}, run_dir={self.run_dir!r}"


@dataclasses.dataclass
class _Patch:
    cls: type
    previous: Any  # what cls.__dict__["fit"] was (_ABSENT when fit was inherited)
    original: Callable[..., Any]  # the fit Keras would have called


class _State:
    """autolog's process-wide state: the settings, the patched classes, how many fits it saw."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.settings: _Settings | None = None
        self.patches: list[_Patch] = []
        self.fits = 0
        self.started_at: str | None = None
        self.exit_hook = False


_STATE = _State()


def autolog(
    seed: int | None = None,
    mode: str | None = None,
    threads: int | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    disable: bool = False,
    *,
    isa: str | None = None,
) -> dict[str, Any] | None:
    """Routes every `keras.Model.fit` of this process through `keras_repro.fit`, under one policy.

    Args:
        seed, mode, threads: the policy, as for `keras_repro.configure` (arguments not given come from
            absl flags, then `KERAS_REPRO_SEED/MODE/THREADS`, then the defaults). Mode "off" changes
            nothing in the process and only records.
        run_dir: where the records go (default `--repro_dir`, `$KERAS_REPRO_DIR`, `runs`).
        disable: put Keras's own `fit` back (the policy already applied stays).
        isa: the CPU instruction set bitwise pins (see `keras_repro.configure`; default from
            `--repro_isa`, `KERAS_REPRO_ISA`, then AVX2 in bitwise mode).

    Returns:
        What was applied (as `configure` returns it) when TensorFlow is already imported; None when the
        policy waits for `import tensorflow` (or for mode "off", which applies nothing).

    Raises:
        InvalidPolicyError: a bad seed, mode or thread count.
        TooLateError: TensorFlow already started with settings this mode can no longer change.
        PolicyConflictError: autolog is already active with another policy or run_dir.
        ReproducibilityError: the environment contradicts the mode (TF_ENABLE_ONEDNN_OPTS=1 under bitwise).

    Example:
        >>> import keras_repro
        >>> keras_repro.autolog(seed=3, mode="bitwise")   # doctest: +SKIP
        >>> keras_repro.autolog(disable=True)             # doctest: +SKIP
    """
    if disable:
        _disable()
        return None
    from keras_repro import runtime

    policy, sources = resolve(seed, mode, threads, isa=isa, flag_values=runtime._flag_values())
    settings = _Settings(policy, tuple(sorted(sources.items())), os.fspath(run_dir) if run_dir is not None else None)
    with _STATE.lock:
        current = _STATE.settings
        if current is not None:
            _check_same(current, settings)
            return runtime.configured_applied()
        applied = _apply_now_or_later(settings)
        if applied is None and settings.policy.seed is None and settings.policy.mode != "off":
            settings = _with_drawn_seed(settings)
        _STATE.settings = settings
        _STATE.started_at = _now()
        _STATE.fits = 0
        if applied is None and settings.policy.mode != "off":
            _seed_before_tensorflow(settings.policy.seed)
            import_hooks.when_imported("tensorflow", _on_tensorflow)
        import_hooks.when_imported("keras", _on_keras)
        import_hooks.when_imported("tf_keras", _on_tf_keras)
        if not _STATE.exit_hook:
            import atexit

            atexit.register(_at_exit)
            _STATE.exit_hook = True
        return applied


def _apply_now_or_later(settings: _Settings) -> dict[str, Any] | None:
    """Applies the policy if TensorFlow is imported already (TooLateError etc. as configure); else
    checks now what the environment can contradict and leaves the rest for `import tensorflow`."""
    from keras_repro import runtime

    if settings.policy.mode == "off":
        if settings.policy.threads is not None:
            logger.warning("keras_repro: mode 'off' changes nothing: threads=%d is not applied", settings.policy.threads)
        return None
    if runtime.tf_imported():
        return runtime.apply_policy(settings.policy, dict(settings.sources))
    if settings.policy.mode == "bitwise":
        runtime._disable_onednn()  # refuses TF_ENABLE_ONEDNN_OPTS=1; sets 0 before TensorFlow reads it
    return None


def _with_drawn_seed(settings: _Settings) -> _Settings:
    seed = draw_seed()
    logger.warning(
        "keras_repro: no seed given; using seed=%d. Pass seed=%d (or keras-repro run --seed %d) to repeat this run.",
        seed, seed, seed,
    )
    policy = dataclasses.replace(settings.policy, seed=seed)
    sources = dict(settings.sources, seed="drawn")
    return _Settings(policy, tuple(sorted(sources.items())), settings.run_dir)


def _check_same(current: _Settings, asked: _Settings) -> None:
    """A second autolog is a no-op when it asks nothing else; what it does ask must match."""
    differs = [
        key for key in ("seed", "mode", "threads", "isa")
        if asked.given(key) and getattr(asked.policy, key) != getattr(current.policy, key)
    ]
    if asked.run_dir is not None and asked.run_dir != current.run_dir:
        differs.append("run_dir")
    if differs:
        raise PolicyConflictError(
            f"keras_repro.autolog is already active with {current.describe()}; this call asks {asked.describe()} "
            f"(differs in {', '.join(differs)}). Expected the same policy, or no arguments. "
            "Fix: call autolog once, first thing, with the policy you want, or keras_repro.autolog(disable=True) "
            "before asking another one (a policy TensorFlow already runs under cannot change)."
        )


def _disable() -> None:
    with _STATE.lock:
        for patch in reversed(_STATE.patches):
            if patch.previous is _ABSENT:
                if getattr(patch.cls.__dict__.get("fit"), _MARK, False):
                    delattr(patch.cls, "fit")
            else:
                patch.cls.fit = patch.previous
        _STATE.patches = []
        _STATE.settings = None
        for callback in (_on_tensorflow, _on_keras, _on_tf_keras, _on_numpy):
            import_hooks.cancel(callback)


def active_policy() -> Policy | None:
    """The policy autolog was asked for (with the seed it drew), or None when autolog is off."""
    settings = _STATE.settings
    return settings.policy if settings is not None else None


# --- import-time actions ---------------------------------------------------------------------------


def _seed_before_tensorflow(seed: int | None) -> None:
    """Seeds Python's `random` now and NumPy when imported: data made before `import tensorflow`."""
    if seed is None:
        return
    import random

    random.seed(seed)
    import_hooks.when_imported("numpy", _on_numpy)


def _on_numpy(numpy: Any) -> None:
    settings = _STATE.settings
    if settings is not None and settings.policy.seed is not None and settings.policy.mode != "off":
        numpy.random.seed(settings.policy.seed)


def _on_tensorflow(_tf: Any) -> None:
    """TensorFlow (and with it Keras) finished importing: apply the policy before any op runs."""
    from keras_repro import runtime

    settings = _STATE.settings
    if settings is None or runtime.policy_being_applied():
        return  # a configure() of the script's own imported TensorFlow: its policy is being applied
    runtime.apply_policy(settings.policy, dict(settings.sources))


def _on_keras(keras: Any) -> None:
    with _STATE.lock:
        if _STATE.settings is not None:
            _patch(keras.Model)


def _on_tf_keras(tf_keras: Any) -> None:
    with _STATE.lock:
        model_cls = getattr(tf_keras, "Model", None)
        if _STATE.settings is not None and isinstance(model_cls, type):
            _patch(model_cls, route=_refuse)


def _patch(cls: type, route: Callable[..., Any] | None = None) -> None:
    if getattr(cls.__dict__.get("fit"), _MARK, False):
        return
    original = cls.fit  # resolved through the MRO: Keras's TensorFlowTrainer.fit for keras.Model
    previous = cls.__dict__.get("fit", _ABSENT)
    route = route or _route

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        return route(original, self, args, kwargs)

    setattr(fit, _MARK, True)
    cls.fit = fit  # type: ignore[attr-defined]
    _STATE.patches.append(_Patch(cls, previous, original))


# --- the patched fit -------------------------------------------------------------------------------


def _route(original: Callable[..., Any], model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A call of the patched `Model.fit`: to keras_repro.fit, or straight to Keras when already handled."""
    settings = _STATE.settings
    if settings is None:
        return original(model, *args, **kwargs)
    _STATE.fits += 1
    if _holds(_PASS.get(), model) or _holds(_ROUTED.get(), model):
        return original(model, *args, **kwargs)  # the inner call of keras_repro.fit
    try:
        arguments = bind_fit_arguments(original, model, args, kwargs)
    except TypeError:
        return original(model, *args, **kwargs)  # let Keras say what is wrong, in its words
    if _has_repro_callback(arguments.get("callbacks")):
        return original(model, *args, **kwargs)  # recorded by the user's own ReproCallback
    from keras_repro import runtime
    from keras_repro.training import fit as repro_fit

    policy: dict[str, Any] = {}
    if runtime.configured_policy() is None:  # mode off (applies nothing), or TF imported some other way
        policy = {"seed": settings.policy.seed, "mode": settings.policy.mode, "threads": settings.policy.threads}
    token = _ROUTED.set((*_ROUTED.get(), model))
    try:
        x, y = arguments.pop("x", None), arguments.pop("y", None)
        return repro_fit(model, x, y, run_dir=settings.run_dir, **policy, **arguments)
    finally:
        _ROUTED.reset(token)


def bind_fit_arguments(
    fit: Callable[..., Any], model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The arguments of a `fit(*args, **kwargs)` call by name, only those the caller gave.

    Positional arguments are named by Keras's signature (x, y, batch_size, epochs, verbose, callbacks,
    validation_split, validation_data, shuffle, class_weight, sample_weight, initial_epoch,
    steps_per_epoch, validation_steps, validation_batch_size, validation_freq); defaults are not
    filled in, so Keras sees exactly what the caller passed. Raises TypeError as the call would.

    Example:
        >>> def fit(self, x=None, y=None, batch_size=None, epochs=1): ...
        >>> bind_fit_arguments(fit, object(), ([1], [2], 8), {"epochs": 3})
        {'x': [1], 'y': [2], 'batch_size': 8, 'epochs': 3}
    """
    signature = _signature(fit)
    arguments = dict(signature.bind(model, *args, **kwargs).arguments)
    arguments.pop(next(iter(signature.parameters)), None)  # self
    return arguments


@functools.lru_cache(maxsize=8)
def _signature(fit: Callable[..., Any]) -> Any:
    import inspect  # here, not at module level: `import keras_repro` stays cheap

    return inspect.signature(fit)


def _holds(models: tuple[Any, ...], model: Any) -> bool:
    return any(m is model for m in models)


def _has_repro_callback(callbacks: Any) -> bool:
    module = sys.modules.get("keras_repro.callback")
    if module is None or callbacks is None:
        return False  # no ReproCallback can exist before its module is imported
    items = callbacks.callbacks if hasattr(callbacks, "callbacks") and not isinstance(callbacks, (list, tuple)) else callbacks
    if not isinstance(items, (list, tuple)):
        items = [items]
    return any(isinstance(c, module.ReproCallback) for c in items)


def keras_fit(model: Any) -> Callable[..., Any]:
    """The `fit` that `keras_repro.fit` calls on `model`: Keras's own, reached once.

    When the patched `fit` routed this model here, its class's overriding `fit` (if any) already ran,
    so Keras's is returned directly; otherwise `model.fit` (the user's override runs once), marked so
    that the patched `fit` passes it straight to Keras.

    Example:
        >>> history = keras_fit(model)(x, y, epochs=2)   # doctest: +SKIP
    """
    if _holds(_ROUTED.get(), model):
        for patch in _STATE.patches:
            if isinstance(model, patch.cls):
                return functools.partial(patch.original, model)

    def call(*args: Any, **kwargs: Any) -> Any:
        token = _PASS.set((*_PASS.get(), model))
        try:
            return model.fit(*args, **kwargs)
        finally:
            _PASS.reset(token)

    return call


def refuse_legacy_keras(model: Any) -> None:
    """Raises ReproducibilityError for a tf_keras (Keras 2) model; keras_repro handles Keras 3 only."""
    module = type(model).__module__ or ""
    if module.split(".")[0] == "tf_keras":
        raise ReproducibilityError(
            f"Expected a Keras 3 model. Received: a tf_keras (Keras 2) {type(model).__name__} from {module}, which "
            "keras_repro cannot record or make reproducible. Fix: build the model with Keras 3 (`import keras`, "
            "TF_USE_LEGACY_KERAS unset), or launch with `keras-repro run --no-autolog` to train it unrecorded."
        )


def _refuse(original: Callable[..., Any], model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _STATE.settings is None:
        return original(model, *args, **kwargs)
    _STATE.fits += 1
    refuse_legacy_keras(model)
    return original(model, *args, **kwargs)  # a Keras 3 subclass of tf_keras.Model cannot exist


# --- at exit ---------------------------------------------------------------------------------------


def _now() -> str:
    from keras_repro.record import utc_now

    return utc_now()


def _at_exit() -> None:
    """A process that ran TensorFlow ops but no fit (a custom loop) says so in a record."""
    settings = _STATE.settings
    if settings is None or _STATE.fits or "tensorflow" not in sys.modules:
        return
    try:
        from keras_repro import runtime

        if not runtime.runtime_started() or _multiprocessing_child():
            return
        from keras_repro.no_fit import write_no_fit_record

        write_no_fit_record(settings.run_dir, settings.policy, _STATE.started_at)
    except Exception as e:  # at exit: say it, never raise
        logger.warning("keras_repro: could not write the no-fit record: %s", e)


def _multiprocessing_child() -> bool:
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None
