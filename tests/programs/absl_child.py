"""An absl.app training script: the policy comes from --repro_* flags."""

import json

import numpy as np
from absl import app, flags

import keras_repro
import keras_repro.flags  # noqa: F401  (defines --repro_seed, --repro_mode, --repro_threads, --repro_dir)

flags.DEFINE_float("learning_rate", 0.01, "Adam's learning rate.")
flags.DEFINE_boolean("explicit_seed", False, "pass seed=123 to fit explicitly (must win over the flag)")
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

    kwargs = {"seed": 123} if FLAGS.explicit_seed else {}
    history = keras_repro.fit(build, x, y, epochs=1, batch_size=16, verbose=0, **kwargs)
    run = history.run
    print(json.dumps({"applied": applied, "policy": run["policy"], "run_applied": run["applied"],
                      "path": str(run.path), "flags": run["code"]["flags"]}))


if __name__ == "__main__":
    app.run(main)
