"""The tiny training program the reproducibility, record and resume tests run in fresh processes.

One process pays TensorFlow's import once and runs several scenarios in sequence (`keras_repro.fit(seed=...)`
reseeds every fit). What must be fixed per process (the mode, configure() or not) comes first; each
`--scenario "ARGS"` is one fit, parsed by the scenario parser below:

    python train_child.py --mode bitwise --seed 9 \\
        --scenario "--name a --run-dir runs/a --model after-configure" --scenario "--name b --seed 8 --run-dir runs/b"

After each scenario it prints one JSON line: the scenario's name, record path, weight hashes, every step
loss as float.hex, the epoch metrics and orders, resumed_from and the (epoch, batch) events a user
callback saw. A scenario with --pause-at-step N prints "PAUSED N" after global step N and sleeps, for the
test to kill the process with SIGKILL (so it is the last scenario of its process). A resume that
keras_repro refuses prints {"name": ..., "resume_error": ...} and the process goes on.
"""

import argparse
import json
import shlex
import time

import numpy as np

import keras_repro

parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="bitwise")
parser.add_argument("--seed", type=int, default=None, help="configure(seed=...)")
parser.add_argument("--no-configure", action="store_true", help="let the first fit() configure the process")
parser.add_argument("--scenario", action="append", default=[], help="one fit: scenario arguments in one string")
args = parser.parse_args()

scenario_parser = argparse.ArgumentParser(prog="scenario")
scenario_parser.add_argument("--name", required=True)
scenario_parser.add_argument("--kind", choices=["train", "errors"], default="train")
scenario_parser.add_argument("--run-dir", required=True)
scenario_parser.add_argument("--seed", type=int, default=None, help="fit(seed=...); default: the configured seed")
scenario_parser.add_argument("--input", choices=["numpy", "dataset"], default="numpy")
scenario_parser.add_argument("--model", choices=["builder", "after-configure"], default="builder")
scenario_parser.add_argument("--epochs", type=int, default=2)
scenario_parser.add_argument("--validation-split", type=float, default=0.0)
scenario_parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True (XLA)")
scenario_parser.add_argument("--resume", default=None, help="a run directory, or 'true'")
scenario_parser.add_argument("--pause-at-step", type=int, default=None)
scenario_parser.add_argument("--checkpoint-every", type=int, default=None)
scenario_parser.add_argument("--lr", type=float, default=0.01)
scenario_parser.add_argument("--data-seed", type=int, default=1234)
scenario_parser.add_argument("--watch", action="store_true", help="add the user callback that records every step")
scenario_parser.add_argument("--forget-seed-state", action="store_true",
                             help="negative control: after the restore, put the Dropout seed state back to its initial value")
scenarios = [scenario_parser.parse_args(shlex.split(s)) for s in args.scenario]

if not args.no_configure:
    keras_repro.configure(seed=args.seed, mode=args.mode)

import keras  # noqa: E402  (after configure, as the README says)
import tensorflow as tf  # noqa: E402

from keras_repro.runtime import seed_everything  # noqa: E402

STEPS_PER_EPOCH = 12  # 384 samples / 32 per batch


def data(seed):
    rng = np.random.default_rng(seed)  # fixed data: only training randomness may differ
    x = rng.normal(size=(384, 12)).astype("float32")
    return x, (x[:, :6].sum(axis=1) > 0).astype("int32")


