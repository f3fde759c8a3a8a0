"""`keras_repro.fit` under a `tf.distribute` strategy: what is refused, what each worker records.

A fit is distributed when the model was built under `strategy.scope()` (or `fit` runs inside one, or
`fit(..., strategy=s)` names one: then `fit` calls the builder under `s.scope()`). This module decides,
once per fit, everything distribution changes:

- Refusals. `ParameterServerStrategy` trains asynchronously (workers update the variables in the order
  their gradients arrive), which TensorFlow names as a source of nondeterminism that op determinism does
  not cover; it is refused in modes "deterministic" and "bitwise". `TPUStrategy` is refused in "bitwise"
  (a CPU-only mode). Everything else (`MirroredStrategy`, `MultiWorkerMirroredStrategy`,
  `OneDeviceStrategy`, `CentralStorageStrategy`) is synchronous and was measured bit-identical on CPU.
- Seeds. Every worker seeds its global RNGs (Python, NumPy, TF, Keras) with the *run* seed: model
  construction and DATA-sharded input pipelines must be identical on all workers (a worker that shuffled
  differently would drop and repeat samples). Randomness that must differ per worker takes
  `worker_seed(seed, worker_index)`, derived with NumPy's `SeedSequence`; the record stores it.
- Records. Every worker writes its own record; the chief's goes to `run_dir` as for any run, worker
  `i`'s to `run_dir/workers/<task type>-<task index>/`. Only the chief announces its record to
  `keras-repro check`. The record's `distribution` section holds the strategy class, replica count,
  worker index and the cluster layout as task counts: never addresses or ports, which change per launch.
- Keras 3 workarounds. Keras 3.15's `fit` fails under a multi-worker `MultiWorkerMirroredStrategy`
  (keras-team/keras#20585, tensorflow/tensorflow#72388) in two places; `fit` fixes both for the model it
  trains (see `_fix_keras_multi_worker`), and the record lists them.

Example:
    >>> placement = Placement.find(build_model, strategy=None)     # doctest: +SKIP
    >>> placement.check("bitwise")                                 # doctest: +SKIP
    >>> with placement.scope():                                    # doctest: +SKIP
    ...     model = build_model()
    >>> placement = placement.adopt(model, "bitwise")              # doctest: +SKIP
    >>> placement.describe(seed=42)["replicas"]                    # doctest: +SKIP
    2
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from typing import Any, Callable, TypeVar

import numpy as np

from keras_repro import _compat
from keras_repro.errors import ReproducibilityError

__all__ = ["Placement", "worker_seed", "cluster_layout", "check_strategy", "strategy_name"]

T = TypeVar("T")

WORKERS_DIR = "workers"  # non-chief records: <run_dir>/workers/<task type>-<task index>/<run_id>/
_TRAINING_JOBS = ("chief", "worker")  # "ps" and "evaluator" tasks hold no replica of the model


def worker_seed(seed: int, worker_index: int) -> int:
    """A 32-bit seed for one worker's own randomness, derived from the run seed and the worker index.

    Equivalent to `numpy.random.SeedSequence(seed).spawn(n)[worker_index].generate_state(1)[0]`: the
    workers' seeds are independent streams of one run seed, the same on every rerun, and never
    depend on `hash()` (salted per process) or on ports.

    Example:
        >>> worker_seed(42, 0) == worker_seed(42, 0), worker_seed(42, 0) == worker_seed(42, 1)
        (True, False)
    """
    sequence = np.random.SeedSequence(int(seed), spawn_key=(int(worker_index),))
    return int(sequence.generate_state(1, np.uint32)[0])


def strategy_name(strategy: Any) -> str:
    """The public name of a strategy's class: "MultiWorkerMirroredStrategy" for TF's
    `CollectiveAllReduceStrategy`, "ParameterServerStrategy" for `ParameterServerStrategyV2`.

    The name under which `tf.distribute` (else `tf.distribute.experimental`) exports the class; the
    class's own name for anything else.
    """
    tf = sys.modules.get("tensorflow")
    distribute = getattr(tf, "distribute", None)
    for namespace in (distribute, getattr(distribute, "experimental", None)):
        for name in sorted(dir(namespace)) if namespace is not None else ():
            if name.endswith("Strategy") and getattr(namespace, name, None) is type(strategy):
                return name
    return type(strategy).__name__


def _mro_names(strategy: Any) -> list[str]:
    return [c.__name__ for c in type(strategy).__mro__]


def is_default_strategy(strategy: Any) -> bool:
    """TF's no-op strategy (what `tf.distribute.get_strategy()` returns outside any scope), or None."""
    if strategy is None:
        return True
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(strategy, tf.distribute.Strategy):
        return False
    return strategy is outside_scope(tf.distribute.get_strategy)


