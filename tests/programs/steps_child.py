"""Optimizer steps at every epoch end, plain `model.fit` against `keras_repro.fit`, for the cases where
Keras's epoch iterator has its own rules (data end, a user's steps_per_epoch with carry-over, partial
last executions of steps_per_execution). Prints one JSON line: {case: {"keras": [...], "repro": [...]}}.
"""

import json
import sys

import numpy as np

import keras_repro

keras_repro.configure(seed=5, mode="deterministic")

import keras  # noqa: E402  (after configure)
import tensorflow as tf  # noqa: E402

rng = np.random.default_rng(0)


class Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(int(self.model.optimizer.iterations.numpy()))


def model(steps_per_execution=1):
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    m.compile("sgd", "mse", steps_per_execution=steps_per_execution)
    return m


def arrays(batches, batch_size=4):
    n = batches * batch_size
    return rng.normal(size=(n, 3)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def dataset(batches, batch_size=4):
    x, y = arrays(batches, batch_size)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


CASES = {
    "arrays 10 batches, steps_per_epoch=11, 4 epochs": (1, lambda: arrays(10), dict(epochs=4, steps_per_epoch=11)),
    "arrays 10 batches, steps_per_epoch=9, 4 epochs": (1, lambda: arrays(10), dict(epochs=4, steps_per_epoch=9)),
    "arrays 10 batches, steps_per_epoch=5, execution 3, 4 epochs": (3, lambda: arrays(10), dict(epochs=4, steps_per_epoch=5)),
    "arrays 7 batches, execution 3": (3, lambda: arrays(7), dict(epochs=2)),
    "arrays 7 batches, execution 101": (101, lambda: arrays(7), dict(epochs=2)),
    "arrays 7 batches, execution 3, validation_split, initial_epoch=1": (
        3, lambda: arrays(8), dict(epochs=3, validation_split=0.125, initial_epoch=1)),
    "arrays 10 batches, shuffle='batch', steps_per_epoch=4, 3 epochs": (
        1, lambda: arrays(10), dict(epochs=3, steps_per_epoch=4, shuffle="batch")),
    "finite tf.data 7 batches, execution 3, 3 epochs": (3, lambda: (dataset(7), None), dict(epochs=3)),
    "finite tf.data 7 batches, steps_per_epoch=5, 3 epochs": (1, lambda: (dataset(7), None), dict(epochs=3, steps_per_epoch=5)),
    "one Callback object (not a list)": (1, lambda: arrays(3), dict(epochs=2, single_callback=True)),
}


def run(fit, case):
    execution, data, kwargs = CASES[case]
    kwargs = dict(kwargs)
    x, y = data()
    steps = Steps()
    kwargs["callbacks"] = steps if kwargs.pop("single_callback", False) else [steps]
    kwargs.setdefault("batch_size", None if isinstance(x, tf.data.Dataset) else 4)
    if kwargs["batch_size"] is None:
        del kwargs["batch_size"]
    fit(model(execution), x, y, verbose=0, **kwargs)
    return steps.ends


def repro_fit(m, x, y, **kwargs):
    return keras_repro.fit(m, x, y, seed=5, mode="deterministic", run_dir=sys.argv[1], **kwargs)


def stream_passes():
    """The k-th iterator read from feeds pass first + k; an iterator made but never read takes none."""
    from keras_repro.shuffle import ArrayStream, epoch_order

    x = np.arange(10, dtype="float32")[:, None]
    stream = ArrayStream((x,), 4, True, seed=11)
    dataset = stream.dataset(first_pass=2)
    fed = []
    for k in range(3):
        iterator = iter(dataset)
        if k == 1:
            iter(dataset)  # Keras makes one at an epoch end that the next epoch may not use
        fed.append([int(v) for batch in iterator for v in batch[0].numpy()[:, 0]])
    stream.rewind()
    fed.append([int(v) for batch in dataset for v in batch[0].numpy()[:, 0]])
    want = [[int(i) for i in epoch_order(10, 11, p, 4, True)] for p in (2, 3, 4, 2)]
    return {"keras": want, "repro": fed}


result = {"ArrayStream passes": stream_passes()}
for case in CASES:
    outcome = {}
    for side, fit in (("keras", lambda m, x, y, **k: m.fit(x, y, **k)), ("repro", repro_fit)):
        try:
            outcome[side] = run(fit, case)
        except Exception as e:  # reported, not raised: the test names the case
            outcome[side] = f"{type(e).__name__}: {e}"[:300]
    result[case] = outcome
print(json.dumps(result))
