"""Per-step input digests: the digest function, and data.steps for arrays, tf.data, generators, PyDataset.

In-process (one TensorFlow import); reproducibility across processes is tested in tests/test_locate.py.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from keras_repro import ReproCallback  # noqa: E402
from keras_repro.input_digest import StepInputs, describe_source, digest_structure, hex64  # noqa: E402


def _hex(value):
    return hex64(digest_structure(tf, value).numpy())


def test_digest_tells_content_position_dtype_and_shape_apart():
    x = np.arange(12, dtype="float32").reshape(3, 4)
    assert _hex(x) == _hex(x.copy())
    y = x.copy()
    y[2, 3] = np.nextafter(y[2, 3], 100)  # one ulp
    assert _hex(y) != _hex(x)
    assert _hex(x[::-1].copy()) != _hex(x)  # same rows, other order
    assert _hex(x.astype("int32")) != _hex(x.astype("float32"))
    assert _hex(x.reshape(4, 3)) == _hex(x.reshape(4, 3))
    assert _hex(np.zeros(3, "float32")) != _hex(np.zeros(4, "float32"))
    for dtype in ("float16", "float64", "int8", "bool", "int64", "uint8"):
        assert len(_hex(np.ones((2, 3), dtype))) == 16
    assert _hex({"a": x, "b": x}) != _hex({"a": x, "b": y})
    assert digest_structure(tf, None) is None


def test_ragged_and_sparse_batches_are_digested_through_their_components():
    # Keras's trainer tests feed RaggedTensor batches; the digest must take them (it raised TypeError).
    a = tf.ragged.constant([[1, 2], [3]])
    assert _hex(a) == _hex(tf.ragged.constant([[1, 2], [3]]))
    assert _hex(a) != _hex(tf.ragged.constant([[1], [2, 3]]))  # same values, other rows
    sparse = tf.sparse.SparseTensor(indices=[[0, 1]], values=[1.0], dense_shape=[2, 2])
    assert len(_hex(sparse)) == 16


def test_digest_is_the_same_inside_a_graph_and_xla():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    eager = _hex(x)
    graph = tf.function(lambda t: digest_structure(tf, t))(x).numpy()
    xla = tf.function(lambda t: digest_structure(tf, t), jit_compile=True)(x).numpy()
    assert hex64(graph) == eager == hex64(xla)


def _model(jit=False):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", jit_compile=jit)
    return model


class _Batches(keras.utils.PyDataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return np.full((4, 3), i, "float32"), np.zeros((4, 2), "float32")


def _gen():
    while True:
        yield np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")


@pytest.mark.parametrize("kind", ["arrays", "dataset", "generator", "pydataset", "sample_weight", "xla"])
def test_fit_records_one_digest_per_step(tmp_path, kind):
    x = np.arange(36, dtype="float32").reshape(12, 3)
    y = np.zeros((12, 2), "float32")
    model = _model(jit=kind == "xla")
    cb = ReproCallback(tmp_path)
    kwargs = {"epochs": 2, "verbose": 0, "callbacks": [cb], "shuffle": False}
    if kind in ("arrays", "xla"):
        model.fit(x, y, batch_size=4, **kwargs)
    elif kind == "sample_weight":
        model.fit(x, y, batch_size=4, sample_weight=np.ones(12, "float32"), **kwargs)
    elif kind == "dataset":
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), **kwargs)
    elif kind == "generator":
        model.fit(_gen(), steps_per_epoch=3, **kwargs)
    else:
        model.fit(_Batches(), **kwargs)
    steps = cb.record["data"]["steps"]
    assert len(steps) == len(cb.record.steps) == 6
    expected = ["x", "y", "sample_weight"] if kind == "sample_weight" else ["x", "y"]
    assert all(list(s) == expected for s in steps), steps
    if kind in ("arrays", "dataset", "pydataset", "xla"):  # three different batches, repeated in epoch 2
        assert steps[:3] == steps[3:] and len({s["x"] for s in steps[:3]}) == 3
        assert steps[0]["x"] == _hex(x[:4] if kind != "pydataset" else np.zeros((4, 3), "float32"))


def test_install_rebuilds_a_train_function_made_before():
    model = _model()
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    assert model.train_function is not None
    tap = StepInputs.install(model)
    assert model.train_function is None and StepInputs.install(model) is tap


def test_describe_source():
    assert describe_source(_Batches()) == "_Batches (keras.utils.PyDataset)"
    assert describe_source(_gen()).startswith("generator function _gen() (")
    assert describe_source(np.ones(3)) is None
    ds = tf.data.Dataset.range(4).map(lambda v: v + 1).batch(2)
    assert describe_source(ds) == "tf.data BatchDataset <- MapDataset <- RangeDataset"


def test_ring_buffer_wraps_and_steps_per_execution(tmp_path, monkeypatch):
    monkeypatch.setattr(StepInputs, "CAPACITY", 4)
    x = np.arange(30, dtype="float32").reshape(10, 3)
    y = np.zeros((10, 2), "float32")
    cb = ReproCallback(tmp_path)
    _model().fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    steps = cb.record["data"]["steps"]
    assert [s["x"] for s in steps] == [_hex(x[k : k + 1]) for k in range(10)]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", steps_per_execution=3)
    cb = ReproCallback(tmp_path)
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    steps = cb.record["data"]["steps"]
    assert len(cb.record.steps) == 4 and len(steps) == 10  # one entry per train step, not per execution
    assert [s["x"] for s in steps] == [_hex(x[k : k + 1]) for k in range(10)]
