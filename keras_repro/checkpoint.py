"""Checkpoints inside a run directory: all the state the next training step depends on, written atomically.

`keras_repro.fit` writes one at every epoch end (and every `checkpoint_every_steps` steps if asked) into
`<run_dir>/<run_id>/checkpoints/epoch-EEEEEE-step-SSSSSSSS/`, keeping the newest `checkpoint_keep`
(default 2). A checkpoint holds what Keras's own formats leave out (see docs/resume.md):

- `arrays.npz`: every variable of `model.variables` (weights, BatchNorm statistics and the
  `SeedGenerator` state of each Dropout and random layer, which neither `.keras` files nor
  `tf.train.Checkpoint(model, optimizer)` save), every `optimizer.variables` entry (iterations, learning
  rate, slots), the metric accumulators (for a resume in the middle of an epoch), the state of Keras's
  global SeedGenerator, of TF's global `tf.random.Generator` and of `tf.random.Generator`s held by layers,
  and NumPy's global MT19937 key;
- `state.json`: the position (epoch, step within it), Python's `random` state, the rest of NumPy's
  global state, TF's eager op-seed state, a description of every array (to refuse a mismatched model) and
  the run record as it was at that moment (the metric history the resumed record continues).

Both files are written into a hidden temporary folder, synced, and the folder is renamed into place: a
`kill -9` at any moment leaves the previous checkpoints intact and loadable.

Example:
    >>> ckpt = latest_checkpoint("runs/20261127-101500-3f2a9c")     # doctest: +SKIP
    >>> ckpt.epoch, ckpt.step_in_epoch                               # doctest: +SKIP
    (6, 0)
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import numpy as np

from keras_repro import _compat
from keras_repro.errors import ResumeError
from keras_repro.record import to_jsonable, utc_now

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_SCHEMA",
    "Checkpoint",
    "capture_state",
    "restore_state",
    "write_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SCHEMA = "keras_repro.checkpoint/1"
STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
# Test hook, not API (tests/test_resume.py): "N" makes the N-th checkpoint write of the process die
# (os._exit(77)) between writing the temporary folder and renaming it into place.
_TEST_DIE_IN_WRITE_ENV = "KERAS_REPRO_TEST_DIE_IN_CHECKPOINT_WRITE"
_NAME = re.compile(r"^epoch-(\d+)-step-(\d+)$")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk: where training continues and the state to continue with.

    Attributes:
        path: the checkpoint folder.
        epoch: the Keras epoch index training continues in.
        step_in_epoch: batches (executions with `steps_per_execution > 1`) of that epoch already trained.
        state: the content of state.json.
    """

    path: Path
    epoch: int
    step_in_epoch: int
    state: dict[str, Any]

    @property
    def record(self) -> dict[str, Any]:
        """The run record as it was when the checkpoint was written."""
        return self.state["record"]

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path / ARRAYS_FILE, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


# --- what the state is ----------------------------------------------------------------------------


def _groups(model: Any) -> dict[str, list[Any]]:
    """The variables to save, by group, each variable once (first group wins)."""
    seen: set[int] = set()
    groups: dict[str, list[Any]] = {}
    optimizer = getattr(model, "optimizer", None)
    candidates = {
        "model": list(model.variables),
        "optimizer": list(optimizer.variables) if optimizer is not None else [],
        "metrics": list(getattr(model, "metrics_variables", [])),
        "keras_global": _keras_global_generator_variables(),
    }
    for name, variables in candidates.items():
        kept = []
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                kept.append(v)
        groups[name] = kept
    return groups


def _keras_global_generator_variables() -> list[Any]:
    generator = _compat.keras_global_seed_generator()
    return [generator.state] if generator is not None else []


