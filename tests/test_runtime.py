"""Applying a policy: what configure() applies, reads back, and refuses; in fresh processes, because thread
pools, devices and oneDNN are fixed per process.

Three TensorFlow children (a module fixture, two at a time) each walk through several configure() calls
in an order where one claim sets up the next; the two children that never import TensorFlow stay apart.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from helpers import ChildSpec, last_json, run_child, run_children_concurrently

PREAMBLE = "import json, sys, keras_repro\n"


def child(code: str, *, expect: int = 0, env: dict | None = None):
    return run_child([sys.executable, "-c", PREAMBLE + textwrap.dedent(code)], expect=expect, env=env)


def spec(code: str, env: dict) -> ChildSpec:
    return ChildSpec([sys.executable, "-c", PREAMBLE + textwrap.dedent(code)], env=env)


# 1. bitwise first thing (oneDNN not set): applied and read back; then the same policy again is a no-op,
#    and another one after the runtime started is refused.
BITWISE_THEN_CONFLICT = """
    first = keras_repro.configure(seed=3, mode="bitwise")
    import os, tensorflow as tf
    applied = dict(first)
    applied["tf_intra"] = tf.config.threading.get_intra_op_parallelism_threads()
    applied["tf_inter"] = tf.config.threading.get_inter_op_parallelism_threads()
    applied["determinism"] = __import__("keras_repro.runtime").runtime.op_determinism_enabled()
    applied["onednn_env"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    tf.constant(1.0) + 1.0   # the runtime starts
    again = keras_repro.configure(seed=3, mode="bitwise")
    try:
        keras_repro.configure(seed=2, mode="bitwise")
        error = None
    except keras_repro.PolicyConflictError as e:
        error = str(e)
    print(json.dumps({"applied": applied, "same": first == again, "error": error}))
"""

# 2. TensorFlow imported first with oneDNN off: no seed draws one; another seed (seeded) and then another
#    mode (bitwise) before the runtime starts are applied, and bitwise after the import is fine.
SEEDED_THEN_BITWISE = """
    import random, tensorflow as tf
    drawn = keras_repro.configure(mode="seeded")
    seeded = keras_repro.configure(seed=3, mode="seeded")
    seeded["draw"] = random.random()
    seeded["determinism"] = __import__("keras_repro.runtime").runtime.op_determinism_enabled()
    seeded["tf_intra"] = tf.config.threading.get_intra_op_parallelism_threads()
    bitwise = keras_repro.configure(seed=2, mode="bitwise")
    print(json.dumps({"drawn": drawn, "seeded": seeded, "bitwise": bitwise}))
"""

# 3. TensorFlow imported first with oneDNN on: bitwise is too late; then, the runtime started, a thread
#    count is too late as well.
TOO_LATE = """
    import tensorflow as tf
    out = {}
    try:
        keras_repro.configure(seed=1, mode="bitwise")
    except keras_repro.ReproducibilityError as e:
        out["onednn"] = {"type": type(e).__name__, "error": str(e)}
    tf.constant(1.0) + 1.0
    try:
        keras_repro.configure(seed=1, mode="deterministic", threads=1)
    except keras_repro.TooLateError as e:
        out["threads"] = str(e)
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def configured():
    procs = run_children_concurrently([spec(BITWISE_THEN_CONFLICT, {"TF_ENABLE_ONEDNN_OPTS": None}),
                                       spec(SEEDED_THEN_BITWISE, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
                                       spec(TOO_LATE, {"TF_ENABLE_ONEDNN_OPTS": "1"})])
    return dict(zip(["bitwise", "seeded", "too late"], procs, strict=True))


def test_import_does_not_import_tensorflow():
    proc = child("print(json.dumps({'tf': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}))")
    assert last_json(proc) == {"tf": False, "keras": False}


@pytest.mark.slow
def test_bitwise_applies_and_reads_back_threads_devices_onednn(configured):
    applied = last_json(configured["bitwise"])["applied"]
    assert (applied["seed"], applied["mode"], applied["threads"]) == (3, "bitwise", 1)
    assert (applied["tf_intra"], applied["tf_inter"], applied["determinism"]) == (1, 1, True)
    assert applied["onednn"] == "off" and applied["onednn_env"] == "0"
    assert applied["devices"] == "cpu-only"
    assert applied["seeded"] == ["python", "numpy", "tensorflow", "keras"]


@pytest.mark.slow
def test_seeded_mode_seeds_but_leaves_determinism_and_threads_alone(configured):
    applied = last_json(configured["seeded"])["seeded"]
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


@pytest.mark.slow
def test_no_seed_draws_one_prints_it_and_records_it(configured):
    applied = last_json(configured["seeded"])["drawn"]
    assert isinstance(applied["seed"], int) and applied["seed_source"] == "drawn"
    assert f"seed={applied['seed']}" in configured["seeded"].stderr, configured["seeded"].stderr


@pytest.mark.slow
def test_same_policy_again_is_a_no_op_and_another_after_start_is_refused(configured):
    out = last_json(configured["bitwise"])
    assert out["same"] is True
    assert out["error"] and "already runs under" in out["error"] and "Fix:" in out["error"]


@pytest.mark.slow
def test_another_policy_before_the_runtime_starts_is_applied(configured):
    out = last_json(configured["seeded"])
    assert out["seeded"]["seed"] == 3 and out["seeded"]["mode"] == "seeded"
    assert out["bitwise"]["seed"] == 2 and out["bitwise"]["threads"] == 1


@pytest.mark.slow
def test_threads_after_the_runtime_started_raise_too_late_with_the_fix(configured):
    error = last_json(configured["too late"])["threads"]
    assert "thread count" in error and "already started" in error
    assert "keras-repro run" in error and "configure" in error


@pytest.mark.slow
def test_bitwise_after_tensorflow_imported_with_onednn_on_is_too_late(configured):
    out = last_json(configured["too late"])["onednn"]
    assert out["type"] in ("TooLateError", "ReproducibilityError")
    assert "TF_ENABLE_ONEDNN_OPTS" in out["error"] and "Fix:" in out["error"]


@pytest.mark.slow
def test_bitwise_after_tensorflow_imported_with_onednn_off_is_fine(configured):
    assert last_json(configured["seeded"])["bitwise"]["onednn"] == "off"


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
