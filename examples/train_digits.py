"""Train a small CNN on scikit-learn's bundled 8x8 digits (no download), through keras_repro.

    python examples/train_digits.py --data_dir=digits-data --repro_seed=42 --repro_mode=bitwise

The loader reads every `*.npz` file under --data_dir, as a team's image folder would: drop a file in
and the "same" script trains on other data. Run `examples/seed_story.py` to see why that matters.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from absl import app, flags

import keras_repro
import keras_repro.flags  # noqa: F401  (--repro_seed, --repro_mode, --repro_threads, --repro_dir)

flags.DEFINE_string("data_dir", "digits-data", "Folder of *.npz files with arrays `images` and `labels`.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate.")
flags.DEFINE_integer("epochs", 8, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
FLAGS = flags.FLAGS


def write_digits(data_dir: str) -> None:
    """Writes scikit-learn's digits into data_dir/digits.npz (the baseline data set)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    os.makedirs(data_dir, exist_ok=True)
    np.savez(os.path.join(data_dir, "digits.npz"), images=digits.images.astype("float32") / 16.0,
             labels=digits.target.astype("int32"))


def load_images(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(glob.glob(os.path.join(data_dir, "*.npz")))
    if not files:
        write_digits(data_dir)
        files = sorted(glob.glob(os.path.join(data_dir, "*.npz")))
    parts = [np.load(f) for f in files]
    images = np.concatenate([p["images"] for p in parts])[..., None]
    labels = np.concatenate([p["labels"] for p in parts])
    return images, labels


def build_model():
    import keras

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(FLAGS.learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def main(argv: list[str]) -> None:
    keras_repro.configure()  # first: seeds, threads, devices from --repro_* before TF starts
    images, labels = load_images(FLAGS.data_dir)
    history = keras_repro.fit(build_model, images, labels, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                              validation_split=0.2, verbose=0,
                              hyperparameters={"data_dir": FLAGS.data_dir})
    val_error = 1.0 - history.history["val_accuracy"][-1]
    print(f"validation error {val_error:.1%}  record {history.run.path}")


if __name__ == "__main__":
    app.run(main)
