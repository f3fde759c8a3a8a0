"""keras_repro.autolog scenarios in one TensorFlow process (tests/test_autolog_e2e.py).

Prints one JSON object of findings. $KERAS_REPRO_RECORDS_FILE must name a file: every record written
is announced there, so each scenario can count the records it caused.
"""

import inspect
import json
import os
import sys
import tempfile
import types

import numpy as np

import keras_repro

out = {}
RECORDS = os.environ["KERAS_REPRO_RECORDS_FILE"]
run_dir = tempfile.mkdtemp(prefix="autolog-child-")


def records():
    with open(RECORDS) as f:
        return [line for line in f.read().splitlines() if line]


def counting(scenario, action):
    before = len(records())
    value = action()
    out[scenario] = len(records()) - before
    return value


# TensorFlow's runtime started with its default thread count: autolog cannot fix threads=1 any more.
import tensorflow as tf  # noqa: E402

tf.constant(1.0) + 1.0
try:
    keras_repro.autolog(seed=5, mode="deterministic", threads=1)
except keras_repro.TooLateError as e:
    out["too_late"] = str(e)
out["active_after_refusal"] = sys.modules["keras_repro.autolog"].active_policy() is not None

import keras  # noqa: E402

applied = keras_repro.autolog(seed=5, mode="seeded", run_dir=run_dir)  # TF is imported: applied now
out["applied_now"] = applied["mode"] if applied else None
out["same_again"] = keras_repro.autolog(seed=5, mode="seeded") is not None
try:
    keras_repro.autolog(seed=6, mode="seeded")
except keras_repro.PolicyConflictError as e:
    out["conflict"] = str(e)
out["tf_keras_is_keras"] = tf.keras.Model is keras.Model and tf.keras.Model.fit is keras.Model.fit
out["keras_signature"] = list(inspect.signature(keras.Model.fit.__wrapped__).parameters)[1:]

x = np.linspace(-1, 1, 64, dtype="float32").reshape(32, 2)
y = (x[:, 0] > 0).astype("int32")


def build(cls=keras.Sequential):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    if cls is not keras.Sequential:
        inputs = keras.Input((2,))
        model = cls(inputs, model(inputs))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


model = build()
history = counting("plain_fit_records", lambda: model.fit(x, y, 8, 2, 0, shuffle=True))
out["history"] = [type(history).__name__, history is model.history, hasattr(history, "run"), history.params["epochs"]]
out["recorded_fit"] = {k: history.run["fit"].get(k) for k in ("batch_size", "epochs", "verbose", "shuffle")}

counting("keras_repro_fit_records", lambda: keras_repro.fit(build(), x, y, epochs=1, batch_size=8, verbose=0))


class Overriding(keras.Model):
    calls = 0
    steps = 0

    def fit(self, *args, **kwargs):
        Overriding.calls += 1
        return super().fit(*args, **kwargs)

    def train_step(self, data):
        Overriding.steps += 1
        return super().train_step(data)


counting("subclass_records", lambda: build(Overriding).fit(x, y, batch_size=8, epochs=1, verbose=0))
out["subclass_calls"] = [Overriding.calls, Overriding.steps > 0]

callback = keras_repro.ReproCallback(x=x, y=y)
counting("own_callback_records", lambda: build().fit(x, y, epochs=1, verbose=0, callbacks=[callback]))


def type_error(model):
    try:
        model.fit(x, y, epoch=3)
    except TypeError as e:
        return str(e)


out["type_error_patched"] = type_error(build())

# A tf_keras (Keras 2) model: a stand-in module, as tf_keras is not installed here.
legacy = types.ModuleType("tf_keras")
legacy.Model = type("Model", (), {"__module__": "tf_keras.src.engine.training", "fit": lambda self, *a, **k: "fit"})
sys.modules["tf_keras"] = legacy
keras_repro.autolog(disable=True)
keras_repro.autolog(seed=5, mode="seeded", run_dir=run_dir)  # re-enabled: tf_keras is patched now too
try:
    legacy.Model().fit(x)
except keras_repro.ReproducibilityError as e:
    out["tf_keras"] = str(e)

keras_repro.autolog(disable=True)
out["restored"] = "fit" not in keras.Model.__dict__
counting("disabled_records", lambda: build().fit(x, y, epochs=1, verbose=0))
out["type_error_plain"] = type_error(build())
print(json.dumps(out))
