"""keras_repro: reproducible TensorFlow/Keras training, and an explanation when two runs differ.

Example:
    >>> import keras_repro
    >>> keras_repro.configure(seed=42, mode="bitwise")            # doctest: +SKIP
    >>> history = keras_repro.fit(build_model, x, y, epochs=3)    # doctest: +SKIP
    >>> history.run.path                                          # doctest: +SKIP
    PosixPath('runs/20261127-101500-3f2a9c/run.json')

No code change at all: `keras-repro run --seed 42 --mode bitwise -- python train.py` starts the script
with `keras_repro.autolog(...)`, which routes every `model.fit` through `keras_repro.fit`.

`import keras_repro` does not import TensorFlow: TF fixes its thread pools and devices when it starts,
so the policy has to be applicable before that. TF-dependent names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keras_repro.autolog import autolog  # TensorFlow-free; imported here so the module never shadows the function
from keras_repro.errors import (
    CompatError,
    InvalidInputError,
    InvalidPolicyError,
    PolicyConflictError,
    RecordError,
    ReproducibilityError,
    ResumeError,
    TooLateError,
)
from keras_repro.policy import MODES, Policy
from keras_repro.record import RunRecord, load_run

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "MODES",
    "Policy",
    "configure",
    "autolog",
    "fit",
    "load_run",
    "compare",
    "RunRecord",
    "ReproCallback",
    "ReproducibilityError",
    "InvalidPolicyError",
    "TooLateError",
    "PolicyConflictError",
    "RecordError",
    "ResumeError",
    "InvalidInputError",
    "CompatError",
]

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY = {
    "configure": "keras_repro.runtime",
    "fit": "keras_repro.training",
    "compare": "keras_repro.comparison",
    "ReproCallback": "keras_repro.callback",
}

if TYPE_CHECKING:  # pragma: no cover
    from keras_repro.callback import ReproCallback
    from keras_repro.comparison import compare
    from keras_repro.runtime import configure
    from keras_repro.training import fit


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'keras_repro' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

# Modules are named so that none shadows a function of the same name here (importing a submodule
# sets an attribute on the package): `training` defines `fit`, `comparison` defines `compare`. The one
# exception, `autolog`, is imported eagerly above: the package attribute is set to the module on its
# first import and the `from ... import` right after rebinds it to the function, for good.
