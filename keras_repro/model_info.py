"""What a Keras model is and holds: architecture hash, parameter count, weight hashes, hyperparameters.

Example:
    >>> weights_sha256(model) == weights_sha256(model)      # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

import numpy as np

from keras_repro import _compat
from keras_repro.record import to_jsonable

__all__ = ["weights_sha256", "architecture_sha256", "model_summary", "random_layers", "hyperparameters"]


def weights_sha256(model: Any) -> str:
    """SHA-256 over the bytes of `model.get_weights()`, in order (the contract's definition)."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _layer_names(model: Any) -> list[str]:
    names = []
    for layer in _compat.flatten_layers(model):
        name = getattr(layer, "name", None)
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def architecture_sha256(model: Any) -> str:
    """A hash of the model's structure that ignores auto-generated layer names.

    Keras names layers from process-wide counters (`dense`, `dense_1`, ...), so the same builder called
    twice in one process gives other names; names are replaced by their order of appearance first.
    """
    canonical = {name: f"<layer{i}>" for i, name in enumerate(_layer_names(model))}  # CompatError stays loud
    try:
        config = model.get_config()
        text = json.dumps(to_jsonable(config), sort_keys=True)
        text = json.dumps(_rename(json.loads(text), canonical), sort_keys=True)
    except Exception:  # subclassed models without get_config
        text = type(model).__qualname__
    shapes = [(tuple(int(d) for d in w.shape), str(w.dtype)) for w in getattr(model, "weights", [])]
    return hashlib.sha256((text + repr(shapes)).encode()).hexdigest()


def _rename(value: Any, canonical: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return canonical.get(value, value)
    if isinstance(value, list):
        return [_rename(v, canonical) for v in value]
    if isinstance(value, dict):
        return {k: _rename(v, canonical) for k, v in value.items()}
    return value


def model_summary(model: Any) -> dict[str, Any]:
    try:
        params = int(model.count_params())
    except Exception:
        params = None
    return {
        "class": type(model).__name__,
        "architecture_sha256": architecture_sha256(model),
        "param_count": params,
        "layers": len(getattr(model, "layers", []) or []),
        "random_layers": random_layers(model),
    }


def random_layers(model: Any) -> list[str]:
    """Class names of the layers, nested ones too, that draw random numbers while training (Dropout,
    RandomFlip, GaussianNoise, ...): those holding a `keras.random.SeedGenerator`. Sorted, once each.

    `keras-repro check` names them as a source of differences between unseeded runs.
    """
    import keras

    names: set[str] = set()
    seen: set[int] = set()
    stack = list(getattr(model, "layers", None) or [])
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values()):
            names.add(type(layer).__name__)
        stack.extend(getattr(layer, "layers", None) or [])
    return sorted(names)


def _learning_rate(optimizer: Any) -> Any:
    lr = getattr(optimizer, "learning_rate", None)
    if lr is None:
        return None
    try:
        # Keras keeps it in a float32 variable: report the shortest float32 text (0.001, not
        # 0.0010000000474974513), which is the value the user passed.
        return float(str(np.float32(np.asarray(lr))))
    except Exception:
        config = getattr(lr, "get_config", None)
        return {"schedule": type(lr).__name__, "config": to_jsonable(config())} if callable(config) else repr(lr)


def _describe(obj: Any) -> Any:
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_describe(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): _describe(v) for k, v in obj.items()}
    get_config = getattr(obj, "get_config", None)
    name = getattr(obj, "__name__", None) or type(obj).__name__
    if callable(get_config):
        try:
            return {"class": type(obj).__name__, "config": to_jsonable(get_config())}
        except Exception:
            pass
    return name


def _snake_case(name: str) -> str:
    """Keras's `to_snake_case` (keras/src/utils/naming.py): `AdamW` -> `adam_w`, `RMSprop` -> `rm_sprop`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def canonical_optimizer_name(name: Any, class_name: str) -> Any:
    """An optimizer's name without the per-process counter Keras appends to unnamed ones.

    Keras names unnamed optimizers `adam`, `adam_1`, `adam_2`, ... in the order a process creates them, so
    the same script's record would otherwise differ (and a resume be refused) only because an earlier
    model in the process made an optimizer too. A name the user chose is kept as it is.

    Example:
        >>> canonical_optimizer_name("adam_4", "Adam"), canonical_optimizer_name("my_opt", "Adam")
        ('adam', 'my_opt')
    """
    if not isinstance(name, str):
        return name
    base = _snake_case(class_name)
    return base if re.fullmatch(re.escape(base) + r"(_\d+)?", name) else name


def hyperparameters(model: Any, user: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Optimizer class and config (learning rate first), loss, metrics, compile flags, and the user's dict."""
    optimizer = getattr(model, "optimizer", None)
    out: dict[str, Any] = {
        "optimizer": type(optimizer).__name__ if optimizer is not None else None,
        "learning_rate": _learning_rate(optimizer) if optimizer is not None else None,
        "optimizer_config": None,
        "loss": _describe(getattr(model, "loss", None)),
        "metrics": None,
        "compile": None,
        "user": to_jsonable(dict(user)) if user else None,
    }
    if optimizer is not None:
        try:
            config = to_jsonable(optimizer.get_config())
            if isinstance(config.get("learning_rate"), float):
                config["learning_rate"] = out["learning_rate"]  # the same float32 value, said the same way
            config["name"] = canonical_optimizer_name(config.get("name"), type(optimizer).__name__)
            out["optimizer_config"] = config
        except Exception:
            pass
    try:
        compile_config = model.get_compile_config() or {}
        out["metrics"] = to_jsonable(compile_config.get("metrics"))
        out["compile"] = {
            k: to_jsonable(compile_config.get(k))
            for k in ("loss_weights", "weighted_metrics", "run_eagerly", "steps_per_execution", "jit_compile")
            if k in compile_config
        }
    except Exception:
        pass
    return out
