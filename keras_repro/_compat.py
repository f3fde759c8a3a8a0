"""The one room for TensorFlow/Keras internals.

Every private attribute, `keras.src...` or `tensorflow.python...` name keras_repro uses is reached
through one accessor here, so that a TF/Keras upgrade that moves one fails in one place with one clear
error (`CompatError`: the symbol, the versions tested, the fix) and one fast canary test
(`tests/test_compat.py`) instead of an AttributeError in the middle of a fit, or worse, a silent loss of
bit-identity. Where a public API does the same, use it instead of adding an accessor.

Each accessor looks its internal up through `internal(symbol, get)`, which turns the ImportError /
AttributeError of a moved internal into a `CompatError`; only the lookup goes through it, so an error
raised by the internal itself keeps its own type. TensorFlow and Keras are imported inside the accessors:
importing this module imports neither.

Example:
    >>> from keras_repro import _compat
    >>> _compat.TESTED_WITH
    'TensorFlow 2.21 / Keras 3.15'
"""

from __future__ import annotations

import importlib
import random
from typing import Any, Callable, TypeVar

from keras_repro.errors import CompatError

TESTED_WITH = "TensorFlow 2.21 / Keras 3.15"

_T = TypeVar("_T")


def internal(symbol: str, get: Callable[[], _T]) -> _T:
    """Returns `get()`; an ImportError/AttributeError/KeyError/TypeError becomes a `CompatError` naming `symbol`.

    Example:
        >>> internal("math.pi", lambda: __import__("math").pi) > 3
        True
        >>> internal("math.no_such_thing", lambda: __import__("math").no_such_thing)
        Traceback (most recent call last):
        ...
        keras_repro.errors.CompatError: keras_repro needs the TensorFlow/Keras internal `math.no_such_thing`, ...
    """
    try:
        return get()
    except (ImportError, AttributeError, KeyError, TypeError) as e:
        raise CompatError(
            f"keras_repro needs the TensorFlow/Keras internal `{symbol}`, which this installation does not "
            f"have ({type(e).__name__}: {e}). keras_repro was tested with {TESTED_WITH}. Fix: install the "
            "tested versions (pip install 'tensorflow-cpu==2.21.*'), or report the versions you use."
        ) from e


def _module(name: str) -> Any:
    return internal(name, lambda: importlib.import_module(name))


# Accessors ---------------------------------------------------------------------------------------
# One function per internal, named after what it gives, each through `internal(...)`.

# TF's eager context (runtime start, op seeds) -----------------------------------------------------


def _eager_context() -> Any:
    context = _module("tensorflow.python.eager.context")
    return internal("tensorflow.python.eager.context.context", lambda: context.context())


def tf_runtime_started() -> bool:
    """Whether TF's eager runtime started (`context()._context_handle`); TF has no public getter.

    Importing TF does not start it, nor does `tf.config.list_physical_devices`; the first op does
    (docs/tf-notes.md).
    """
    ctx = _eager_context()
    return internal("tensorflow.python.eager.context.Context._context_handle", lambda: ctx._context_handle) is not None


def tf_eager_op_seed_rng() -> random.Random | None:
    """The `random.Random` from which TF's eager context derives the op seeds of unseeded eager random
    ops (`context()._rng`); None until a global seed is set.

    TF creates `_rng` in `Context._set_global_seed` (what `tf.random.set_seed` calls) and not before, so
    its absence means "no seed yet"; the setter's absence means TF changed: a `CompatError`.
    """
    ctx = _eager_context()
    internal("tensorflow.python.eager.context.Context._set_global_seed", lambda: ctx._set_global_seed)
    return getattr(ctx, "_rng", None)


# TF build and config ------------------------------------------------------------------------------


def onednn_enabled() -> bool:
    """Whether oneDNN ops are really on in this process (`_pywrap_util_port.IsMklEnabled()`)."""
    port = _module("tensorflow.python.util._pywrap_util_port")
    is_enabled = internal("tensorflow.python.util._pywrap_util_port.IsMklEnabled", lambda: port.IsMklEnabled)
    return bool(is_enabled())


def _tf_config() -> Any:
    return _module("tensorflow.python.framework.config")


def op_determinism_enabled() -> bool:
    """Whether TF op determinism is on; TF exports only the setter (`tf.config.experimental.enable_...`)."""
    config = _tf_config()
    getter = internal("tensorflow.python.framework.config.is_op_determinism_enabled",
                      lambda: config.is_op_determinism_enabled)
    return bool(getter())


def disable_op_determinism() -> None:
    """Switches TF op determinism off again (no public API does)."""
    config = _tf_config()
    internal("tensorflow.python.framework.config.disable_op_determinism", lambda: config.disable_op_determinism)()


# Global random generators -------------------------------------------------------------------------


def _stateful_random_ops() -> Any:
    return _module("tensorflow.python.ops.stateful_random_ops")


def tf_global_generator() -> Any:
    """TF's global `tf.random.Generator` if one was made, else None.

    The public `tf.random.get_global_generator()` creates one when there is none (and raises under op
    determinism), so it cannot tell whether one exists.
    """
    ops = _stateful_random_ops()
    return internal("tensorflow.python.ops.stateful_random_ops.global_generator", lambda: ops.global_generator)


