"""Applying a policy: what configure() applies, reads back, and refuses; each case in a fresh process,
because thread pools, devices and oneDNN are fixed per process."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from helpers import run_child

PREAMBLE = "import json, sys, keras_repro\n"


def child(code: str, *, expect: int = 0, env: dict | None = None):
    return run_child([sys.executable, "-c", PREAMBLE + textwrap.dedent(code)], expect=expect, env=env)


def last_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_does_not_import_tensorflow():
    proc = child("print(json.dumps({'tf': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}))")
    assert last_json(proc) == {"tf": False, "keras": False}


def test_bitwise_applies_and_reads_back_threads_devices_onednn():
    proc = child(
        """
        applied = keras_repro.configure(seed=3, mode="bitwise")
        import os, tensorflow as tf
        applied["tf_intra"] = tf.config.threading.get_intra_op_parallelism_threads()
        applied["tf_inter"] = tf.config.threading.get_inter_op_parallelism_threads()
        applied["determinism"] = __import__("keras_repro.runtime").runtime.op_determinism_enabled()
        applied["onednn_env"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
        print(json.dumps(applied))
        """,
        env={"TF_ENABLE_ONEDNN_OPTS": None},
    )
    applied = last_json(proc)
    assert (applied["seed"], applied["mode"], applied["threads"]) == (3, "bitwise", 1)
    assert (applied["tf_intra"], applied["tf_inter"], applied["determinism"]) == (1, 1, True)
    assert applied["onednn"] == "off" and applied["onednn_env"] == "0"
    assert applied["devices"] == "cpu-only"
    assert applied["seeded"] == ["python", "numpy", "tensorflow", "keras"]


def test_seeded_mode_seeds_but_leaves_determinism_and_threads_alone():
    proc = child(
        """
        applied = keras_repro.configure(seed=3, mode="seeded")
        import random, tensorflow as tf
        applied["determinism"] = __import__("keras_repro.runtime").runtime.op_determinism_enabled()
        applied["tf_intra"] = tf.config.threading.get_intra_op_parallelism_threads()
        applied["draw"] = random.random()
        print(json.dumps(applied))
        """
    )
    applied = last_json(proc)
    assert applied["determinism"] is False and applied["op_determinism"] is False
    assert applied["tf_intra"] == 0 and applied["threads"] is None
    import random

    random.seed(3)
    assert applied["draw"] == random.random()


def test_mode_off_changes_nothing():
    proc = child(
        """
        import random
        random.seed(99); expected = random.random(); random.seed(99)
        applied = keras_repro.configure(seed=5, mode="off")
        print(json.dumps({"applied": applied, "tf": "tensorflow" in sys.modules, "same": random.random() == expected}))
        """
    )
    out = last_json(proc)
    assert out["tf"] is False, "mode off must not even import TensorFlow"
    assert out["same"] is True, "mode off must not reseed Python's random"
    assert out["applied"]["seed"] is None and out["applied"]["seeded"] == []


def test_no_seed_draws_one_prints_it_and_records_it():
    proc = child("a = keras_repro.configure(mode='seeded'); print(json.dumps(a))")
    applied = last_json(proc)
    assert isinstance(applied["seed"], int) and applied["seed_source"] == "drawn"
    assert f"seed={applied['seed']}" in proc.stderr, proc.stderr


def test_same_policy_again_is_a_no_op_and_another_after_start_is_refused():
    proc = child(
        """
        first = keras_repro.configure(seed=1, mode="deterministic", threads=1)
        import tensorflow as tf
        tf.constant(1.0) + 1.0   # the runtime starts
        again = keras_repro.configure(seed=1, mode="deterministic", threads=1)
        try:
            keras_repro.configure(seed=2, mode="deterministic", threads=1)
        except keras_repro.PolicyConflictError as e:
            print(json.dumps({"same": first == again, "error": str(e)}))
        """
    )
    out = last_json(proc)
    assert out["same"] is True
    assert "already runs under" in out["error"] and "Fix:" in out["error"]


def test_another_policy_before_the_runtime_starts_is_applied():
    proc = child(
        """
        keras_repro.configure(seed=1, mode="seeded")
        applied = keras_repro.configure(seed=2, mode="bitwise")
        print(json.dumps(applied))
        """,
        # seeded imports TF first: on a CPU with AVX-512 VNNI/BF16 it turns oneDNN on, too late for bitwise
        env={"TF_ENABLE_ONEDNN_OPTS": "0"},
    )
    assert last_json(proc)["seed"] == 2 and last_json(proc)["threads"] == 1


def test_threads_after_the_runtime_started_raise_too_late_with_the_fix():
    proc = child(
        """
        import tensorflow as tf
        tf.constant(1.0) + 1.0
        try:
            keras_repro.configure(seed=1, mode="deterministic", threads=1)
        except keras_repro.TooLateError as e:
            print(json.dumps({"error": str(e)}))
        """
    )
    error = last_json(proc)["error"]
    assert "thread count" in error and "already started" in error
    assert "keras-repro run" in error and "configure" in error


def test_bitwise_after_tensorflow_imported_with_onednn_on_is_too_late():
    proc = child(
        """
        import tensorflow as tf
        try:
            keras_repro.configure(seed=1, mode="bitwise")
        except keras_repro.ReproducibilityError as e:
            print(json.dumps({"type": type(e).__name__, "error": str(e)}))
        """,
        env={"TF_ENABLE_ONEDNN_OPTS": "1"},
    )
    out = last_json(proc)
    assert out["type"] in ("TooLateError", "ReproducibilityError")
    assert "TF_ENABLE_ONEDNN_OPTS" in out["error"] and "Fix:" in out["error"]


def test_bitwise_after_tensorflow_imported_with_onednn_off_is_fine():
    proc = child(
        """
        import tensorflow as tf
        print(json.dumps(keras_repro.configure(seed=1, mode="bitwise")))
        """,
        env={"TF_ENABLE_ONEDNN_OPTS": "0"},
    )
    assert last_json(proc)["onednn"] == "off"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"seed": True}, "integer"),
        ({"seed": 1.5}, "integer"),
        ({"seed": "42"}, "integer"),
        ({"seed": -1}, "[0, 4294967295]"),
        ({"seed": 2**32}, "[0, 4294967295]"),
        ({"mode": "bitwise "}, "Did you mean 'bitwise'"),
        ({"mode": "fast"}, "one of"),
        ({"mode": 1}, "one of"),
        ({"threads": 0}, "positive integer"),
        ({"threads": -2}, "positive integer"),
        ({"threads": 1.0}, "positive integer"),
        ({"threads": True}, "positive integer"),
    ],
)
def test_bad_policy_input_is_refused_before_anything_happens(kwargs, fragment):
    import keras_repro

    with pytest.raises(keras_repro.InvalidPolicyError) as info:
        keras_repro.configure(**kwargs)
    message = str(info.value)
    assert fragment in message and "Received:" in message and "Fix:" in message
