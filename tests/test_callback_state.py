"""The pure logic of keras_repro.callback_state, in-process: which callbacks are saved how, encoding, History.

The bit-for-bit claims (a killed run resumed with its callbacks) are in tests/test_resume_callbacks.py.
Importing Keras here costs a few seconds once.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_repro import _compat  # noqa: E402
from keras_repro.callback_state import (  # noqa: E402
    STATE_KEY,
    CallbackStates,
    decode_state,
    encode_state,
    merge_history,
    saver_for,
    unsaved_warning,
)
from keras_repro.errors import ReproducibilityError, ResumeError  # noqa: E402


class Counter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = 0
        self.weights = np.arange(3.0)

    def get_state(self):
        return {"seen": self.seen, "weights": self.weights}

    def set_state(self, state):
        self.seen, self.weights = state["seen"], state["weights"]


class Loose(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = 0


def record_callback() -> SimpleNamespace:
    return SimpleNamespace(applied={"warnings": []})


def roundtrip(states: CallbackStates) -> tuple[dict, dict]:
    arrays: dict = {}
    meta: dict = {}
    states.capture(arrays, meta)
    return arrays, json.loads(json.dumps(meta, allow_nan=True))


def test_encode_decode_keeps_arrays_bit_for_bit_and_numbers_as_numbers():
    state = {"w": [np.array([1.5, np.nan], "float32"), np.zeros((2, 2))], "n": np.int64(3), "t": (1, "a"), "x": None}
    arrays: dict = {}
    encoded = encode_state(state, "callbacks/4", arrays)
    assert sorted(arrays) == ["callbacks/4/0", "callbacks/4/1"]
    back = decode_state(json.loads(json.dumps(encoded)), arrays)
    assert back["w"][0].tobytes() == state["w"][0].tobytes() and back["w"][0].dtype == np.float32
    assert back["n"] == 3 and type(back["n"]) is int and back["t"] == [1, "a"] and back["x"] is None


def test_builtins_are_saved_and_restored():
    stop = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    stop.on_train_begin()
    stop.wait, stop.best, stop.best_epoch, stop.best_weights = 2, 0.25, 4, [np.ones(2), np.zeros(1)]
    plateau = keras.callbacks.ReduceLROnPlateau(patience=1)
    plateau.wait, plateau.cooldown_counter, plateau.best = 1, 2, 0.5
    saved = {type(c).__name__: saver_for(c).get(c) for c in (stop, plateau)}
    fresh_stop, fresh_plateau = keras.callbacks.EarlyStopping(), keras.callbacks.ReduceLROnPlateau()
    fresh_stop.on_train_begin()  # Keras resets them here; keras_repro restores after it
    saver_for(fresh_stop).set(fresh_stop, saved["EarlyStopping"])
    saver_for(fresh_plateau).set(fresh_plateau, saved["ReduceLROnPlateau"])
    assert (fresh_stop.wait, fresh_stop.best, fresh_stop.best_epoch) == (2, 0.25, 4)
    assert [w.tolist() for w in fresh_stop.best_weights] == [[1.0, 1.0], [0.0]]
    assert (fresh_plateau.wait, fresh_plateau.cooldown_counter, fresh_plateau.best) == (1, 2, 0.5)
    assert saver_for(keras.callbacks.LearningRateScheduler(lambda e, lr: lr)).replays_epoch_begin is False
    assert saver_for(keras.callbacks.TerminateOnNaN()).kind == "stateless"
    assert saver_for(keras.callbacks.Callback()).kind == "stateless"


def test_model_checkpoint_keeps_best_and_its_batch_counters(tmp_path):
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"), save_best_only=True, save_freq=5)
    ckpt.best = 0.125
    _compat.model_checkpoint_counters(ckpt, {"_batches_seen_since_last_saving": 3, "_last_batch_seen": 7})
    state = saver_for(ckpt).get(ckpt)
    fresh = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"), save_best_only=True, save_freq=5)
    saver_for(fresh).set(fresh, state)
    assert fresh.best == 0.125
    assert _compat.model_checkpoint_counters(fresh) == {"_batches_seen_since_last_saving": 3, "_last_batch_seen": 7}


def test_csv_logger_resume_cuts_rows_written_after_the_checkpoint_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,1.0\n")
    logger = keras.callbacks.CSVLogger(str(path))
    state = saver_for(logger).get(logger)
    path.write_text("epoch,loss\n0,1.0\n1,0.5\n")  # a row the killed run wrote after its checkpoint
    fresh = keras.callbacks.CSVLogger(str(path))
    saver_for(fresh).prepare(fresh, state)
    assert path.read_text() == "epoch,loss\n0,1.0\n" and fresh.append is True
    saver_for(fresh).set(fresh, state)
    assert fresh.append is False  # the user's setting again


def test_backup_and_restore_works_with_a_recorded_warning_and_is_refused_with_a_resume(tmp_path):
    # autolog routes every fit through keras_repro: a script using Keras's own BackupAndRestore must keep
    # working (Keras's backup_and_restore tests pass routed), with a warning that it is not bitwise.
    rec = record_callback()
    CallbackStates([keras.callbacks.BackupAndRestore(str(tmp_path))], rec)
    (warning,) = rec.applied["warnings"]
    assert warning.startswith("BackupAndRestore(backup_dir=") and "not bit-identical" in warning
    with pytest.raises(ResumeError, match="BackupAndRestore cannot be combined with keras_repro's resume=") as info:
        CallbackStates([keras.callbacks.BackupAndRestore(str(tmp_path))], record_callback(), checkpoint=object())
    assert "Fix: remove it" in str(info.value) and isinstance(info.value, ReproducibilityError)


def test_a_callback_without_the_protocol_is_named_in_a_recorded_warning_and_one_with_it_is_saved():
    rec = record_callback()
    counter, loose = Counter(), Loose()
    states = CallbackStates([counter, loose, keras.callbacks.Callback()], rec)
    (warning,) = rec.applied["warnings"]
    assert warning == unsaved_warning(loose, 1)
    assert warning.startswith("callback Loose (callbacks[1]) holds state (seen)") and "get_state" in warning
    counter.seen = 5
    arrays, meta = roundtrip(states)
    (entry,) = [e for e in meta[STATE_KEY] if e["class"] == "Counter"]
    assert entry["state"]["seen"] == 5 and arrays["callbacks/0/0"].tolist() == [0.0, 1.0, 2.0]


def test_a_get_state_that_cannot_be_saved_is_warned_about_not_fatal():
    class Bad(Counter):
        def get_state(self):
            return {"thing": object()}

    rec = record_callback()
    states = CallbackStates([Bad()], rec)
    _, meta = roundtrip(states)
    assert meta[STATE_KEY] == []
    assert "callback Bad (callbacks[0]): its state cannot be saved (TypeError" in rec.applied["warnings"][0]


def test_restore_after_on_train_begin_and_skip_epoch_begin_in_a_mid_epoch_resume(tmp_path):
    counter = Counter()
    counter.seen = 9
    arrays, meta = roundtrip(CallbackStates([counter], record_callback()))
    np.savez(tmp_path / "arrays.npz", **arrays)
    checkpoint = SimpleNamespace(state=meta, step_in_epoch=2, path=tmp_path, epoch=3,
                                 arrays=lambda: dict(np.load(tmp_path / "arrays.npz")))
    again = Counter()
    scheduler = keras.callbacks.LearningRateScheduler(lambda e, lr: lr)
    states = CallbackStates([again, scheduler], record_callback(), checkpoint)
    states.on_train_begin()
    assert again.seen == 9 and again.weights.tolist() == [0.0, 1.0, 2.0]
    assert states.skip_epoch_begin() == {id(again)}  # the scheduler had no state saved: it gets the call


def test_merge_history_gives_the_lists_of_a_history_that_saw_every_epoch():
    history = keras.callbacks.History()
    history.epoch, history.history = [2, 3], {"loss": [0.5, 0.25], "val_loss": [0.6, 0.3]}
    record = {"metrics": {"epochs": [{"loss": 2.0}, {"loss": 1.0, "val_loss": 1.5}]}}
    merge_history(history, record, 2)
    assert history.epoch == [0, 1, 2, 3]
    assert history.history == {"loss": [2.0, 1.0, 0.5, 0.25], "val_loss": [1.5, 0.6, 0.3]}
    assert list(history.history) == ["loss", "val_loss"]


def _held(tmp_path, name, *positions):
    from keras_repro.checkpoint import write_checkpoint

    run = tmp_path / name
    run.mkdir()
    for epoch, step in positions:
        write_checkpoint(run, epoch, step, {"x": np.zeros(1)}, {"variables": [], "record": {}}, keep=5)
    return SimpleNamespace(record=SimpleNamespace(directory=run, run_id=name), checkpoint=None)


def test_multi_worker_resume_takes_the_newest_checkpoint_every_worker_holds(tmp_path, monkeypatch):
    import dataclasses

    from keras_repro import distribution, resume

    @dataclasses.dataclass(frozen=True)
    class Plan:
        record: object
        checkpoint: object

    mine = _held(tmp_path, "chief", (2, 0), (3, 0))
    plan = Plan(mine.record, SimpleNamespace(path=tmp_path / "chief" / "checkpoints" / "epoch-000003-step-00000000"))
    peer = [2e9, 1e9] + [-1.0] * 14  # the other worker was killed before writing epoch 3's checkpoint
    monkeypatch.setattr(distribution, "_multi_worker", lambda strategy: True)
    monkeypatch.setattr(resume, "_all_gather", lambda strategy, values: [values, peer])
    agreed = resume.agree_across_workers(plan, object(), True)
    assert (agreed.checkpoint.epoch, agreed.checkpoint.step_in_epoch) == (2, 0)

    monkeypatch.setattr(resume, "_all_gather", lambda strategy, values: [values, [5e9] + [-1.0] * 15])
    with pytest.raises(ResumeError, match="hold no common checkpoint") as info:
        resume.agree_across_workers(plan, object(), True)
    assert "Fix:" in str(info.value)
    monkeypatch.setattr(resume, "_all_gather", lambda strategy, values: [values, values])
    assert resume.agree_across_workers(None, object(), True) is None  # nobody has anything: a fresh start
    monkeypatch.setattr(distribution, "_multi_worker", lambda strategy: False)
    assert resume.agree_across_workers(plan, object(), True) is plan  # one process: nothing to agree on
