"""An absl.app training script: the policy comes from --repro_* flags; two fits, the second with seed=123."""

import json

import numpy as np
from absl import app, flags

import keras_repro
import keras_repro.flags  # noqa: F401  (defines --repro_seed, --repro_mode, --repro_threads, --repro_dir)

flags.DEFINE_float("learning_rate", 0.01, "Adam's learning rate.")
FLAGS = flags.FLAGS


def main(argv):
    applied = keras_repro.configure()
    import keras

    x = np.linspace(-1, 1, 64, dtype="float32")[:, None]
    y = (x[:, 0] > 0).astype("int32")

    def build():
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(keras.optimizers.Adam(FLAGS.learning_rate), "sparse_categorical_crossentropy")
        return model

    runs = []
    for kwargs in ({}, {"seed": 123}):  # the flags' seed, then an explicit one (must win over the flag)
        run = keras_repro.fit(build, x, y, epochs=1, batch_size=16, verbose=0, **kwargs).run
        runs.append({"policy": run["policy"], "run_applied": run["applied"], "path": str(run.path),
                     "flags": run["code"]["flags"]})
    print(json.dumps({"applied": applied, "runs": runs}))


if __name__ == "__main__":
    app.run(main)
