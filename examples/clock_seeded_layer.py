"""README example for `keras-repro check`: a custom layer whose tf.random.Generator is seeded from the clock,
inside a functional model (the layer is the source).

    keras-repro check -- python examples/clock_seeded_layer.py
"""

import time

import numpy as np

import keras_repro

keras_repro.configure(seed=42, mode="bitwise")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

x = np.linspace(-1, 1, 256, dtype="float32").reshape(128, 2)
y = (x[:, 0] > x[:, 1]).astype("int32")


class GaussianJitter(keras.layers.Layer):
    """Adds Gaussian noise in training."""

    def __init__(self, stddev, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev
        self.generator = tf.random.Generator.from_seed(time.time_ns())  # the bug: seeded from the clock

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return inputs + self.generator.normal(tf.shape(inputs), stddev=self.stddev)


def build():
    inputs = keras.Input((2,), name="features")
    h = keras.layers.Dense(8, activation="relu", name="encoder")(inputs)
    h = GaussianJitter(0.1, name="jitter")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="classifier")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


keras_repro.fit(build, x, y, epochs=3, batch_size=32, verbose=0, run_dir="runs")
