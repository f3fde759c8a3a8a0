"""The canary for TF/Keras upgrades: every accessor of keras_repro/_compat.py, touched in-process.

If TensorFlow or Keras moves an internal keras_repro relies on, exactly one test here fails with a
`CompatError` naming it. Also: the error says symbol, versions and fix, and no other module of
keras_repro reaches a TF/Keras internal itself (an AST scan, with a negative control).
"""

from __future__ import annotations

import ast
import inspect
import random
from pathlib import Path

import numpy as np
import pytest

from keras_repro import _compat
from keras_repro.errors import CompatError, ReproducibilityError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

PACKAGE = Path(_compat.__file__).parent


class _Holder(keras.layers.Layer):
    """A custom layer holding a Dropout and a tf.random.Generator: only a recursive walk finds them."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = keras.layers.Dropout(0.5, seed=1)
        self.generator = tf.random.Generator.from_seed(3)

    def call(self, x):
        return self.drop(x)


@pytest.fixture(scope="module")
def model():
    m = keras.Sequential([keras.Input((4,)), _Holder(), keras.layers.Dense(2)])
    m.compile("sgd", "mse", metrics=["mae"])
    return m


# One test per accessor --------------------------------------------------------------------------

def test_tf_runtime_started():
    tf.constant(1.0) + 1.0  # any op starts the runtime
    assert _compat.tf_runtime_started() is True


def test_tf_eager_op_seed_rng():
    rng = _compat.tf_eager_op_seed_rng()
    assert rng is None or isinstance(rng, random.Random)  # None: no global seed was set in this process
    try:
        tf.random.set_seed(5)
        first = _compat.tf_eager_op_seed_rng().random()
        tf.random.set_seed(5)
        assert _compat.tf_eager_op_seed_rng().random() == first  # the state op seeds are drawn from
    finally:
        tf.random.set_seed(None)  # back to unseeded


def test_onednn_enabled():
    assert isinstance(_compat.onednn_enabled(), bool)


def test_op_determinism_enabled_and_disable_op_determinism():
    was = _compat.op_determinism_enabled()
    try:
        tf.config.experimental.enable_op_determinism()
        assert _compat.op_determinism_enabled() is True
        _compat.disable_op_determinism()
        assert _compat.op_determinism_enabled() is False
    finally:
        if was:
            tf.config.experimental.enable_op_determinism()


def test_tf_global_generator_and_clear_tf_global_generator():
    before = _compat.tf_global_generator()
    try:
        generator = tf.random.Generator.from_seed(7)
        tf.random.set_global_generator(generator)
        assert _compat.tf_global_generator() is generator
        _compat.clear_tf_global_generator()
        assert _compat.tf_global_generator() is None
    finally:
        if before is not None:
            tf.random.set_global_generator(before)


def test_keras_global_seed_generator():
    created = _compat.keras_global_seed_generator(create=True)
    assert isinstance(created, keras.random.SeedGenerator)
    assert _compat.keras_global_seed_generator() is created


def test_flatten_layers_finds_nested_layers(model):
    layers = _compat.flatten_layers(model)
    assert layers[0] is model
    assert any(isinstance(layer, keras.layers.Dropout) for layer in layers), "the nested Dropout was missed"
    assert any(isinstance(getattr(layer, "generator", None), tf.random.Generator) for layer in layers)


def test_flatten_layers_of_something_else_is_a_compat_error_not_a_fallback():
    with pytest.raises(CompatError, match="_flatten_layers"):
        _compat.flatten_layers(object())


def test_symbolic_build(model):
    spec = (tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None, 2), tf.float32))
    _compat.symbolic_build(model, spec)
    assert model.optimizer.built
    assert model.metrics_variables


def test_keras_maybe_symbolic_build_and_override_keras_maybe_symbolic_build():
    m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    original = _compat.keras_maybe_symbolic_build(m)
    assert callable(original)
    assert _compat.override_keras_maybe_symbolic_build(m, lambda iterator=None, data_batch=None: None) is True
    assert _compat.override_keras_maybe_symbolic_build(m, lambda iterator=None, data_batch=None: None) is False


def test_keras_tf_trainer():
    trainer = _compat.keras_tf_trainer()
    assert callable(trainer.reduce_per_replica)


def test_every_accessor_has_a_test_here():
    source = Path(__file__).read_text()
    accessors = [name for name, f in inspect.getmembers(_compat, inspect.isfunction)
                 if f.__module__ == _compat.__name__ and not name.startswith("_") and name != "internal"]
    assert accessors, "no accessors found"
    untested = [name for name in accessors if f"_compat.{name}(" not in source]
    assert not untested, f"accessors without a canary line in tests/test_compat.py: {untested}"



@pytest.mark.parametrize("module, attribute, accessor", [
    ("tensorflow.python.ops.stateful_random_ops", "global_generator", "tf_global_generator"),
    ("tensorflow.python.framework.config", "is_op_determinism_enabled", "op_determinism_enabled"),
    ("tensorflow.python.util._pywrap_util_port", "IsMklEnabled", "onednn_enabled"),
    ("keras.src.backend.tensorflow.trainer", "reduce_per_replica", "keras_tf_trainer"),
    ("keras.src.random.seed_generator", "GLOBAL_SEED_GENERATOR", "keras_global_seed_generator"),
])
def test_a_simulated_upgrade_that_moves_an_internal_fails_with_its_name(monkeypatch, module, attribute, accessor):
    import importlib

    monkeypatch.delattr(importlib.import_module(module), attribute)
    with pytest.raises(CompatError, match=f"`{module}.{attribute}`"):
        getattr(_compat, accessor)()


# The error --------------------------------------------------------------------------------------

def test_compat_error_names_the_symbol_the_tested_versions_and_the_fix():
    with pytest.raises(CompatError) as info:
        _compat.internal("tensorflow.python.no_such_module.thing", lambda: np.no_such_attribute)
    message = str(info.value)
    assert "`tensorflow.python.no_such_module.thing`" in message
    assert _compat.TESTED_WITH in message and "TensorFlow 2.21" in message
    assert "Fix: " in message and "pip install" in message
    assert "AttributeError" in message  # what happened
    assert isinstance(info.value, ReproducibilityError)
    assert isinstance(info.value.__cause__, AttributeError)


def test_errors_raised_by_the_internal_itself_are_not_reported_as_compat_errors():
    def boom():
        raise ValueError("a real error")

    with pytest.raises(ValueError, match="a real error"):
        _compat.internal("something", boom)


# Nobody else touches internals ------------------------------------------------------------------

_FORBIDDEN_MODULES = ("keras.src", "tensorflow.python", "tf_keras.src")
_PRIVATE_NAMES = {
    "_flatten_layers", "_layers", "_symbolic_build", "_maybe_symbolic_build", "_distribute_strategy",
    "_in_multi_worker_mode", "_collective_all_reduce_multi_worker", "_context_handle", "_rng",
    "_variant_tensor", "_VariantDataset", "_flat_structure", "_flags", "_tf_api_names", "_pywrap_util_port",
    "global_generator", "GLOBAL_SEED_GENERATOR",
}


def internals_used(source: str) -> list[str]:
    """TF/Keras internals a module reaches: imports of private packages, the private names keras_repro
    used before _compat.py existed, as attributes or as getattr/setattr/hasattr/vars-lookup strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            names = []
        found += [f"import {n}" for n in names if n.startswith(_FORBIDDEN_MODULES) or "_pywrap" in n]
        if isinstance(node, ast.Attribute) and node.attr in _PRIVATE_NAMES:
            found.append(f".{node.attr} (line {node.lineno})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
            "getattr", "setattr", "hasattr", "delattr"
        ):
            found += [f"{node.func.id}(..., {a.value!r}) (line {node.lineno})" for a in node.args
                      if isinstance(a, ast.Constant) and a.value in _PRIVATE_NAMES]
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if isinstance(node.left, ast.Constant) and node.left.value in _PRIVATE_NAMES:
                found.append(f"{node.left.value!r} in ... (line {node.lineno})")
    return found


