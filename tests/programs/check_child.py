"""A training script for `keras-repro check`: bitwise, optionally with unseeded data noise."""

import sys

import numpy as np

import keras_repro

keras_repro.configure(seed=3, mode="bitwise")
import keras  # noqa: E402

x = np.linspace(-1, 1, 96, dtype="float32").reshape(48, 2)
if "--unseeded-noise" in sys.argv:
    x = x + np.random.default_rng().normal(0, 0.01, x.shape).astype("float32")  # ignored by every global seed
y = (x[:, 0] > 0).astype("int32")


def build():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


keras_repro.fit(build, x, y, epochs=2, batch_size=16, verbose=0, run_dir=sys.argv[1])
