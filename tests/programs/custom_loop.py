"""A custom training loop (no fit) that calls keras_repro.autolog first thing, before TensorFlow.

Its loop draws unseeded TF random numbers (`tf.random.normal`), which op determinism refuses unless a
seed is set: it runs only because autolog applied the policy when TensorFlow was imported.
"""

import json

import keras_repro

applied_at_call = keras_repro.autolog(seed=3, mode="bitwise")  # before `import tensorflow`: None, applied later

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_repro import runtime  # noqa: E402

x = np.random.rand(32, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.5),
                          keras.layers.Dense(1)])
optimizer = keras.optimizers.SGD(0.05)
for _ in range(4):
    with tf.GradientTape() as tape:
        noisy = x + tf.random.normal(x.shape, stddev=0.01)
        loss = tf.reduce_mean((model(noisy, training=True) - y) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True))
print(json.dumps({"applied_at_call": applied_at_call, "policy": runtime.configured_policy().as_dict(),
                  "op_determinism": runtime.op_determinism_enabled(), "loss": float(loss).hex(),
                  "fit_patched": "fit" in keras.Model.__dict__}))