def test_no_module_but_compat_reaches_tf_or_keras_internals():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_compat.py":
            continue
        used = internals_used(path.read_text(encoding="utf-8"))
        if used:
            offenders[str(path.relative_to(PACKAGE))] = used
    assert not offenders, f"TF/Keras internals outside keras_repro/_compat.py (add an accessor there): {offenders}"


def test_control_the_scan_sees_internals():
    # Negative control, so the scan above can fail: each way the old code reached an internal is seen.
    snippet = (
        "from tensorflow.python.eager import context\n"
        "import keras.src.random.seed_generator\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        "layers = model._flatten_layers(include_self=True)\n"
        "s = getattr(model, '_distribute_strategy', None)\n"
        "ok = '_maybe_symbolic_build' not in vars(model)\n"
        "flags = flag_values._flags()\n"
    )
    used = internals_used(snippet)
    assert len([u for u in used if u.startswith("import")]) >= 3, used
    for name in ("_flatten_layers", "_distribute_strategy", "_maybe_symbolic_build", "_flags"):
        assert any(name in u for u in used), (name, used)
    assert internals_used(PACKAGE.joinpath("_compat.py").read_text(encoding="utf-8")), "the scan misses _compat.py's own"


# --- resume ---
def test_model_checkpoint_counters(tmp_path):
    keras = pytest.importorskip("keras")
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"), save_freq=4)
    assert _compat.model_checkpoint_counters(ckpt) == {"_batches_seen_since_last_saving": 0, "_last_batch_seen": None}
    _compat.model_checkpoint_counters(ckpt, {"_last_batch_seen": 2})
    assert ckpt._last_batch_seen == 2
    del ckpt._last_batch_seen  # as if Keras renamed it: one clear error, nothing invented
    with pytest.raises(CompatError, match="_last_batch_seen"):
        _compat.model_checkpoint_counters(ckpt, {"_last_batch_seen": 3})


# --- locate ---
def test_dataset_chain():
    tf = pytest.importorskip("tensorflow")
    from keras_repro import _compat

    ds = tf.data.Dataset.from_tensor_slices([1, 2, 3]).shuffle(3, seed=1).batch(2)
    assert _compat.dataset_chain(ds) == ["BatchDataset", "ShuffleDataset", "TensorSliceDataset"]
