"""An ordinary absl.app training script (never imports keras_repro), which also starts a Python child.

    python absl_plain.py --epochs=1
"""

import hashlib
import subprocess
import sys

from absl import app, flags

flags.DEFINE_integer("epochs", 1, "Epochs to train.")
FLAGS = flags.FLAGS

# The hook starts keras_repro at the first NumPy/TensorFlow/Keras import, not before.
PROBE = ("import os, sys; before = 'keras_repro' in sys.modules; import numpy; print('GRANDCHILD', before, "
         "'keras_repro.autolog' in sys.modules, os.environ.get('KERAS_REPRO_SEED'), 'tensorflow' in sys.modules)")


def main(argv):
    import keras
    import numpy as np

    x = np.random.rand(48, 3).astype("float32")
    y = (x.sum(axis=1) > 1.5).astype("int32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dropout(0.25), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x=x, y=y, batch_size=8, epochs=FLAGS.epochs, verbose=0)
    weights = b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())
    print("WEIGHTS", hashlib.sha256(weights).hexdigest())
    print(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.strip())


if __name__ == "__main__":
    app.run(main)