def clear_tf_global_generator() -> None:
    """Forgets TF's global `tf.random.Generator` (as in a process that never made one)."""
    ops = _stateful_random_ops()
    internal("tensorflow.python.ops.stateful_random_ops.global_generator", lambda: ops.global_generator)
    ops.global_generator = None


def keras_global_seed_generator(create: bool = False) -> Any:
    """Keras's global `SeedGenerator` (used by `keras.random.*` calls without a seed), or None if it does
    not exist yet; `create=True` creates it as Keras does on first use."""
    seed_generator = _module("keras.src.random.seed_generator")
    if create:
        return internal("keras.src.random.seed_generator.global_seed_generator",
                        lambda: seed_generator.global_seed_generator)()
    global_state = _module("keras.src.backend.common.global_state")
    key = internal("keras.src.random.seed_generator.GLOBAL_SEED_GENERATOR", lambda: seed_generator.GLOBAL_SEED_GENERATOR)
    get = internal("keras.src.backend.common.global_state.get_global_attribute", lambda: global_state.get_global_attribute)
    return get(key)


# Keras models -------------------------------------------------------------------------------------


def flatten_layers(model: Any) -> list[Any]:
    """The model and every layer nested in it, each once (`Layer._flatten_layers`).

    Keras 3 has no public recursive walk: `Model.layers` lists the top level only, and a plain `Layer`
    has no `layers` at all. Raises `CompatError` rather than falling back to the top level: a nested
    layer's `tf.random.Generator` left out of a checkpoint would make a resume silently lose bit-identity.
    """
    walk = internal("keras.layers.Layer._flatten_layers", lambda: model._flatten_layers)
    return list(walk(include_self=True, recursive=True))


def symbolic_build(model: Any, data_batch: Any) -> None:
    """Builds the model's metrics and optimizer from an element spec (Keras's `Trainer._symbolic_build`).

    Errors of the build itself (a model that cannot be built from a spec) keep their type.
    """
    build = internal("keras.src.trainers.trainer.Trainer._symbolic_build", lambda: model._symbolic_build)
    build(data_batch=data_batch)


# Keras under a multi-worker MultiWorkerMirroredStrategy (keras-team/keras#20585) -----------------


def keras_maybe_symbolic_build(model: Any) -> Callable[..., Any]:
    """The class's `Model._maybe_symbolic_build(iterator=None, data_batch=None)` (unbound; call it with
    the model first), which Keras's TF trainer calls at the start of `fit`."""
    return internal("keras.src.backend.tensorflow.trainer.TensorFlowTrainer._maybe_symbolic_build",
                    lambda: type(model)._maybe_symbolic_build)


def override_keras_maybe_symbolic_build(model: Any, replacement: Callable[..., Any]) -> bool:
    """Makes `model` (this instance only) use `replacement` as its `_maybe_symbolic_build`; False when
    the instance has its own already (overridden before)."""
    keras_maybe_symbolic_build(model)
    if "_maybe_symbolic_build" in vars(model):
        return False
    model._maybe_symbolic_build = replacement
    return True


def keras_tf_trainer() -> Any:
    """Keras's TF trainer module, whose module-level `reduce_per_replica(values, strategy, reduction)`
    reduces the logs of a distributed step (`keras.src.backend.tensorflow.trainer`)."""
    trainer = _module("keras.src.backend.tensorflow.trainer")
    internal("keras.src.backend.tensorflow.trainer.reduce_per_replica", lambda: trainer.reduce_per_replica)
    return trainer


# --- resume ---
_MODEL_CHECKPOINT_COUNTERS = ("_batches_seen_since_last_saving", "_last_batch_seen")


def model_checkpoint_counters(callback: Any, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """`keras.callbacks.ModelCheckpoint`'s batch counters for `save_freq=N` (private in Keras 3.15).

    With `values`, sets them first (a resume); returns the current values either way.

    Example:
        >>> model_checkpoint_counters(keras.callbacks.ModelCheckpoint("m.keras"))   # doctest: +SKIP
        {'_batches_seen_since_last_saving': 0, '_last_batch_seen': None}
    """

    def get() -> dict[str, Any]:
        for name, value in (values or {}).items():
            if name not in _MODEL_CHECKPOINT_COUNTERS:
                raise KeyError(name)
            getattr(callback, name)  # must exist already: never invent an attribute Keras does not read
            setattr(callback, name, value)
        return {name: getattr(callback, name) for name in _MODEL_CHECKPOINT_COUNTERS}

    return internal("keras.callbacks.ModelCheckpoint._batches_seen_since_last_saving/_last_batch_seen", get)

# --- locate ---
def dataset_chain(dataset: Any, limit: int = 12) -> list[str]:
    """The op names of a tf.data pipeline, last transformation first: ['MapDataset', 'TensorSliceDataset'].

    Reads `DatasetV2._inputs()` (private); used to name a data source in `keras-repro check --locate`.
    """

    def walk() -> list[str]:
        names, current = [], [dataset]
        while current and len(names) < limit:
            ds = current[0]
            names.append(type(ds).__name__.lstrip("_"))
            current = list(ds._inputs())
        return names

    return internal("tf.data.Dataset._inputs", walk)
