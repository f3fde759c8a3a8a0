"""A tiny training program the reproducibility tests run in fresh processes.

Prints one JSON line: the record path, weight hashes, the hex of every step loss, the epoch orders.
"""

import argparse
import json
import sys

import numpy as np

import keras_repro

parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="bitwise")
parser.add_argument("--seed", type=int, default=None)
parser.add_argument("--input", choices=["numpy", "dataset"], default="numpy")
parser.add_argument("--model", choices=["builder", "after-configure"], default="builder")
parser.add_argument("--no-configure", action="store_true", help="let fit() configure the process")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--run-dir", required=True)
parser.add_argument("--validation-split", type=float, default=0.0)
parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True (XLA)")
args = parser.parse_args()

if not args.no_configure:
    keras_repro.configure(seed=args.seed, mode=args.mode)

import keras  # noqa: E402  (after configure, as the README says)
import tensorflow as tf  # noqa: E402

data_rng = np.random.default_rng(1234)  # fixed data: only training randomness may differ
x = data_rng.normal(size=(384, 12)).astype("float32")
y = (x[:, :6].sum(axis=1) > 0).astype("int32")


def build():
    model = keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=args.jit)
    return model


model_arg = build if args.model == "builder" else build()
fit_kwargs = dict(epochs=args.epochs, verbose=0, run_dir=args.run_dir)
if args.no_configure:
    fit_kwargs.update(seed=args.seed, mode=args.mode)
if args.input == "numpy":
    history = keras_repro.fit(model_arg, x, y, batch_size=32, validation_split=args.validation_split, **fit_kwargs)
else:
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(384)
    ds = ds.map(lambda a, b: (a + tf.random.uniform(tf.shape(a), maxval=0.01), b), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(32).prefetch(tf.data.AUTOTUNE)
    history = keras_repro.fit(model_arg, ds, **fit_kwargs)

run = history.run
print(json.dumps({
    "path": str(run.path),
    "initial": run.initial_weights_sha256,
    "final": run.final_weights_sha256,
    "steps": [float.hex(s) for s in run.steps],
    "history_loss": [float.hex(v) for v in history.history["loss"]],
    "order": run["data"]["order"],
    "first_elements": (run["data"]["x"] or {}).get("first_elements"),
}))
sys.stdout.flush()