def outside_scope(factory: Callable[[], T]) -> T:
    """Calls `factory` outside any strategy scope (e.g. for variables that must stay local).

    Scopes are per thread, so a short-lived thread sees none; the caller's scope stays untouched.
    """
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return factory()
    result: list[Any] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            result.append(factory())
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=call, name="keras_repro-outside-scope")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def check_strategy(strategy: Any, mode: str) -> list[str]:
    """Raises `ReproducibilityError` for a strategy `mode` cannot make reproducible; returns warnings.

    Example:
        >>> check_strategy(tf.distribute.MirroredStrategy(), "bitwise")    # doctest: +SKIP
        []
    """
    if is_default_strategy(strategy):
        return []
    names = _mro_names(strategy)
    name = strategy_name(strategy)
    if any("ParameterServerStrategy" in n for n in names):
        problem = (
            f"{name} trains asynchronously: each worker applies its updates to the parameter servers in the "
            "order they arrive, so two runs with the same seed take different paths. TensorFlow lists it as a "
            "source of nondeterminism that op determinism does not cover"
        )
        if mode in ("deterministic", "bitwise"):
            raise ReproducibilityError(
                f"Mode {mode!r} cannot be kept under {name}: {problem}. "
                "Fix: train with tf.distribute.MultiWorkerMirroredStrategy (synchronous, reproducible), or "
                "pass mode='seeded' to seed the run without a promise of equal bits."
            )
        return [f"{problem}; mode {mode!r} records the run but cannot make it repeatable"] if mode != "off" else []
    if any("TPUStrategy" in n for n in names):
        if mode == "bitwise":
            raise ReproducibilityError(
                f"Mode 'bitwise' runs on the CPU only, but the model is placed with {name}. "
                "Fix: use mode='deterministic' on TPUs, or a CPU strategy for bitwise runs."
            )
        if mode == "deterministic":
            return [f"keras_repro has not measured {name}: TensorFlow's op determinism makes no claim for TPUs; "
                    "check reruns with `keras-repro check`"]
    return []


