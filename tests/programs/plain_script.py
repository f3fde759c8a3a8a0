"""An ordinary Keras training script: it never imports keras_repro.

Arrays with shuffle=True, Dropout, a random augmentation layer (RandomFlip + RandomTranslation, which
draw new numbers every step), validation_split. Prints the SHA-256 of its final weights and the hex of
its last loss, as a user would print a result (and appends them to $PLAIN_OUT, if set, for tests
that run it under `keras-repro check`, which hides a run's stdout).

    python plain_script.py [--subclass] [--fail]
"""

import hashlib
import os
import sys

import numpy as np

x = np.random.rand(64, 6, 6, 1).astype("float32")  # unseeded NumPy before `import keras`
y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("int32")

import keras  # noqa: E402


class Custom(keras.Model):
    """A subclass that overrides fit (calling super().fit) and train_step."""

    fit_calls = 0
    train_steps = 0

    def fit(self, *args, **kwargs):
        Custom.fit_calls += 1
        return super().fit(*args, **kwargs)

    def train_step(self, data):
        Custom.train_steps += 1  # counted while tracing
        return super().train_step(data)


def build(cls=keras.Model):
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.RandomFlip("horizontal")(inputs)
    h = keras.layers.RandomTranslation(0.2, 0.2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(8, activation="relu")(h)
    h = keras.layers.Dropout(0.3)(h)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = cls(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


model = build(Custom if "--subclass" in sys.argv else keras.Model)
history = model.fit(x, y, 16, 2, 0, validation_split=0.25, shuffle=True)  # positional batch_size, epochs, verbose
digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())).hexdigest()
print("WEIGHTS", digest)
print("LOSS", float(history.history["loss"][-1]).hex())
print("HISTORY", type(history).__name__, sorted(history.history))
if "--subclass" in sys.argv:
    print("SUBCLASS", Custom.fit_calls, Custom.train_steps > 0)
if os.environ.get("PLAIN_OUT"):
    with open(os.environ["PLAIN_OUT"], "a") as f:
        f.write(f"{digest} {float(history.history['loss'][-1]).hex()} {Custom.fit_calls}\n")
if "--fail" in sys.argv:
    sys.exit(3)