def _tf_generators(model: Any) -> dict[str, Any]:
    """TF's global `tf.random.Generator` (if one was made) and `tf.random.Generator`s held by layers."""
    import tensorflow as tf

    found: dict[str, Any] = {}
    global_generator = _compat.tf_global_generator()
    if global_generator is not None:
        found["global"] = global_generator
    for i, layer in enumerate(_compat.flatten_layers(model)):
        for attr, value in sorted(vars(layer).items()):
            if isinstance(value, tf.random.Generator):
                found[f"layer{i}.{attr}"] = value
    return found


def capture_state(model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads everything the next step depends on: (arrays for arrays.npz, JSON-able description)."""
    arrays: dict[str, np.ndarray] = {}
    described: list[dict[str, Any]] = []
    for group, variables in _groups(model).items():
        for i, v in enumerate(variables):
            key = f"{group}/{i}"
            arrays[key] = np.asarray(v.numpy())
            arrays.update(_replica_arrays(model, key, v))
            described.append({"key": key, "path": str(getattr(v, "path", v.name)), "dtype": str(arrays[key].dtype),
                              "shape": list(arrays[key].shape)})
    generators = {}
    for name, generator in _tf_generators(model).items():
        arrays[f"tf_generator/{name}"] = np.asarray(generator.state.numpy())
        generators[name] = int(generator.algorithm)
    np_state = np.random.get_state()
    arrays["numpy_random/key"] = np.asarray(np_state[1])
    meta = {
        "variables": described,
        "tf_generators": generators,
        "python_random": to_jsonable(random.getstate()),
        "numpy_random": {"algorithm": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                         "cached_gaussian": float(np_state[4])},
        "tf_eager_op_seeds": _tf_eager_rng_state(),
    }
    return arrays, meta


def _tf_eager_rng_state() -> Any:
    """TF's eager context derives op seeds of unseeded eager random ops from a `random.Random`."""
    rng = _compat.tf_eager_op_seed_rng()
    return to_jsonable(rng.getstate()) if rng is not None else None


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def restore_state(model: Any, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                  groups: tuple[str, ...] = ("model", "optimizer", "keras_global")) -> None:
    """Assigns the saved variables of `groups` and, with "model", the process-wide RNG states.

    Raises:
        ResumeError: the model's variables do not match the checkpoint's (count, dtype or shape).
    """
    current = _groups(model)
    if "keras_global" in groups and not current["keras_global"] and any(
        d["key"].startswith("keras_global/") for d in meta["variables"]
    ):
        _compat.keras_global_seed_generator(create=True)  # created lazily: create it to restore it
        current["keras_global"] = _keras_global_generator_variables()
    for group in groups:
        saved = [d for d in meta["variables"] if d["key"].split("/")[0] == group]
        variables = current.get(group, [])
        if group == "keras_global" and not saved:
            continue  # Keras's global SeedGenerator did not exist yet at the checkpoint
        if len(saved) != len(variables):
            raise ResumeError(
                f"The checkpoint holds {len(saved)} {group} variables, the model has {len(variables)}. "
                "Fix: resume with the same model builder and compile arguments as the interrupted run."
            )
        for d, v in zip(saved, variables, strict=True):
            value = arrays[d["key"]]
            if list(value.shape) != [int(s) for s in v.shape] or str(value.dtype) != str(np.dtype(_dtype(v))):
                raise ResumeError(
                    f"Checkpoint variable {d['path']} is {value.dtype}{list(value.shape)}, the model's {v.path} is "
                    f"{_dtype(v)}{list(v.shape)}. Fix: resume with the same model as the interrupted run."
                )
            v.assign(value)
            _assign_replica_arrays(model, d["key"], v, arrays)
    if "model" in groups:
        _restore_process_rngs(model, arrays, meta)


REPLICA_PREFIX = "replicas/"


def _replica_parts(model: Any, v: Any) -> list[Any]:
    """The per-replica components of a distributed variable (several only under a tf.distribute strategy)."""
    strategy = getattr(model, "distribute_strategy", None)
    value = getattr(v, "value", None)
    if strategy is None or int(getattr(strategy, "num_replicas_in_sync", 1)) < 2 or value is None:
        return []
    import tensorflow as tf

    if not isinstance(value, tf.distribute.DistributedValues):
        return []
    return list(strategy.experimental_local_results(value))


def _replica_arrays(model: Any, key: str, v: Any) -> dict[str, np.ndarray]:
    """Each replica's own value of a variable whose replicas differ: a metric accumulator under a strategy.

    Such a (sync-on-read) variable reads as the sum over replicas; assigning that sum back splits it
    evenly, and the next steps then round their per-replica sums differently (measured under
    MirroredStrategy: a step loss 1 ulp off after a mid-epoch resume). Mirrored variables are equal on
    every replica and are not repeated.
    """
    parts = [np.asarray(p.numpy()) for p in _replica_parts(model, v)]
    if len(parts) < 2 or all(np.array_equal(parts[0], p) for p in parts[1:]):
        return {}
    return {f"{REPLICA_PREFIX}{key}/{i}": p for i, p in enumerate(parts)}


def _assign_replica_arrays(model: Any, key: str, v: Any, arrays: Mapping[str, np.ndarray]) -> None:
    if f"{REPLICA_PREFIX}{key}/0" not in arrays:
        return
    parts = _replica_parts(model, v)
    if not all(f"{REPLICA_PREFIX}{key}/{i}" in arrays for i in range(len(parts))):
        raise ResumeError(f"Checkpoint variable {key} was saved for another number of replicas than the "
                          f"{len(parts)} of this run. Fix: resume with the same tf.distribute layout.")
    for i, part in enumerate(parts):
        part.assign(arrays[f"{REPLICA_PREFIX}{key}/{i}"])


def _dtype(v: Any) -> str:
    return str(getattr(v, "dtype", "float32"))


def _restore_process_rngs(model: Any, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    import tensorflow as tf

    present = _tf_generators(model)
    for name, algorithm in meta.get("tf_generators", {}).items():
        state = arrays[f"tf_generator/{name}"]
        if name in present:
            present[name].reset(state)
        elif name == "global":
            tf.random.set_global_generator(tf.random.Generator.from_state(state, algorithm))
        else:
            raise ResumeError(f"The checkpoint has a tf.random.Generator {name!r} the model does not have.")
    if "global" in present and "global" not in meta.get("tf_generators", {}):
        _compat.clear_tf_global_generator()  # it did not exist yet at the checkpoint
    random.setstate(_as_tuple(meta["python_random"]))
    nps = meta["numpy_random"]
    np.random.set_state((nps["algorithm"], arrays["numpy_random/key"], nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    eager = meta.get("tf_eager_op_seeds")
    if eager is not None:
        rng = _compat.tf_eager_op_seed_rng()
        if rng is not None:
            rng.setstate(_as_tuple(eager))


# --- on disk --------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


_WRITES = {"count": 0}  # checkpoint writes in this process, for the test hook


def write_checkpoint(run_directory: str | os.PathLike[str], epoch: int, step_in_epoch: int,
                     arrays: Mapping[str, np.ndarray], state: Mapping[str, Any], keep: int = 2) -> Path:
    """Writes a checkpoint atomically (temporary folder, fsync, rename) and prunes all but the newest `keep`."""
    base = Path(run_directory) / CHECKPOINT_DIR
    base.mkdir(exist_ok=True)
    name = f"epoch-{epoch:06d}-step-{step_in_epoch:08d}"
    tmp = base / f".tmp-{name}-{secrets.token_hex(3)}"
    tmp.mkdir()
    with open(tmp / ARRAYS_FILE, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    text = json.dumps(to_jsonable({"schema": CHECKPOINT_SCHEMA, "written_at": utc_now(), "epoch": epoch,
                                   "step_in_epoch": step_in_epoch, **state}), allow_nan=True)
    with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    _WRITES["count"] += 1
    if os.environ.get(_TEST_DIE_IN_WRITE_ENV) == str(_WRITES["count"]):
        os._exit(77)  # test hook: a crash between the temporary write and the rename
    final = base / name
    if final.exists():  # the same position again (a resumed run re-reaching it): replace it
        _remove(final, base)
    os.rename(tmp, final)
    _fsync_dir(base)
    _prune(base, keep)
    return final


def _remove(path: Path, base: Path) -> None:
    trash = base / f".trash-{path.name}-{secrets.token_hex(3)}"
    os.rename(path, trash)  # atomic: a half-deleted folder is never mistaken for a checkpoint
    shutil.rmtree(trash, ignore_errors=True)


def _prune(base: Path, keep: int) -> None:
    for old in list_checkpoints(base.parent)[keep:]:
        _remove(old, base)
    for leftover in base.glob(".t*"):  # temporary folders of writes that crashed (.tmp-*, .trash-*)
        if leftover.is_dir() and leftover.name.startswith((".tmp-", ".trash-")):
            if time.time() - leftover.stat().st_mtime > 1.0:
                shutil.rmtree(leftover, ignore_errors=True)


def list_checkpoints(run_directory: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint folders of a run, newest (furthest in training) first."""
    base = Path(run_directory) / CHECKPOINT_DIR
    if not base.is_dir():
        return []
    found = []
    for path in base.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir():
            found.append(((int(match.group(1)), int(match.group(2))), path))
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Reads a checkpoint folder; raises ResumeError when it is incomplete or unreadable."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("schema") != CHECKPOINT_SCHEMA:
            raise ValueError(f"schema {state.get('schema')!r}, expected {CHECKPOINT_SCHEMA!r}")
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as data:
            missing = [d["key"] for d in state["variables"] if d["key"] not in data.files]
        if missing:
            raise ValueError(f"arrays missing: {missing[:3]}")
        return Checkpoint(path, int(state["epoch"]), int(state["step_in_epoch"]), state)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResumeError(f"Checkpoint {str(path)!r} is unreadable ({type(e).__name__}: {e}).") from None


def latest_checkpoint(run_directory: str | os.PathLike[str]) -> Checkpoint | None:
    """The newest checkpoint of a run that loads, or None when it has none."""
    for path in list_checkpoints(run_directory):
        try:
            return load_checkpoint(path)
        except ResumeError:
            continue
    return None


# --- the callbacks fit() adds ---------------------------------------------------------------------


class Checkpointer(keras.callbacks.Callback):
    """Writes a checkpoint at every epoch end (and every `every_steps` steps); placed last by `fit`.

    Args:
        record_callback: the run's `ReproCallback` (its record so far goes into each checkpoint).
        every_steps: also checkpoint after every this many steps (global count), or None.
        keep: how many checkpoints to keep.
    """

    def __init__(self, record_callback: Any, every_steps: int | None = None, keep: int = 2) -> None:
        super().__init__()
        self.record_callback = record_callback
        self.every_steps = every_steps
        self.keep = keep
        self.epoch = 0
        self.step_in_epoch = 0
        self.callback_states: Any = None  # keras_repro.callback_state.CallbackStates: the callbacks' state

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epoch = epoch
        self.step_in_epoch = self.record_callback.steps_in_epoch  # non-zero in a resumed epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.step_in_epoch += 1  # calls of the train function (executions), as the record counts steps
        steps = (self.params or {}).get("steps")  # batches per epoch; `batch` is the last batch just trained
        if not self.every_steps or not steps or batch + 1 >= steps:
            return  # the epoch-end checkpoint follows
        done = self.epoch * steps + batch + 1
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if done // self.every_steps != (done - per_call) // self.every_steps:  # crossed a multiple of every_steps
            self.save(self.epoch, self.step_in_epoch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.save(epoch + 1, 0)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """A completed run cannot be resumed: its checkpoints go (the record stays)."""
        record = self.record_callback.record
        if record is None or record.path is None or record.status != "completed":
            return
        base = record.path.parent / CHECKPOINT_DIR
        if base.is_dir():
            trash = record.path.parent / f".trash-{CHECKPOINT_DIR}-{secrets.token_hex(3)}"
            os.rename(base, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def save(self, epoch: int, step_in_epoch: int) -> Path | None:
        record = self.record_callback.record
        if record is None or record.path is None:
            return None
        if getattr(self.model, "stop_training", False):
            # A callback (EarlyStopping, TerminateOnNaN) ends training here. A checkpoint past this point would
            # let a resume train on; without it, a resume redoes the last stretch and stops at the same point.
            return None
        arrays, meta = capture_state(self.model)
        meta["steps_per_epoch"] = (self.params or {}).get("steps")
        meta["record"] = record.to_dict()
        if self.callback_states is not None:  # the user's callbacks' state, after all of them ran
            self.callback_states.capture(arrays, meta)
        path = write_checkpoint(record.path.parent, epoch, step_in_epoch, arrays, meta, self.keep)
        return path


class Restorer(keras.callbacks.Callback):
    """Restores a checkpoint when training begins; placed first by `fit`, so user callbacks see restored state.

    In the middle of an epoch, the first `step_in_epoch` steps of the resumed epoch are replayed without
    training: their batches are read and dropped (so Keras's epoch iterator, its data end and a
    pipeline's random state advance as in the run that never stopped), and `ResumingCallbackList`
    hides them from callbacks.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.replay_left = checkpoint.step_in_epoch
        self.last_was_replay = False
        self._arrays: dict[str, np.ndarray] | None = checkpoint.arrays()

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        assert self._arrays is not None
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:  # Keras builds it in the first step: too late
            optimizer.build(self.model.trainable_variables)
        restore_state(self.model, self._arrays, self.checkpoint.state)
        if self.replay_left:
            self._wrap_train_function()

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._arrays is not None and self.checkpoint.step_in_epoch:
            # Keras reset the metric accumulators just before this: give back the epoch's running sums.
            restore_state(self.model, self._arrays, self.checkpoint.state, groups=("metrics",))
        self._arrays = None

    def _wrap_train_function(self) -> None:
        model = self.model
        real: Callable[[Any], Any] = model.train_function

        per_execution = int(getattr(model, "steps_per_execution", 1) or 1)

        def replay(iterator: Any) -> Any:
            if self.replay_left > 0:
                self.replay_left -= 1
                self.last_was_replay = True
                _drop_batches(iterator, per_execution)  # the data of the step, as training read it
                return {}
            self.last_was_replay = False
            model.train_function = real
            return real(iterator)

        model.train_function = replay


def _drop_batches(iterator: Any, count: int) -> None:
    """Reads and drops up to `count` batches (fewer at the data's end, as a partial execution does)."""
    import tensorflow as tf

    for _ in range(count):
        try:
            next(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            return


class ResumingCallbackList(keras.callbacks.CallbackList):
    """A CallbackList that hides the replayed steps of a mid-epoch resume from every callback."""

    def __init__(self, restorer: Restorer, *args: Any, skip_epoch_begin: frozenset[int] = frozenset(),
                 **kwargs: Any) -> None:
        self._restorer = restorer
        self._skip_epoch_begin = skip_epoch_begin  # ids of callbacks whose restored state holds it already
        super().__init__(*args, **kwargs)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        skip, self._skip_epoch_begin = self._skip_epoch_begin, frozenset()  # the resumed epoch only
        for callback in self.callbacks:
            if id(callback) not in skip:
                callback.on_epoch_begin(epoch, dict(logs or {}))

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._restorer.replay_left == 0:
            super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self._restorer.last_was_replay:
            super().on_train_batch_end(batch, logs)
        self._restorer.last_was_replay = False
