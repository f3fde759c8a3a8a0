"""A training program with Keras's stateful callbacks that the callback-resume tests run, kill and resume.

Real digits (sklearn), Adam at a high rate, so that within a few short epochs `ReduceLROnPlateau` halves
the rate and `EarlyStopping` counts and stops. --callbacks plateau: ReduceLROnPlateau, EarlyStopping
(restore_best_weights), ModelCheckpoint(save_best_only) and CSVLogger; --callbacks schedule: a
LearningRateScheduler and EarlyStopping. Both add a user callback with get_state/set_state (Tally) and one
without (Loose). With --pause-at-step N (or --pause-at-train-end) it prints "PAUSED N" after global step N and sleeps, for the test
to SIGKILL it. At the end it prints one JSON line (see the end of this file).
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

import keras_repro

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", required=True)
parser.add_argument("--out", required=True, help="folder of the CSV log and ModelCheckpoint's best file")
parser.add_argument("--callbacks", choices=["plateau", "schedule"], default="plateau")
parser.add_argument("--strategy", choices=["none", "mirrored", "multiworker"], default="none",
                    help="multiworker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG, 1 CPU a worker")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--resume", default=None)
parser.add_argument("--pause-at-step", type=int, default=None)
parser.add_argument("--checkpoint-every", type=int, default=None)
parser.add_argument("--pause-at-train-end", action="store_true",
                    help="pause in on_train_end: after EarlyStopping stopped the run, before it completed")
parser.add_argument("--forget-callback-state", action="store_true",
                    help="negative control: resume without giving the callbacks their state back")
args = parser.parse_args()

keras_repro.configure(seed=11, mode="bitwise")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

strategy = None
if args.strategy == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
elif args.strategy == "multiworker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    if task:  # every worker runs the callbacks: worker i > 0 writes its files beside the chief's
        args.out = os.path.join(args.out, f"worker-{task}")
if args.forget_callback_state:
    from keras_repro.callback_state import CallbackStates

    CallbackStates.restore_enabled = False

digits = load_digits()
x = (digits.data / 16.0).astype("float32")[:1200]
y = digits.target.astype("int32")[:1200]
BATCH = 100
STEPS = 9  # 900 training samples (validation_split=0.25) / 100


def build():
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Tally(keras.callbacks.Callback):
    """A user callback with state and the get_state/set_state protocol: it must continue after a resume."""

    def __init__(self):
        super().__init__()
        self.batches = 0
        self.loss_sum = 0.0
        self.epoch_means = np.zeros(0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_means = np.append(self.epoch_means, 0.0)  # once per epoch, even in a mid-epoch resume

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        self.loss_sum += float(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_means[-1] = logs["loss"]

    def get_state(self):
        return {"batches": self.batches, "loss_sum": self.loss_sum, "epoch_means": self.epoch_means}

    def set_state(self, state):
        self.batches, self.loss_sum, self.epoch_means = state["batches"], state["loss_sum"], state["epoch_means"]


class Loose(keras.callbacks.Callback):
    """A user callback with state and no protocol: keras_repro must name it in a recorded warning."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class Pause(keras.callbacks.Callback):
    """Counts the batches this process trains; pauses for the kill."""

    def __init__(self):
        super().__init__()
        self.trained = 0
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.trained += 1
        step = self.epoch * STEPS + batch + 1
        if args.pause_at_step is not None and step == args.pause_at_step:
            print(f"PAUSED {step}", flush=True)
            time.sleep(600)

    def on_train_end(self, logs=None):
        if args.pause_at_train_end:
            print("PAUSED at train end", flush=True)
            time.sleep(600)


os.makedirs(args.out, exist_ok=True)
stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
if args.callbacks == "plateau":
    keras_callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
        stopper,
        keras.callbacks.ModelCheckpoint(os.path.join(args.out, "best-{epoch:02d}.weights.h5"), monitor="val_loss",
                                        save_best_only=True, save_weights_only=True),
        keras.callbacks.CSVLogger(os.path.join(args.out, "log.csv")),
    ]
else:
    keras_callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.7 if epoch >= 2 else lr),
        stopper,
    ]
tally, loose, pause = Tally(), Loose(), Pause()
resume = True if args.resume == "true" else args.resume
history = keras_repro.fit(
    build, x, y, batch_size=BATCH, validation_split=0.25, epochs=args.epochs, verbose=0, run_dir=args.run_dir,
    callbacks=[*keras_callbacks, tally, loose, pause], resume=resume, strategy=strategy,
    checkpoint_every_steps=args.checkpoint_every,
)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def hexes(values):
    return [float.hex(float(v)) for v in values]


run = history.run
csv_path = os.path.join(args.out, "log.csv")
print(json.dumps({
    "path": str(run.path),
    "final": run.final_weights_sha256,
    "steps": hexes(run.steps),
    "history": {k: hexes(v) for k, v in history.history.items()},
    "history_epoch": history.epoch,
    "stopped_epoch": stopper.stopped_epoch,
    "trained_here": pause.trained,
    "tally": {"batches": tally.batches, "loss_sum": float.hex(tally.loss_sum), "epoch_means": hexes(tally.epoch_means)},
    "loose_batches": loose.batches,
    "best_files": {name: file_sha256(os.path.join(args.out, name))
                   for name in sorted(os.listdir(args.out)) if name.endswith(".weights.h5")},
    "csv_sha256": file_sha256(csv_path) if os.path.exists(csv_path) else None,
    "warnings": run["applied"]["warnings"],
    "resumed_from": run.get("resumed_from"),
}))
sys.stdout.flush()
