"""README example for `keras-repro check`: a PyDataset adding unseeded noise (the data is the source).

    keras-repro check -- python examples/noisy_pydataset.py
"""

import numpy as np

import keras_repro

keras_repro.configure(seed=42, mode="bitwise")
import keras  # noqa: E402

x = np.linspace(-1, 1, 256, dtype="float32").reshape(128, 2)
y = (x[:, 0] > x[:, 1]).astype("int32")


class Batches(keras.utils.PyDataset):
    def __init__(self, rng=None, **kwargs):
        super().__init__(**kwargs)
        self.rng = rng if rng is not None else np.random.default_rng()  # the bug: no seed

    def __len__(self):
        return 4

    def __getitem__(self, i):
        xb = x[32 * i: 32 * (i + 1)]
        return xb + self.rng.normal(0, 0.05, xb.shape).astype("float32"), y[32 * i: 32 * (i + 1)]


def build():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


keras_repro.fit(build, Batches(), epochs=3, verbose=0, run_dir="runs")