def cluster_layout(strategy: Any) -> dict[str, Any]:
    """The cluster as task counts and this process's place in it; never addresses or ports.

    `worker_index` is the global index among the training tasks: the chief (when the cluster has a
    "chief" job) is 0 and worker i is i + 1; without a chief, worker i is i. A single process is worker 0
    of 1 (task type None).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster: dict[str, Any] = {}
    task_type = task_index = None
    if resolver is not None:
        try:
            cluster = resolver.cluster_spec().as_dict()
        except Exception:
            cluster = {}
        task_type = getattr(resolver, "task_type", None)
        task_index = getattr(resolver, "task_id", None)
    counts = {job: len(tasks) for job, tasks in sorted(cluster.items())}
    chiefs = counts.get("chief", 0)
    num_workers = sum(counts.get(job, 0) for job in _TRAINING_JOBS) or 1
    if task_type == "chief":
        worker_index = 0
    elif task_type == "worker":
        worker_index = chiefs + int(task_index or 0)
    else:
        worker_index = 0
    return {
        "task_type": task_type,
        "task_index": None if task_index is None else int(task_index),
        "worker_index": worker_index,
        "num_workers": num_workers,
        "is_chief": worker_index == 0 and task_type in (None, "chief", "worker"),
        "cluster": counts or None,
    }


def _multi_worker(strategy: Any) -> bool:
    """A MultiWorkerMirroredStrategy over more than one worker (where Keras 3.15's `fit` fails)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and cluster_layout(strategy)["num_workers"] > 1


def _local_device(name: str) -> str:
    """'/job:worker/replica:0/task:1/device:CPU:0' -> '/device:CPU:0' (the task is recorded apart)."""
    return "/device:" + name.split("/device:", 1)[1] if "/device:" in name else name


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one fit trains: a strategy (None when not distributed) and the cluster around it."""

    strategy: Any = None
    explicit: bool = False  # named by fit(strategy=...): the builder is called under its scope
    workarounds: tuple[str, ...] = ()

    @classmethod
    def find(cls, model_or_builder: Any, strategy: Any = None) -> Placement:
        """The strategy `fit` will train under, as far as it is known before the model is built."""
        import tensorflow as tf

        active = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        if strategy is not None:
            if active is not None and active is not strategy:
                raise ReproducibilityError(
                    f"fit(strategy={strategy_name(strategy)}) was called inside the scope of another strategy "
                    f"({strategy_name(active)}). Fix: pass strategy= or call fit inside `with strategy.scope()`, "
                    "not both with different strategies."
                )
            return cls(strategy, explicit=True)
        if active is not None:
            return cls(active)
        return cls(_model_strategy(model_or_builder))

    @property
    def distributed(self) -> bool:
        return not is_default_strategy(self.strategy)

    def check(self, mode: str) -> list[str]:
        return check_strategy(self.strategy, mode)

    def scope(self) -> Any:
        """The context the builder runs in: `strategy.scope()` when fit was given strategy=."""
        if self.explicit and self.distributed:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def model_scope(self) -> Any:
        """The strategy's scope, for code that may create variables of the model (its optimizer's, say)
        outside `model.fit`; a no-op when not distributed or already inside a scope."""
        import tensorflow as tf

        if self.distributed and not tf.distribute.has_strategy():
            return self.strategy.scope()
        return contextlib.nullcontext()

    def adopt(self, model: Any, mode: str) -> Placement:
        """The placement of the built model (a builder may have entered a scope itself); fixes Keras.

        It does not `check` the strategy: the caller checks the placement it ends with, once."""
        placement = self
        model_strategy = _model_strategy(model)
        if is_default_strategy(model_strategy):
            if self.explicit and self.distributed:
                raise ReproducibilityError(
                    f"fit(strategy={strategy_name(self.strategy)}) got a model that was not created under "
                    "strategy.scope(), so its variables are not distributed. Fix: pass a builder that creates the "
                    "model when called (fit calls it under the scope), or build the model under the scope yourself."
                )
        elif model_strategy is not self.strategy:
            if self.distributed:
                raise ReproducibilityError(
                    f"The model was built under {strategy_name(model_strategy)}, but fit runs under "
                    f"{strategy_name(self.strategy)}. Fix: build and fit the model under the same strategy."
                )
            placement = Placement(model_strategy)  # `fit` checks it (Placement.check) once it is final
        if placement.distributed and _multi_worker(placement.strategy):
            placement = dataclasses.replace(placement, workarounds=tuple(_fix_keras_multi_worker(model)))
        return placement

    def layout(self) -> dict[str, Any]:
        return cluster_layout(self.strategy) if self.distributed else cluster_layout(None)

    def run_dir(self, run_dir: str) -> str:
        """Where this worker's record goes: `run_dir` for the chief, `run_dir/workers/<task>` otherwise."""
        layout = self.layout()
        if layout["is_chief"]:
            return run_dir
        return os.path.join(run_dir, WORKERS_DIR, f"{layout['task_type']}-{layout['task_index']}")

    def describe(self, seed: int | None) -> dict[str, Any] | None:
        """The record's `distribution` section (None when the fit is not distributed)."""
        if not self.distributed:
            return None
        strategy = self.strategy
        devices = list(getattr(strategy.extended, "worker_devices", ()) or ())
        layout = self.layout()
        return {
            "strategy": strategy_name(strategy),
            "strategy_class": f"{type(strategy).__module__}.{type(strategy).__qualname__}",
            "replicas": int(strategy.num_replicas_in_sync),
            "local_replicas": len(devices),
            "local_devices": [_local_device(d) for d in devices],
            **layout,
            "seeds": "run seed on every worker; worker_seed for per-worker randomness",
            "worker_seed": None if seed is None else worker_seed(seed, layout["worker_index"]),
            "workarounds": list(self.workarounds),
        }

    def outside(self, factory: Callable[[], T]) -> T:
        """Calls `factory` outside any strategy scope (e.g. for variables that must stay local).

        Scopes are per thread, so a short-lived thread sees none; the caller's scope stays untouched.
        """
        return outside_scope(factory)


