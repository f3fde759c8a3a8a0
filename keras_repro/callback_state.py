"""The state of the user's callbacks in every checkpoint, restored on resume; the whole run's History.

A resumed run equals one that never stopped only if its callbacks continue where they were: Keras's
`EarlyStopping` must keep counting its patience, `ReduceLROnPlateau` its plateau, `ModelCheckpoint
(save_best_only=True)` must remember the best value it saved. Keras's own `BackupAndRestore` restores none
of it. `keras_repro.fit` puts a `CallbackStates` callback after every other one; the `Checkpointer` asks it
for the callbacks' state at every checkpoint (after all of the epoch's or step's callbacks ran), and on a
resume it gives the state back after every callback's `on_train_begin` (which resets Keras's built-ins).

What is saved, per callback (docs/resume.md has the table):
- Keras's built-ins with state: `EarlyStopping` (wait, best, best_epoch, stopped_epoch, best_weights as
  arrays), `ReduceLROnPlateau` (wait, cooldown_counter, best; the learning rate itself is an optimizer
  variable and in the checkpoint already), `ModelCheckpoint` (best; its `save_freq=N` batch counters),
  `CSVLogger` (the file's length: a resume cuts rows written after the checkpoint and appends).
- Keras's built-ins without state: `LearningRateScheduler` (a function of epoch and rate; the epoch is
  right because the resumed fit starts at the checkpoint's epoch), `TerminateOnNaN`, `RemoteMonitor`,
  `SwapEMAWeights`, `History` (rebuilt from the record: the returned History covers the whole run).
- Your callbacks: define `get_state() -> dict` and `set_state(state: dict) -> None`. The dict may hold
  JSON values (numbers, strings, booleans, None, lists, dicts with string keys) and NumPy arrays (saved in
  arrays.npz, bit for bit). Tuples come back as lists, NumPy scalars as Python numbers.
- `BackupAndRestore` works as in Keras, with a recorded warning (a run it continues is not bit-identical:
  it saves no RNG or callback state), and is refused together with keras_repro's `resume=` (its restore
  would undo or contradict keras_repro's). Any other callback that holds attributes and has no
  `get_state`/`set_state` gets a recorded warning naming it: a resume restarts it from scratch.

Example:
    >>> class Counter(keras.callbacks.Callback):                      # doctest: +SKIP
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.seen = 0
    ...     def on_train_batch_end(self, batch, logs=None):
    ...         self.seen += 1
    ...     def get_state(self):
    ...         return {"seen": self.seen}
    ...     def set_state(self, state):
    ...         self.seen = state["seen"]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from keras_repro.errors import ResumeError

__all__ = ["CallbackStates", "saver_for", "unsaved_warning", "backup_and_restore_message", "encode_state", "decode_state", "STATE_KEY"]

logger = logging.getLogger("keras_repro")

STATE_KEY = "callbacks"  # the state.json field; arrays go to arrays.npz under "callbacks/<i>/<n>"
_ARRAY = "__array__"
_BASE_ATTRIBUTES = frozenset({"_model", "model", "params", "validation_data"})


@dataclasses.dataclass(frozen=True)
class Saver:
    """How one kind of callback's state is read and given back.

    Attributes:
        kind: "keras" (a built-in keras_repro knows), "protocol" (get_state/set_state), "stateless".
        get: callback -> state (JSON values and NumPy arrays).
        set: (callback, state) -> None, called after every callback's on_train_begin.
        replays_epoch_begin: in a resume in the middle of an epoch, whether the callback gets that epoch's
            `on_epoch_begin` again. False where the saved state already holds its effect (protocol
            callbacks, LearningRateScheduler whose rate is in the optimizer's variables).
        prepare: (callback, state) -> None, called before training starts (CSVLogger's file).
    """

    kind: str
    get: Callable[[Any], dict[str, Any]]
    set: Callable[[Any, Mapping[str, Any]], None]
    replays_epoch_begin: bool = True
    prepare: Callable[[Any, Mapping[str, Any]], None] | None = None


def _nothing(_: Any) -> dict[str, Any]:
    return {}


def _ignore(_: Any, __: Mapping[str, Any]) -> None:
    return None


def _attributes(*names: str) -> tuple[Callable[[Any], dict[str, Any]], Callable[[Any, Mapping[str, Any]], None]]:
    def get(callback: Any) -> dict[str, Any]:
        return {name: getattr(callback, name, None) for name in names}

    def set_(callback: Any, state: Mapping[str, Any]) -> None:
        for name in names:
            setattr(callback, name, state[name])

    return get, set_


def _early_stopping() -> Saver:
    get_attrs, set_attrs = _attributes("wait", "stopped_epoch", "best", "best_epoch")

    def get(callback: Any) -> dict[str, Any]:
        weights = callback.best_weights
        return {**get_attrs(callback), "best_weights": None if weights is None else [np.asarray(w) for w in weights]}

    def set_(callback: Any, state: Mapping[str, Any]) -> None:
        set_attrs(callback, state)
        callback.best_weights = state["best_weights"]

    return Saver("keras", get, set_)


def _model_checkpoint() -> Saver:
    from keras_repro import _compat

    def get(callback: Any) -> dict[str, Any]:
        return {"best": callback.best, **_compat.model_checkpoint_counters(callback)}

    def set_(callback: Any, state: Mapping[str, Any]) -> None:
        callback.best = state["best"]
        _compat.model_checkpoint_counters(callback, {k: v for k, v in state.items() if k != "best"})

    return Saver("keras", get, set_)


def _csv_logger() -> Saver:
    """The file's length at the checkpoint; a resume cuts what was written after it and appends."""

    def get(callback: Any) -> dict[str, Any]:
        path = callback.filename
        return {"bytes": os.path.getsize(path) if os.path.exists(path) else None, "append": bool(callback.append)}

    def prepare(callback: Any, state: Mapping[str, Any]) -> None:
        size = state["bytes"]
        if size is not None and os.path.exists(callback.filename):
            with open(callback.filename, "r+b") as f:
                f.truncate(size)
        callback.append = size is not None  # continue the file instead of starting it again

    def set_(callback: Any, state: Mapping[str, Any]) -> None:
        callback.append = state["append"]  # as the user made it (on_train_begin already opened the file)

    return Saver("keras", get, set_, prepare=prepare)


def _builtin_savers() -> dict[type, Saver]:
    cbs = keras.callbacks
    rlrop_get, rlrop_set = _attributes("wait", "cooldown_counter", "best")
    stateless = Saver("stateless", _nothing, _ignore)
    savers = {
        cbs.EarlyStopping: _early_stopping(),
        cbs.ReduceLROnPlateau: Saver("keras", rlrop_get, rlrop_set),
        cbs.ModelCheckpoint: _model_checkpoint(),
        cbs.CSVLogger: _csv_logger(),
        cbs.LearningRateScheduler: Saver("stateless", _nothing, _ignore, replays_epoch_begin=False),
        cbs.TerminateOnNaN: stateless,
        cbs.RemoteMonitor: stateless,
        cbs.History: stateless,
        cbs.ProgbarLogger: stateless,
    }
    if hasattr(cbs, "SwapEMAWeights"):
        savers[cbs.SwapEMAWeights] = stateless
    return savers


def _protocol(callback: Any) -> bool:
    return callable(getattr(callback, "get_state", None)) and callable(getattr(callback, "set_state", None))


def saver_for(callback: Any) -> Saver | None:
    """How `callback`'s state is saved; None when keras_repro cannot save it (see `unsaved_warning`).

    Example:
        >>> saver_for(keras.callbacks.EarlyStopping()).kind               # doctest: +SKIP
        'keras'
    """
    if _protocol(callback):
        return Saver("protocol", lambda c: c.get_state(), lambda c, s: c.set_state(s), replays_epoch_begin=False)
    for cls in type(callback).__mro__:
        saver = _builtin_savers().get(cls)
        if saver is not None:
            return saver
    if not set(vars(callback)) - _BASE_ATTRIBUTES:
        return Saver("stateless", _nothing, _ignore)
    return None


def backup_and_restore_message(callback: Any, resuming: bool) -> str:
    """Why Keras's `BackupAndRestore` and keras_repro's resume do not mix (a warning, or with `resuming`
    the text of the refusal)."""
    where = f"BackupAndRestore(backup_dir={getattr(callback, 'backup_dir', '?')!r})"
    if resuming:
        return (
            f"keras.callbacks.BackupAndRestore cannot be combined with keras_repro's resume=: on train begin "
            "it loads weights and the epoch from its own backup folder, which would undo or contradict keras_repro's "
            f"restore. Expected: no BackupAndRestore in a keras_repro.fit(resume=...). Received: {where}. Fix: "
            "remove it; keras_repro checkpoints every epoch (and every checkpoint_every_steps steps) and resume= "
            "continues the run bit for bit."
        )
    return (
        f"{where} restores weights and the epoch from its own backup, but saves neither the random-number states "
        "nor the callbacks' state: a run it continues is not bit-identical to one that never stopped (it works "
        "as in Keras); keras_repro.fit(..., resume=True) without it continues bit for bit"
    )


def unsaved_warning(callback: Any, index: int) -> str:
    """The recorded warning for a callback whose state keras_repro cannot save."""
    names = sorted(name for name in vars(callback) if name not in _BASE_ATTRIBUTES)
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return (
        f"callback {type(callback).__name__} (callbacks[{index}]) holds state ({shown}) that keras_repro cannot "
        "save: a resumed run restarts it from scratch, so what it does after a resume may differ from a run that "
        "never stopped. Fix: give it get_state() -> dict and set_state(state) methods (docs/resume.md)"
    )


# --- JSON and arrays ------------------------------------------------------------------------------


def encode_state(state: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replaces every NumPy array in `state` by a reference to `arrays[prefix/<n>]`; NumPy scalars by numbers.

    Example:
        >>> arrays = {}
        >>> encode_state({"w": [np.zeros(2)], "n": np.int64(3)}, "callbacks/0", arrays)
        {'w': [{'__array__': 'callbacks/0/0'}], 'n': 3}
    """
    if isinstance(state, np.ndarray) or (hasattr(state, "shape") and hasattr(state, "numpy")):
        key = f"{prefix}/{sum(1 for k in arrays if k.startswith(prefix + '/'))}"
        arrays[key] = np.asarray(state)
        return {_ARRAY: key}
    if isinstance(state, np.generic):
        return state.item()
    if isinstance(state, Mapping):
        return {str(k): encode_state(v, prefix, arrays) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [encode_state(v, prefix, arrays) for v in state]
    return state


def decode_state(state: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The inverse of `encode_state`."""
    if isinstance(state, Mapping):
        if set(state) == {_ARRAY}:
            return arrays[state[_ARRAY]]
        return {k: decode_state(v, arrays) for k, v in state.items()}
    if isinstance(state, list):
        return [decode_state(v, arrays) for v in state]
    return state


# --- the callback fit() adds ----------------------------------------------------------------------


def _keyed(callbacks: Sequence[Any]) -> list[tuple[str, Any]]:
    """(class name + occurrence, callback): how a saved state finds its callback again."""
    seen: dict[str, int] = {}
    keyed = []
    for callback in callbacks:
        name = type(callback).__name__
        keyed.append((f"{name}#{seen.get(name, 0)}", callback))
        seen[name] = seen.get(name, 0) + 1
    return keyed


class CallbackStates(keras.callbacks.Callback):
    """Saves the user's callbacks' state into every checkpoint and restores it on resume; placed last by `fit`.

    Args:
        callbacks: the callbacks of the fit (keras_repro's own are skipped).
        record_callback: the run's `ReproCallback`; warnings go into its record's `applied.warnings`.
        checkpoint: the checkpoint a resumed fit continues from, or None.

    Raises:
        ResumeError: a resume (`checkpoint` given) with a callback that cannot be combined with it
            (BackupAndRestore).

    Example:
        >>> states = CallbackStates([keras.callbacks.EarlyStopping()], repro_callback)   # doctest: +SKIP
        >>> arrays, meta = {}, {}
        >>> states.capture(arrays, meta)                                                   # doctest: +SKIP
        >>> meta["callbacks"][0]["state"]["wait"]                                          # doctest: +SKIP
        0
    """

    restore_enabled = True  # a test's negative control sets it False on the class: the resume must then differ

    def __init__(self, callbacks: Sequence[Any], record_callback: Any, checkpoint: Any = None) -> None:
        super().__init__()
        self.record_callback = record_callback
        self.checkpoint = checkpoint
        self.seconds: list[float] = []  # time per capture, for the measured cost
        self.last_bytes = 0  # bytes of the last capture (JSON + arrays)
        self.savers: list[tuple[str, int, Any, Saver]] = []
        for index, (key, callback) in enumerate(_keyed([c for c in callbacks if not _own(c)])):
            if isinstance(callback, keras.callbacks.BackupAndRestore):  # Keras's own resume: works, but not bitwise
                if checkpoint is not None:
                    raise ResumeError(backup_and_restore_message(callback, resuming=True))
                self._warn(backup_and_restore_message(callback, resuming=False))
                continue
            saver = saver_for(callback)
            if saver is None:
                self._warn(unsaved_warning(callback, index))
            else:
                self.savers.append((key, index, callback, saver))
        self._saved = {e["key"]: e for e in (checkpoint.state.get(STATE_KEY) or [])} if checkpoint else {}
        self._broken: set[str] = set()
        if checkpoint is not None:
            self._prepare()

    def _warn(self, message: str) -> None:
        applied = getattr(self.record_callback, "applied", None)
        warnings_ = applied.setdefault("warnings", []) if isinstance(applied, dict) else []
        if message not in warnings_:
            logger.warning("keras_repro: %s", message)
            warnings_.append(message)

    def _prepare(self) -> None:
        for key, _, callback, saver in self.savers:
            entry = self._saved.get(key)
            if entry is not None and saver.prepare is not None:
                saver.prepare(callback, entry["state"])

    def skip_epoch_begin(self) -> frozenset[int]:
        """ids of the callbacks whose restored state already holds the resumed epoch's `on_epoch_begin`."""
        if self.checkpoint is None or not self.checkpoint.step_in_epoch or not self.restore_enabled:
            return frozenset()
        return frozenset(id(c) for key, _, c, s in self.savers if not s.replays_epoch_begin and key in self._saved)

    # capture ---------------------------------------------------------------------------------------
    def capture(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Adds every saved callback's state to a checkpoint's (arrays, state.json) (Checkpointer.save)."""
        start = time.perf_counter()
        entries = []
        mine: dict[str, np.ndarray] = {}
        for key, index, callback, saver in self.savers:
            if key in self._broken:
                continue
            own: dict[str, np.ndarray] = {}
            try:
                state = encode_state(saver.get(callback), f"{STATE_KEY}/{index}", own)
                json.dumps(state, allow_nan=True)
            except Exception as e:  # a user's get_state failed or returned something JSON cannot hold
                self._broken.add(key)
                self._warn(f"callback {type(callback).__name__} (callbacks[{index}]): its state cannot be saved "
                           f"({type(e).__name__}: {e}); a resume restarts it from scratch. Fix: get_state() must "
                           "return a dict of JSON values and NumPy arrays (docs/resume.md)")
                continue
            mine.update(own)
            entries.append({"key": key, "index": index, "class": type(callback).__name__, "kind": saver.kind,
                            "state": state})
        arrays.update(mine)
        meta[STATE_KEY] = entries
        self.last_bytes = len(json.dumps(entries, allow_nan=True)) + sum(a.nbytes for a in mine.values())
        self.seconds.append(time.perf_counter() - start)

    # restore ---------------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """After every callback's on_train_begin (Keras's built-ins reset themselves there): give state back."""
        if self.checkpoint is None or not self.restore_enabled:
            return
        arrays = self.checkpoint.arrays()
        for key, index, callback, saver in self.savers:
            entry = self._saved.get(key)
            if entry is None:
                if saver.kind != "stateless":
                    self._warn(f"callback {type(callback).__name__} (callbacks[{index}]) has no state in checkpoint "
                               f"{self.checkpoint.path.name} (it was not in the interrupted run's callbacks): it "
                               "starts from scratch")
                continue
            try:
                saver.set(callback, decode_state(entry["state"], arrays))
            except Exception as e:
                raise ResumeError(
                    f"Restoring the state of callback {type(callback).__name__} (callbacks[{index}]) from checkpoint "
                    f"{self.checkpoint.path} failed ({type(e).__name__}: {e}). Expected set_state to accept what "
                    "get_state returned. Fix: make set_state(get_state()) work, or remove the callback."
                ) from e

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """A resumed fit returns the whole run's History: the recorded epochs before the checkpoint first."""
        if self.checkpoint is None:
            return
        history = getattr(self.model, "history", None)
        if isinstance(history, keras.callbacks.History):
            merge_history(history, self.checkpoint.record, self.checkpoint.epoch)


def merge_history(history: Any, record: Mapping[str, Any], epoch: int) -> None:
    """Puts the epochs a checkpointed record holds (those before `epoch`) in front of `history`'s.

    Keras's History appends every epoch's logs key by key; replaying the recorded logs the same way and
    then the resumed process's lists gives the lists (and key order) of a History that saw every epoch.

    Example:
        >>> h = keras.callbacks.History(); h.epoch, h.history = [2], {"loss": [0.5]}      # doctest: +SKIP
        >>> merge_history(h, {"metrics": {"epochs": [{"loss": 1.0}, {"loss": 0.7}]}}, 2)  # doctest: +SKIP
        >>> h.epoch, h.history                                                            # doctest: +SKIP
        ([0, 1, 2], {'loss': [1.0, 0.7, 0.5]})
    """
    earlier = list((record.get("metrics") or {}).get("epochs") or [])
    merged: dict[str, list[Any]] = {}
    for logs in earlier:
        for key, value in (logs or {}).items():
            merged.setdefault(key, []).append(value)
    for key, values in history.history.items():
        merged.setdefault(key, []).extend(values)
    history.history = merged
    history.epoch = list(range(epoch - len(earlier), epoch)) + list(getattr(history, "epoch", []))


def _own(callback: Any) -> bool:
    """keras_repro's own callbacks: their state is the checkpoint itself."""
    return type(callback).__module__.startswith("keras_repro.")
