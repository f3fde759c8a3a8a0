"""The one room for TensorFlow/Keras internals.

Every private attribute, `keras.src...` or `tensorflow.python...` name keras_repro uses is reached
through one accessor here, so that a TF/Keras upgrade that moves one fails in one place with one clear
error (`CompatError`: the symbol, the versions tested, the fix) and one fast canary test
(`tests/test_compat.py`) instead of an AttributeError in the middle of a fit. Where a public API does
the same, use it instead of adding an accessor.

Example:
    >>> from keras_repro import _compat
    >>> _compat.TESTED_WITH
    'TensorFlow 2.21 / Keras 3.15'
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from keras_repro.errors import CompatError

TESTED_WITH = "TensorFlow 2.21 / Keras 3.15"

_T = TypeVar("_T")


def internal(symbol: str, get: Callable[[], _T]) -> _T:
    """Returns `get()`; an ImportError/AttributeError/KeyError becomes a `CompatError` naming `symbol`."""
    try:
        return get()
    except (ImportError, AttributeError, KeyError, TypeError) as e:
        raise CompatError(
            f"keras_repro needs the TensorFlow/Keras internal `{symbol}`, which this installation does not "
            f"have ({type(e).__name__}: {e}). keras_repro was tested with {TESTED_WITH}. Fix: install the "
            "tested versions (pip install 'tensorflow-cpu==2.21.*'), or report the versions you use."
        ) from e


def _unused(*_: Any) -> None:  # keeps `Any` imported for accessors added below
    return None


# Accessors ---------------------------------------------------------------------------------------
# One function per internal, named after what it gives, each through `internal(...)`.


# --- locate ---
def dataset_chain(dataset: Any, limit: int = 12) -> list[str]:
    """The op names of a tf.data pipeline, last transformation first: ['MapDataset', 'TensorSliceDataset'].

    Reads `DatasetV2._inputs()` (private); used to name a data source in `keras-repro check --locate`.
    """

    def walk() -> list[str]:
        names, current = [], [dataset]
        while current and len(names) < limit:
            ds = current[0]
            names.append(type(ds).__name__.lstrip("_"))
            current = list(ds._inputs())
        return names

    return internal("tf.data.Dataset._inputs", walk)
