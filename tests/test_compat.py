"""Canaries for keras_repro._compat: one fast in-process test per accessor (a TF/Keras upgrade fails here)."""

from __future__ import annotations

import pytest

from keras_repro import _compat
from keras_repro.errors import CompatError


# --- resume ---
def test_model_checkpoint_counters(tmp_path):
    keras = pytest.importorskip("keras")
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"), save_freq=4)
    assert _compat.model_checkpoint_counters(ckpt) == {"_batches_seen_since_last_saving": 0, "_last_batch_seen": None}
    _compat.model_checkpoint_counters(ckpt, {"_last_batch_seen": 2})
    assert ckpt._last_batch_seen == 2
    del ckpt._last_batch_seen  # as if Keras renamed it: one clear error, nothing invented
    with pytest.raises(CompatError, match="_last_batch_seen"):
        _compat.model_checkpoint_counters(ckpt, {"_last_batch_seen": 3})
