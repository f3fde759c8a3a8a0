"""Canary tests for keras_repro/_compat.py: one per accessor, in-process and fast."""

from __future__ import annotations

import pytest


def test_dataset_chain():
    tf = pytest.importorskip("tensorflow")
    from keras_repro import _compat

    ds = tf.data.Dataset.from_tensor_slices([1, 2, 3]).shuffle(3, seed=1).batch(2)
    assert _compat.dataset_chain(ds) == ["BatchDataset", "ShuffleDataset", "TensorSliceDataset"]
