"""Child programs for tests/test_hardening.py. Prints one JSON line.

    python hardening_child.py bad-fit RUN_DIR      # every bad fit() input; what each raised
    python hardening_child.py train RUN_DIR [--nan] [--epochs N] [--announce]
    python hardening_child.py write-loop PATH      # rewrites a large record atomically, forever
"""

import json
import os
import sys
import time

import numpy as np

import keras_repro

what, target = sys.argv[1], sys.argv[2]

if what == "write-loop":
    from keras_repro.record import atomic_write_json

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from helpers import record_dict

    steps = [float(i) / 7 for i in range(200_000)]  # ~4 MB of JSON: each write takes a while
    n = 0
    print("ready", flush=True)
    while True:
        n += 1
        atomic_write_json(target, record_dict(run_id=f"write-{n}", status="running", metrics__steps=steps))

if what == "train":
    nan = "--nan" in sys.argv
    epochs = int(sys.argv[sys.argv.index("--epochs") + 1]) if "--epochs" in sys.argv else 2
    keras_repro.configure(seed=3, mode="deterministic")
    import keras

    x = np.random.default_rng(0).standard_normal((256, 8)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    if nan:
        y[5] = np.nan  # the loss of every batch holding sample 5 is NaN

    def build():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.01), "mse")
        return model

    class Announce(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch {epoch}", flush=True)

        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.002)

    hyper = {"nan": float("nan"), "inf": float("-inf"), "huge": 2**200, "np": np.float32(0.25), "arr": np.eye(2),
             "tuple": (1, "a"), "set": {3, 1}, "obj": object(), "fn": build, "nested": {"k": [np.int64(7), None]}}
    history = keras_repro.fit(build, x, y, epochs=epochs, batch_size=16, verbose=0, run_dir=target,
                              hyperparameters=hyper if nan else None, callbacks=[Announce()])
    print(json.dumps({"path": str(history.run.path), "loss": [float.hex(v) for v in history.history["loss"]]}))
    sys.exit(0)

# bad-fit: every call below must raise a ReproducibilityError and create no run directory.
import keras  # noqa: E402

x = np.zeros((64, 3), "float32")
y = np.zeros((64, 1), "float32")


def build():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


a_file = os.path.join(target, "..", "a-file")
with open(a_file, "w") as f:
    f.write("not a directory")

cases = {}
for v in (True, -1, 2**32, 1.5, "42", None.__class__, [1], float("nan")):
    cases[f"seed={v!r}"] = dict(seed=v)
for v in ("", "Bitwise", "fast", 1, b"bitwise", ["off"]):
    cases[f"mode={v!r}"] = dict(mode=v)
for v in (0, -2, 10**6, True, 2.0, "1", [1]):
    cases[f"threads={v!r}"] = dict(threads=v)
for v in ("yes", 1, None, "epoch", 2.0):
    cases[f"shuffle={v!r}"] = dict(shuffle=v)
for v in (0, -1, 1.5, True, "32"):
    cases[f"batch_size={v!r}"] = dict(batch_size=v)
for v in (1.0, -0.1, "0.1", True, float("nan"), 0.999):
    cases[f"validation_split={v!r}"] = dict(validation_split=v)
cases["resume=True"] = dict(resume=True)
cases["resume=path"] = dict(resume="runs/nope")
cases["run_dir=a file"] = dict(run_dir=a_file)
cases["run_dir=under a file"] = dict(run_dir=os.path.join(a_file, "runs"))
cases["run_dir=deep under a file"] = dict(run_dir=os.path.join(a_file, "a", "b"))
env_cases = {
    "KERAS_REPRO_SEED=abc": ("KERAS_REPRO_SEED", "abc"),
    "KERAS_REPRO_SEED=-1": ("KERAS_REPRO_SEED", "-1"),
    "KERAS_REPRO_MODE=fast": ("KERAS_REPRO_MODE", "fast"),
    "KERAS_REPRO_THREADS=0": ("KERAS_REPRO_THREADS", "0"),
}
model_cases = {"model=42": 42, "model=None": None, "model='m'": "m", "builder returns None": lambda: None,
               "builder returns a layer": lambda: keras.layers.Dense(1)}

results = {}


def attempt(name, call):
    before = set(os.listdir(target)) if os.path.isdir(target) else set()
    try:
        call()
        outcome = {"raised": None}
    except BaseException as e:  # noqa: BLE001 - the test inspects what came out
        mro = [c.__name__ for c in type(e).__mro__]
        outcome = {"raised": type(e).__name__, "repro": "ReproducibilityError" in mro, "message": str(e)}
    after = set(os.listdir(target)) if os.path.isdir(target) else set()
    outcome["new_entries"] = sorted(after - before)
    results[name] = outcome


for name, kwargs in cases.items():
    attempt(name, lambda kwargs=kwargs: keras_repro.fit(build, x, y, epochs=1, verbose=0,
                                                        **{"run_dir": target, **kwargs}))
for name, (var, value) in env_cases.items():
    os.environ[var] = value
    attempt(name, lambda: keras_repro.fit(build, x, y, epochs=1, verbose=0, run_dir=target))
    attempt(name + " (configure)", lambda: keras_repro.configure())
    del os.environ[var]
for name, model in model_cases.items():
    attempt(name, lambda model=model: keras_repro.fit(model, x, y, epochs=1, verbose=0, run_dir=target, seed=1))

# A good fit starts TensorFlow; after that a different policy conflicts.

ok = keras_repro.fit(build, x, y, epochs=1, verbose=0, run_dir=target, seed=1)
results["good fit"] = {"raised": None, "status": ok.run.status, "path": str(ok.run.path)}
attempt("after start: fit(mode='bitwise')", lambda: keras_repro.fit(build, x, y, epochs=1, verbose=0, run_dir=target, mode="bitwise"))
attempt("after start: fit(threads=1)", lambda: keras_repro.fit(build, x, y, epochs=1, verbose=0, run_dir=target, threads=1))
attempt("after start: configure(mode='seeded')", lambda: keras_repro.configure(seed=1, mode="seeded"))
attempt("after start: configure(threads=3)", lambda: keras_repro.configure(seed=1, mode="deterministic", threads=3))
print(json.dumps(results))
