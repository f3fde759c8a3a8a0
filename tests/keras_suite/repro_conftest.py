"""conftest.py for Keras's own fit tests, copied into a temp dir by `tests/keras_suite/run.py`.

With KERAS_SUITE_ROUTE=1 every `keras.Model.fit` goes through
`keras_repro.fit(model, x, y, seed=1234, mode="deterministic", **kwargs)` (via `keras_repro.autolog` when
the branch has it); a re-entrancy guard lets keras_repro.fit's own `model.fit` reach Keras's. Without it
the tests run on plain Keras (the baseline).
"""

import inspect
import os
import tempfile
import threading

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROUTE = os.environ.get("KERAS_SUITE_ROUTE") == "1"

if ROUTE:
    os.environ.setdefault("KERAS_REPRO_DIR", tempfile.mkdtemp(prefix="keras-suite-runs-"))
    import keras_repro

    if hasattr(keras_repro, "autolog"):
        keras_repro.autolog(seed=1234, mode="deterministic")
    else:
        keras_repro.configure(seed=1234, mode="deterministic")
        import keras

        _original = keras.Model.fit
        _signature = inspect.signature(_original)
        _inside = threading.local()

        def _routed_fit(self, *args, **kwargs):
            if getattr(_inside, "active", False):
                return _original(self, *args, **kwargs)
            arguments = dict(_signature.bind(self, *args, **kwargs).arguments)
            arguments.pop("self")
            x, y = arguments.pop("x", None), arguments.pop("y", None)
            _inside.active = True
            try:
                return keras_repro.fit(self, x, y, seed=1234, mode="deterministic", **arguments)
            finally:
                _inside.active = False

        _routed_fit.__wrapped__ = _original
        keras.Model.fit = _routed_fit


def skip_if_backend(given_backend, reason):
    """Keras's own conftest helper (some of its test files import it)."""
    from keras.src.backend import backend

    return pytest.mark.skipif(backend() == given_backend, reason=reason)


_NOT_INSTALLED = ("jax", "torch", "grain", "orbax", "tensorboard")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_trainable_backend: needs a backend that can train")


def pytest_collection_modifyitems(config, items):
    from keras.src.backend import backend

    skip = pytest.mark.skip(reason="Trainer not implemented for the numpy backend.")
    for item in items:
        if "requires_trainable_backend" in item.keywords and backend() == "numpy":
            item.add_marker(skip)
        if any(name in item.name.lower() for name in _NOT_INSTALLED):
            item.add_marker(pytest.mark.skip(reason="needs a package not installed here"))
