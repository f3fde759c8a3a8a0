"""model_info: what of a model and its optimizer the record keeps (in-process, no training)."""

from __future__ import annotations

import pytest

from keras_repro.model_info import canonical_optimizer_name


@pytest.mark.parametrize("name, cls, expected", [
    ("adam", "Adam", "adam"),
    ("adam_4", "Adam", "adam"),             # Keras's per-process counter: not a hyperparameter
    ("adam_w_1", "AdamW", "adam_w"),
    ("rm_sprop_12", "RMSprop", "rm_sprop"),
    ("adamax", "Adam", "adamax"),           # another name that merely starts alike is kept
    ("my_adam_2", "Adam", "my_adam_2"),     # a name the user chose is kept
    (None, "Adam", None),
])
def test_canonical_optimizer_name(name, cls, expected):
    assert canonical_optimizer_name(name, cls) == expected


def test_two_unnamed_optimizers_of_one_process_record_the_same_config():
    keras = pytest.importorskip("keras")
    from keras_repro.model_info import hyperparameters

    configs = []
    for _ in range(2):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(0.01), "mse")
        configs.append(hyperparameters(model)["optimizer_config"])
    assert configs[0] == configs[1] and configs[0]["name"] == "adam"
