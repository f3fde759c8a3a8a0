"""`keras_repro.fit` takes exactly the steps of `model.fit` (issue 10 item 0).

Keras's epoch iterator has rules of its own: an epoch ends at the data's end, a user's `steps_per_epoch`
carries one iterator over to the next epoch until the data ran out once, and with `steps_per_execution`
the last execution of an epoch is partial. keras_repro feeds arrays as a dataset of one pass per Keras
iterator (`shuffle.ArrayStream`) and hands a user's tf.data to Keras as it is, so Keras applies its own
rules; one child compares the optimizer steps at every epoch end with plain `model.fit` for each case.
"""

from __future__ import annotations

import json
import sys

import pytest

from helpers import REPO, run_child

from keras_repro.shuffle import pass_at_epoch


@pytest.mark.slow
def test_optimizer_steps_at_every_epoch_end_equal_plain_model_fit(tmp_path):
    proc = run_child([sys.executable, str(REPO / "tests" / "programs" / "steps_child.py"), str(tmp_path)], timeout=600)
    cases = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(cases) == 11
    differ = {case: sides for case, sides in cases.items() if sides["keras"] != sides["repro"]}
    assert not differ, json.dumps(differ, indent=1)
    # The cases really exercise Keras's rules (else equal numbers would prove nothing).
    assert cases["arrays 10 batches, steps_per_epoch=9, 4 epochs"]["keras"] == [9, 10, 19, 20]
    assert cases["arrays 7 batches, execution 3"]["keras"] == [7, 14]


@pytest.mark.parametrize(
    "batches, steps, per_execution, epochs_done, expected",
    [
        (10, None, 1, 0, (0, 0)),
        (10, None, 3, 5, (5, 0)),  # a fresh pass every epoch
        (10, 11, 1, 3, (3, 0)),  # longer than the data: the epoch ends with it
        (10, 9, 1, 1, (0, 9)),  # carried over: epoch 1 continues pass 0 after 9 batches
        (10, 9, 1, 2, (1, 0)),  # ... which runs out after one step; epoch 2 starts pass 1
        (10, 9, 1, 3, (1, 9)),
        (10, 5, 1, 1, (0, 5)),
        (10, 5, 1, 2, (1, 0)),
        (10, 5, 3, 1, (0, 6)),  # executions of 3: ceil(5/3) = 2 of them, 6 batches
        (10, 5, 3, 2, (1, 0)),
    ],
)
def test_pass_at_epoch_walks_keras_epoch_iterator(batches, steps, per_execution, epochs_done, expected):
    assert pass_at_epoch(batches, steps, per_execution, epochs_done) == expected


def test_user_callbacks_are_read_as_keras_reads_them():
    from keras_repro.training import user_callbacks

    class Callback:
        pass

    a, b, c = Callback(), Callback(), Callback()
    assert user_callbacks(None) == []
    assert user_callbacks(a) == [a]
    assert user_callbacks([a, (b, [c])]) == [a, b, c]

    class CallbackList:
        def __init__(self, callbacks):
            self.callbacks = callbacks

    assert user_callbacks(CallbackList([a, b])) == [a, b]


def test_modules_fit_imports_before_applying_the_policy_do_not_import_keras():
    code = ("import sys, keras_repro.training, keras_repro.feeding, keras_repro.record_writer, keras_repro.shuffle; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    proc = run_child([sys.executable, "-c", code])
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_fit_applies_bitwise_before_it_imports_keras(tmp_path):
    # On CPUs where TF turns oneDNN on by default, bitwise can only turn it off before TF is imported:
    # fit must apply the policy first (a builder that imports keras itself leaves that to fit).
    code = f"""
import json, numpy as np, keras_repro
def build():
    import keras
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model
history = keras_repro.fit(build, np.ones((8, 3), "float32"), np.ones((8, 1), "float32"), seed=2, mode="bitwise",
                          epochs=1, verbose=0, run_dir={str(tmp_path)!r})
print(json.dumps(history.run["applied"]))
"""
    proc = run_child([sys.executable, "-c", code], timeout=300)
    applied = json.loads(proc.stdout.strip().splitlines()[-1])
    assert applied["mode"] == "bitwise" and applied["onednn"] == "off"