def _model_strategy(model: Any) -> Any:
    """The strategy a Keras 3 model was created under (Keras's TF trainer keeps it), or None.

    `Model.distribute_strategy` falls back to the current scope's strategy for a model created outside
    any scope: read outside every scope, that fallback is TF's default strategy.
    """
    strategy = outside_scope(lambda: getattr(model, "distribute_strategy", None))
    return None if is_default_strategy(strategy) else strategy


# Keras 3 under a multi-worker MultiWorkerMirroredStrategy ---------------------------------------------

_FIX_SYMBOLIC_BUILD = (
    "keras-team/keras#20585: Model._maybe_symbolic_build all-reduces a whole input batch across workers "
    "to learn its shapes, which fails; this model reads the shapes from its local replica instead"
)
_FIX_REDUCE = (
    "keras-team/keras#20585: reduce_per_replica averaged scalar logs across workers with axis=0, which "
    "fails; keras_repro averages them over all replicas (axis=None), so every worker logs the global loss"
)


def _fix_keras_multi_worker(model: Any) -> list[str]:
    """Works around Keras 3's two multi-worker `fit` failures; returns the workarounds applied.

    Both fixes change only what would otherwise raise: the model's own `_maybe_symbolic_build` (this
    instance only), and Keras's `reduce_per_replica` for a multi-worker strategy (other strategies get
    Keras's function unchanged). If Keras moved these internals, `CompatError` says so.
    """
    keras_trainer = _compat.keras_tf_trainer()
    applied = []
    original_build = _compat.keras_maybe_symbolic_build(model)
    strategy = model.distribute_strategy

    def maybe_symbolic_build(iterator: Any = None, data_batch: Any = None) -> Any:
        if iterator is not None and data_batch is None:
            import tensorflow as tf

            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    batch,
                )
                break
        return original_build(model, data_batch=data_batch)

    if _compat.override_keras_maybe_symbolic_build(model, maybe_symbolic_build):
        applied.append(_FIX_SYMBOLIC_BUILD)
    if _install_reduce_fix(keras_trainer):
        applied.append(_FIX_REDUCE)
    return applied


_REDUCE_LOCK = threading.Lock()


def _install_reduce_fix(keras_trainer: Any) -> bool:
    original = keras_trainer.reduce_per_replica
    if getattr(original, "_keras_repro_fix", False):
        return True
    with _REDUCE_LOCK:
        original = keras_trainer.reduce_per_replica
        if getattr(original, "_keras_repro_fix", False):
            return True

        def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
            if reduction in ("auto", "mean") and _multi_worker(strategy):
                import tensorflow as tf

                return tf.nest.map_structure(
                    lambda v: None if v is None else strategy.reduce("MEAN", v, axis=None), values
                )
            return original(values, strategy, reduction)

        reduce_per_replica._keras_repro_fix = True  # type: ignore[attr-defined]
        reduce_per_replica.__wrapped__ = original  # type: ignore[attr-defined]
        keras_trainer.reduce_per_replica = reduce_per_replica
    return True
