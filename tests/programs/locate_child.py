"""Training scripts for `keras-repro check --locate`, one scenario per argument (bitwise mode).

    python locate_child.py RUN_DIR SCENARIO [SCENARIO ...]

Scenarios (each one keras_repro.fit, so one record each): pydataset / pydataset-seeded (a PyDataset adding
np.random.default_rng() noise), clocklayer / clocklayer-seeded (a functional model with a custom layer whose
tf.random.Generator is seeded from the clock), generator / generator-seeded (a generator function adding
noise), metric / metric-seeded (a Dropout-free model whose only random part is a metric).
"""

import sys
import time

import numpy as np

import keras_repro

keras_repro.configure(seed=5, mode="bitwise")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

RUN_DIR, SCENARIOS = sys.argv[1], sys.argv[2:]
X = np.linspace(-1, 1, 64, dtype="float32").reshape(32, 2)
Y = (X[:, 0] > 0).astype("int32")


class Batches(keras.utils.PyDataset):
    def __init__(self, seeded):
        super().__init__()
        self.rng = np.random.default_rng(11) if seeded else np.random.default_rng()

    def __len__(self):
        return 2

    def __getitem__(self, i):
        sl = slice(16 * i, 16 * (i + 1))
        return X[sl] + self.rng.normal(0, 0.01, X[sl].shape).astype("float32"), Y[sl]


def noisy_batches(seeded):
    rng = np.random.default_rng(11) if seeded else np.random.default_rng()
    while True:
        for i in range(2):
            sl = slice(16 * i, 16 * (i + 1))
            yield X[sl] + rng.normal(0, 0.01, X[sl].shape).astype("float32"), Y[sl]


class ClockNoise(keras.layers.Layer):
    def __init__(self, seeded=False, **kwargs):
        super().__init__(**kwargs)
        self.gen = tf.random.Generator.from_seed(7 if seeded else time.time_ns() % 2**31)

    def call(self, inputs, training=False):
        return inputs + self.gen.normal(tf.shape(inputs), stddev=0.01) if training else inputs


class NoisyMean(keras.metrics.Metric):
    def __init__(self, seeded=False, name="noisy_mean", **kwargs):
        super().__init__(name=name, **kwargs)
        self.rng = np.random.default_rng(3) if seeded else np.random.default_rng()
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        noise = tf.numpy_function(lambda: np.float32(self.rng.normal()), [], tf.float32)
        self.total.assign_add(tf.reduce_mean(y_pred) + tf.reshape(noise, []))

    def result(self):
        return self.total


def mlp(metrics=None):
    inputs = keras.Input((2,))
    h = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(h))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=metrics or [])
    return model


def clock_model(seeded):
    inputs = keras.Input((2,))
    h = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    h = ClockNoise(seeded, name="noisy")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


for scenario in SCENARIOS:
    seeded = scenario.endswith("-seeded")
    kind = scenario.removesuffix("-seeded")
    if kind == "pydataset":
        keras_repro.fit(mlp, Batches(seeded), epochs=2, verbose=0, run_dir=RUN_DIR)
    elif kind == "generator":
        keras_repro.fit(mlp, noisy_batches(seeded), epochs=2, steps_per_epoch=2, verbose=0, run_dir=RUN_DIR)
    elif kind == "clocklayer":
        keras_repro.fit(lambda seeded=seeded: clock_model(seeded), X, Y, epochs=2, batch_size=16, verbose=0, run_dir=RUN_DIR)
    elif kind == "metric":
        keras_repro.fit(lambda seeded=seeded: mlp([NoisyMean(seeded)]), X, Y, epochs=2, batch_size=16, verbose=0, run_dir=RUN_DIR)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
