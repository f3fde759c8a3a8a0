"""The ISA pin's claims, run in a fresh process (tests/test_isa.py).

    python isa_child.py SCENARIO RUN_DIR

Scenarios:
    configure     configure(seed=42, mode="bitwise") first, then fit the digits MLP and run an XLA function.
    fit-alone     no configure: fit(seed=42, mode="bitwise") configures the process itself.
    native        first tries configure(mode="bitwise") (must be refused when the environment already caps
                  another level), then configure(mode="bitwise", isa="native") and the two fits.

Prints one JSON line: the ISA variables as they were when `tensorflow` was first imported (a meta-path
hook snapshots them), the fit's record path, final-weights hash and step losses (float.hex), the
probe from the record, the SHA-256 of a `tf.function(jit_compile=True)` result (Keras turns
`compile(jit_compile=True)` off under op determinism, so XLA runs only in user functions), and the
refusal message if any.
"""

import importlib.abc
import json
import os
import sys

_AT_IMPORT: dict = {}


class _SnapshotAtTensorflowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: D102
        if name == "tensorflow" and not _AT_IMPORT:
            _AT_IMPORT.update({k: os.environ.get(k) for k in ("ONEDNN_MAX_CPU_ISA", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS")})
        return None


sys.meta_path.insert(0, _SnapshotAtTensorflowImport())

import numpy as np  # noqa: E402

import keras_repro  # noqa: E402

scenario, run_dir = sys.argv[1], sys.argv[2]
out: dict = {"scenario": scenario, "refused": None}
if scenario == "native":
    try:
        keras_repro.configure(seed=42, mode="bitwise")
    except keras_repro.ReproducibilityError as e:
        out["refused"] = f"{type(e).__name__}: {e}"
    keras_repro.configure(seed=42, mode="bitwise", isa="native")
elif scenario == "configure":
    keras_repro.configure(seed=42, mode="bitwise")

from sklearn.datasets import load_digits  # noqa: E402

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target.astype("int32")


def build():
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


policy = {"seed": 42, "mode": "bitwise"} if scenario == "fit-alone" else {}
history = keras_repro.fit(build, x, y, epochs=2, batch_size=64, verbose=0, run_dir=run_dir, **policy)
rec = history.run
out.update(path=str(rec.path), weights=rec.final_weights_sha256, steps=[float(v).hex() for v in rec.steps],
           probe=rec.section("environment").get("isa_probe"), isa=rec.applied.get("isa"))

import hashlib  # noqa: E402

import tensorflow as tf  # noqa: E402


@tf.function(jit_compile=True)
def xla(a, b):
    return tf.reduce_sum(tf.tanh(a @ b) * 1.37, axis=0)


a = np.linspace(-3.0, 3.0, 64 * 256, dtype="float32").reshape(64, 256)
b = np.cos(np.arange(256 * 64, dtype="float32")).reshape(256, 64)
out["xla"] = hashlib.sha256(xla(a, b).numpy().tobytes()).hexdigest()
out["at_tf_import"] = dict(_AT_IMPORT)
print(json.dumps(out))
