"""A tiny training program the resume tests run, kill and resume in fresh processes.

With --pause-at-step N it prints "PAUSED N" after global step N and sleeps, for the test to kill it with
SIGKILL. At the end it prints one JSON line: record path, weight hashes, every step loss as float.hex,
the epoch metrics, resumed_from, and the (epoch, batch) events a user callback saw.
"""

import argparse
import json
import sys
import time

import numpy as np

import keras_repro

parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="bitwise")
parser.add_argument("--seed", type=int, default=3)
parser.add_argument("--input", choices=["numpy", "dataset"], default="numpy")
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--run-dir", required=True)
parser.add_argument("--resume", default=None, help="a run directory, or 'true'")
parser.add_argument("--pause-at-step", type=int, default=None)
parser.add_argument("--checkpoint-every", type=int, default=None)
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--data-seed", type=int, default=1234)
parser.add_argument("--forget-seed-state", action="store_true",
                    help="negative control: after the restore, put the Dropout seed state back to its initial value")
args = parser.parse_args()

keras_repro.configure(seed=args.seed, mode=args.mode)

import keras  # noqa: E402  (after configure)
import tensorflow as tf  # noqa: E402

data_rng = np.random.default_rng(args.data_seed)
x = data_rng.normal(size=(384, 12)).astype("float32")
y = (x[:, :6].sum(axis=1) > 0).astype("int32")
STEPS_PER_EPOCH = 12


def build():
    model = keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Watch(keras.callbacks.Callback):
    """A user callback: sees every step, can pause the process, can undo the seed-state restore."""

    def __init__(self):
        super().__init__()
        self.events = []
        self.epoch = 0
        self.initial_seed_states = None

    def set_model(self, model):
        super().set_model(model)
        if self.initial_seed_states is None:  # before fit restores anything: the states of a fresh model
            self.initial_seed_states = [(v, v.numpy()) for v in model.non_trainable_variables if "seed" in v.path]

    def on_train_begin(self, logs=None):
        if args.forget_seed_state:
            for variable, value in self.initial_seed_states:
                variable.assign(value)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.events.append([self.epoch, batch])
        step = self.epoch * STEPS_PER_EPOCH + batch + 1
        if args.pause_at_step is not None and step == args.pause_at_step:
            print(f"PAUSED {step}", flush=True)
            time.sleep(600)


watch = Watch()
resume = True if args.resume == "true" else args.resume
kwargs = dict(epochs=args.epochs, verbose=0, run_dir=args.run_dir, callbacks=[watch], resume=resume,
              checkpoint_every_steps=args.checkpoint_every)
try:
    if args.input == "numpy":
        history = keras_repro.fit(build, x, y, batch_size=32, **kwargs)
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(384)
        ds = ds.map(lambda a, b: (a + tf.random.uniform(tf.shape(a), maxval=0.01), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(32).prefetch(tf.data.AUTOTUNE)
        history = keras_repro.fit(build, ds, **kwargs)
except keras_repro.ResumeError as e:
    print(json.dumps({"resume_error": str(e)}))
    sys.exit(3)

run = history.run
print(json.dumps({
    "path": str(run.path),
    "initial": run.initial_weights_sha256,
    "final": run.final_weights_sha256,
    "steps": [float.hex(s) for s in run.steps],
    "steps_per_epoch": run.metrics["steps_per_epoch"],
    "epochs": [{k: float.hex(float(v)) for k, v in e.items()} for e in run.epochs],
    "history_loss": [float.hex(v) for v in history.history["loss"]],
    "resumed_from": run.get("resumed_from"),
    "events": watch.events,
    "order": [o["sha256"] for o in (run["data"]["order"] or [])],
    "first_elements": (run["data"]["x"] or {}).get("first_elements"),
}))
sys.stdout.flush()