def builder(s):
    def build():
        model = keras.Sequential([
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(2, activation="softmax"),
        ])
        # An explicit optimizer name: Keras numbers unnamed optimizers per process (adam, adam_1, ...), the
        # record keeps the name, and a resume refuses a changed hyperparameter (see the issue-9 notes).
        model.compile(keras.optimizers.Adam(s.lr, name="adam"), "sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=s.jit)
        return model
    return build


class Watch(keras.callbacks.Callback):
    """A user callback: sees every step, can pause the process, can undo the seed-state restore."""

    def __init__(self, s):
        super().__init__()
        self.s = s
        self.events = []
        self.epoch = 0
        self.initial_seed_states = None

    def set_model(self, model):
        super().set_model(model)
        if self.initial_seed_states is None:  # before fit restores anything: the states of a fresh model
            self.initial_seed_states = [(v, v.numpy()) for v in model.non_trainable_variables if "seed" in v.path]

    def on_train_begin(self, logs=None):
        if self.s.forget_seed_state:
            for variable, value in self.initial_seed_states:
                variable.assign(value)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.events.append([self.epoch, batch])
        step = self.epoch * STEPS_PER_EPOCH + batch + 1
        if self.s.pause_at_step is not None and step == self.s.pause_at_step:
            print(f"PAUSED {step}", flush=True)
            time.sleep(600)


def train(s, first):
    seed = s.seed if s.seed is not None else args.seed
    x, y = data(s.data_seed)
    inputs, kwargs = (x, y), dict(batch_size=32, validation_split=s.validation_split)
    if s.input == "dataset":
        if not first and seed is not None and args.mode != "off":
            seed_everything(seed)  # what configure(seed) did before the first scenario's pipeline was built
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(384)
        ds = ds.map(lambda a, b: (a + tf.random.uniform(tf.shape(a), maxval=0.01), b), num_parallel_calls=tf.data.AUTOTUNE)
        inputs, kwargs = (ds.batch(32).prefetch(tf.data.AUTOTUNE),), {}
    model_arg = builder(s) if s.model == "builder" else builder(s)()
    watch = Watch(s) if s.watch else None
    kwargs.update(epochs=s.epochs, verbose=0, run_dir=s.run_dir, callbacks=[watch] if watch else None,
                  resume=True if s.resume == "true" else s.resume, checkpoint_every_steps=s.checkpoint_every)
    if s.seed is not None or args.no_configure:
        kwargs.update(seed=seed, mode=args.mode)
    try:
        history = keras_repro.fit(model_arg, *inputs, **kwargs)
    except keras_repro.ResumeError as e:
        return {"resume_error": str(e)}
    run = history.run
    return {
        "path": str(run.path),
        "initial": run.initial_weights_sha256,
        "final": run.final_weights_sha256,
        "steps": [float.hex(s) for s in run.steps],
        "steps_per_epoch": run.metrics["steps_per_epoch"],
        "epochs": [{k: float.hex(float(v)) for k, v in e.items()} for e in run.epochs],
        "history_loss": [float.hex(v) for v in history.history["loss"]],
        "resumed_from": run.get("resumed_from"),
        "events": watch.events if watch else None,
        "order": run["data"]["order"],
        "first_elements": (run["data"]["x"] or {}).get("first_elements"),
    }


def errors(s):
    """A builder that returns no model, a fit asking another mode, and a fit that fails inside Keras."""
    out = {}
    try:
        keras_repro.fit(lambda: "not a model", np.zeros((4, 1)), np.zeros(4), run_dir=s.run_dir)
    except keras_repro.ReproducibilityError as e:
        out["builder"] = str(e)

    def build():
        m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        m.compile("sgd", "mse")
        return m

    other_mode = "seeded" if args.mode != "seeded" else "bitwise"
    try:
        keras_repro.fit(build, np.zeros((4, 1)), np.zeros(4), mode=other_mode, run_dir=s.run_dir, verbose=0)
    except keras_repro.PolicyConflictError as e:
        out["conflict"] = str(e)
    try:
        keras_repro.fit(build, np.zeros((4, 1)), np.zeros((5, 3)), run_dir=s.run_dir, verbose=0)
    except Exception as e:  # noqa: BLE001 - the test wants to see that it failed, and the record says so
        out["failed"] = type(e).__name__
    return {"errors": out}


for index, scenario in enumerate(scenarios):
    result = train(scenario, index == 0) if scenario.kind == "train" else errors(scenario)
    print(json.dumps({"name": scenario.name, **result}), flush=True)
