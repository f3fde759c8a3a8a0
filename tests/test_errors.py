"""Every refusal is a ReproducibilityError of the documented subclass (in-process, no training)."""

from __future__ import annotations

import numpy as np
import pytest

import keras_repro
from keras_repro.errors import InvalidInputError, InvalidPolicyError, ReproducibilityError
from keras_repro.shuffle import ArrayStream


@pytest.mark.parametrize("arrays, fragment", [
    ((np.zeros((0, 2)), np.zeros((0,))), "at least one training sample"),
    ((np.zeros((4, 2)), np.zeros((3,))), "Data cardinality is ambiguous"),
    ((np.zeros((4, 2)), np.zeros((4,)), np.ones((5,))), "first dimensions [4, 5]"),
])
def test_array_inputs_that_cannot_be_fed_raise_invalid_input_error(arrays, fragment):
    with pytest.raises(InvalidInputError) as info:
        ArrayStream(arrays, batch_size=2, shuffle=True, seed=1)
    assert fragment in str(info.value) and "Fix: " in str(info.value)
    assert isinstance(info.value, ReproducibilityError)
    assert isinstance(info.value, ValueError)  # what Keras raises for the same inputs


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"batch_size": True}, {"shuffle": "yes"}, {"validation_split": 1.5},
    {"resume": 3}, {"checkpoint_every_steps": 0}, {"checkpoint_keep": 0},
])
def test_bad_fit_arguments_raise_invalid_policy_error_as_documented(kwargs):
    pytest.importorskip("keras")
    x, y = np.zeros((4, 2), "float32"), np.zeros((4,), "float32")
    with pytest.raises(InvalidPolicyError) as info:
        keras_repro.fit(lambda: None, x, y, seed=1, mode="off", **kwargs)  # refused before anything is built
    assert f"`{next(iter(kwargs))}`" in str(info.value)
    for name in ("batch_size", "shuffle", "validation_split", "resume", "checkpoint_every_steps"):
        assert name in InvalidPolicyError.__doc__


@pytest.mark.parametrize("batch_size", [np.int64(8), np.int32(1), 16])
def test_integer_batch_sizes_keras_takes_are_accepted(batch_size):
    from keras_repro.training import _check_fit_kwargs

    _check_fit_kwargs({"batch_size": batch_size})  # autolog routes every fit here: no refusal Keras would not make
