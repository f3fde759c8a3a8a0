"""The instrumented step of a `keras-repro check --locate` rerun (runs inside the user's process).

`keras-repro check --locate` reruns the command with `$KERAS_REPRO_LOCATE` naming a step `k`, a record
number and an output file. The `ReproCallback` of that record builds a `Locator`; when step `k` is about
to run, the locator replaces `model.train_function` for one call by `instrumented`, which:

1. takes the batch of step `k` from Keras's iterator (the batch the real step would have used);
2. saves every piece of state a forward pass may change: the model's variables (weights, Keras
   `SeedGenerator` states, BatchNorm statistics), the optimizer's and the metrics' variables, the state
   of every `tf.random.Generator` / `np.random.Generator` / `random.Random` held by a layer, and
   NumPy's and Python's global random states;
3. digests the weights and the inputs, then runs the batch through the model eagerly with each layer's
   `call` wrapped (an instance attribute, for every layer reachable from the model, nested models and
   layers held by subclassed layers included), recording each output as it completes, computes the
   loss with `model.compute_loss` under a `tf.GradientTape` and digests every gradient;
4. restores all the state saved in 2, so the capture perturbs nothing it measures, and runs the real
   train step on the same batch; digests the weights after it and every metric's result;
5. traces (never runs) each layer's `call` and each metric's `update_state` to list the random or
   stateful ops inside them and writes everything to the output file. The fit stops after this step
   (its record is marked `interrupted`); after the last record asked for, the process exits.

What it cannot see: state outside variables and the generators listed above (a layer's Python
counters, a `np.random.default_rng()` created inside `call`, files or the clock); ops that only differ
when run inside the compiled train graph (the capture runs eagerly; the real step is what "weights
after" measures); which of several ops inside one layer differs (it names the layer and lists its random
ops); layers called outside `Layer.__call__`; and, under `steps_per_execution > 1`, steps inside an
execution. Nothing of this runs in a normal fit.

Example (what check does; users do not call this):
    $ KERAS_REPRO_LOCATE='{"targets": [{"record": 1, "step": 0, "out": "/tmp/a.json"}]}' python train.py
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from typing import Any

from keras_repro.input_digest import describe_source, digest_structure, hex64
from keras_repro.locate import ENV_LOCATE
from keras_repro.record import atomic_write_json

__all__ = ["Locator", "random_ops"]

# Op types worth naming inside a layer: random, stateful RNG, Python callbacks, clocks.
_RANDOM_WORDS = ("Random", "Rng", "PyFunc", "Multinomial", "Timestamp", "Shuffle", "NonDeterministic")
_TRACE_BUDGET_S = 30.0


class Locator:
    """Instruments one step of one fit in a `--locate` rerun (see the module docstring)."""

    _seen = 0  # announced ReproCallbacks started in this process, to find the records asked for
    _left: int | None = None  # targets not captured yet in this process

    def __init__(self, callback: Any, step: int, out: str) -> None:
        self.callback = callback
        self.step = step
        self.out = out

    @classmethod
    def from_environment(cls, callback: Any) -> Locator | None:
        """The locator for this callback when `$KERAS_REPRO_LOCATE` asks for its record, else None.

        The variable holds JSON: {"targets": [{"record": 1, "step": 0, "out": "/tmp/a.json"}, ...]}
        (records numbered from 1 in the order the process starts them).
        """
        text = os.environ.get(ENV_LOCATE)
        if not text or not callback.announce:
            return None
        targets = json.loads(text)["targets"]
        if cls._left is None:
            cls._left = len(targets)
        cls._seen += 1
        target = next((t for t in targets if int(t["record"]) == cls._seen), None)
        return None if target is None else cls(callback, int(target["step"]), str(target["out"]))

    def before_step(self, step: int) -> None:
        """Called at the start of every step; arms the instrumented train function for step `k`."""
        if step != self.step:
            return
        model = self.callback.model
        original = model.train_function

        def instrumented(iterator: Any) -> Any:
            model.train_function = original
            logs = self.run(model, original, iterator.get_next())
            type(self)._left = (type(self)._left or 1) - 1
            if not type(self)._left:
                raise SystemExit(0)  # every target captured: the rest of the script is not needed
            model.stop_training = True  # Keras stops after this step; the script goes on to its next fit
            return logs

        model.train_function = instrumented

    def run(self, model: Any, original: Any, data: Any) -> Any:
        import keras
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        source = self.callback.source
        if source is None:
            source = self.callback._inputs.get("x")
        owners = _rng_owners(model)
        dump: dict[str, Any] = {"step": self.step, "source": describe_source(source),
                                "source_rngs": _attribute_rngs(source) if source is not None else []}
        state = _State(model, owners)
        dump["weights_before"] = _weights(tf, model, state.rng_ids)
        dump["rng_states"] = state.rng_digests()
        dump["inputs"] = {name: _hex(tf, part) for name, part in
                          (("x", x), ("y", y), ("sample_weight", sample_weight)) if part is not None}
        calls, loss, grads = _forward(tf, model, x, y, sample_weight)
        state.restore()
        dump["layers"] = [c.summary(tf) for c in calls]
        dump["loss"] = float(loss).hex()
        dump["gradients"] = [[_name(v), _hex(tf, g)] for v, g in zip(model.trainable_variables, grads, strict=True)]
        logs = _real_step(tf, original, data)
        dump["weights_after"] = _weights(tf, model, state.rng_ids)
        dump["metrics"] = _metrics(tf, model, y)
        started = time.monotonic()
        for entry, call in zip(dump["layers"], calls, strict=True):
            if time.monotonic() - started < _TRACE_BUDGET_S:
                entry["random_ops"] = call.random_ops(tf)
            entry["holds"] = [[attr, kind] for attr, kind, _ in _attribute_rngs(call.layer)]
        atomic_write_json(self.out, dump)
        self.callback.finish("interrupted", f"stopped by keras-repro check --locate after step {self.step}")
        return logs


# --- state ----------------------------------------------------------------------------------------


def _rng_owners(model: Any) -> list[tuple[str, Any]]:
    return [(path, layer) for path, layer in _layers(model)]


class _State:
    """Everything a forward pass may change, saved so that `restore()` puts it back."""

    def __init__(self, model: Any, owners: list[tuple[str, Any]]) -> None:
        import numpy as np

        self.rngs: list[tuple[str, str, str, Any]] = []  # (owner path, attribute, kind, object)
        for path, layer in owners:
            for attr, kind, obj in _attribute_rngs(layer):
                self.rngs.append((path, attr, kind, obj))
        rng_vars = [_rng_variable(obj) for *_, obj in self.rngs]
        self.rng_ids = {id(v) for v in rng_vars if v is not None}
        variables = list(model.variables) + [v for v in rng_vars if v is not None]
        if getattr(model, "optimizer", None) is not None:
            variables += list(model.optimizer.variables)
        for metric in model.metrics:
            variables += list(metric.variables)
        unique = {id(v): v for v in variables}
        self.saved = [(v, v.numpy().copy()) for v in unique.values()]
        self.numpy_objects = [(obj, obj.bit_generator.state) for *_, kind, obj in self.rngs if kind == "np.random.Generator"]
        self.python_objects = [(obj, obj.getstate()) for *_, kind, obj in self.rngs if kind == "random.Random"]
        self.np_global = np.random.get_state()
        self.py_global = random.getstate()

    def rng_digests(self) -> list[list[str]]:
        return [[path, attr, kind, _rng_digest(obj)] for path, attr, kind, obj in self.rngs]

    def restore(self) -> None:
        import numpy as np

        for variable, value in self.saved:
            variable.assign(value)
        for obj, state in self.numpy_objects:
            obj.bit_generator.state = state
        for obj, state in self.python_objects:
            obj.setstate(state)
        np.random.set_state(self.np_global)
        random.setstate(self.py_global)


def _attribute_rngs(obj: Any) -> list[tuple[str, str, Any]]:
    """(attribute, kind, generator) for the random generators an object holds directly."""
    import numpy as np

    found = []
    try:
        items = list(vars(obj).items())
    except TypeError:
        return []
    for attr, value in items:
        kind = _rng_kind(value, np)
        if kind is not None:
            found.append((attr, kind, value))
    return found


def _rng_kind(value: Any, np: Any) -> str | None:
    cls = type(value)
    if isinstance(value, np.random.Generator):
        return "np.random.Generator"
    if isinstance(value, np.random.RandomState):
        return "np.random.RandomState"
    if isinstance(value, random.Random):
        return "random.Random"
    names = {f"{c.__module__}.{c.__name__}" for c in cls.__mro__}
    if any(n.endswith("stateful_random_ops.Generator") for n in names):
        return "tf.random.Generator"
    if any(n.endswith("seed_generator.SeedGenerator") for n in names):
        return "keras.random.SeedGenerator"
    return None


def _rng_variable(obj: Any) -> Any:
    state = getattr(obj, "state", None)
    return state if hasattr(state, "assign") and hasattr(state, "numpy") else None


def _rng_digest(obj: Any) -> str:
    variable = _rng_variable(obj)
    if variable is not None:
        data = variable.numpy().tobytes()
    elif hasattr(obj, "bit_generator"):
        data = json.dumps(obj.bit_generator.state, sort_keys=True, default=str).encode()
    elif hasattr(obj, "get_state"):
        data = repr(obj.get_state()).encode()
    else:
        data = repr(obj.getstate()).encode()
    return hashlib.sha256(data).hexdigest()[:16]


# --- layers ---------------------------------------------------------------------------------------


def _layers(model: Any) -> list[tuple[str, Any]]:
    """(path, layer) for the model and every layer reachable from it, parents before children."""
    import keras

    out: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(layer: Any, path: str) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        out.append((path, layer))
        for attr, value in list(vars(layer).items()):
            if attr == "_functional":  # Sequential's inner Functional: the same layers again
                seen.add(id(value))
                continue
            for child in _children(value, keras):
                visit(child, f"{path}/{child.name}")

    visit(model, model.name)
    return out


def _children(value: Any, keras: Any) -> list[Any]:
    if isinstance(value, keras.layers.Layer):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, keras.layers.Layer)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, keras.layers.Layer)]
    return []


class _Call:
    """One completed call of a layer during the captured forward pass."""

    def __init__(self, path: str, layer: Any, call: Any, args: Any, kwargs: Any, output: Any) -> None:
        self.path, self.layer, self.call, self.args, self.kwargs, self.output = path, layer, call, args, kwargs, output

    def summary(self, tf: Any) -> dict[str, Any]:
        return {"path": self.path, "name": self.layer.name, "class": type(self.layer).__name__,
                "module": type(self.layer).__module__, "output": _hex(tf, self.output)}

    def random_ops(self, tf: Any) -> list[str] | None:
        def spec(t: Any) -> Any:
            return tf.TensorSpec(t.shape, t.dtype) if tf.is_tensor(t) else t

        try:
            args, kwargs = tf.nest.map_structure(spec, (self.args, self.kwargs))
            concrete = tf.function(lambda a, k: self.call(*a, **k)).get_concrete_function(args, kwargs)
        except Exception:
            return None
        return random_ops(concrete.graph)


def random_ops(graph: Any) -> list[str]:
    """The random, stateful-RNG and Python-callback op types in a graph and its functions, sorted."""
    graph_def = graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return sorted(t for t in types if any(word in t for word in _RANDOM_WORDS))


def _forward(tf: Any, model: Any, x: Any, y: Any, sample_weight: Any) -> tuple[list[_Call], Any, list[Any]]:
    """The eager forward pass with every layer's `call` wrapped; returns calls, loss and gradients."""
    calls: list[_Call] = []
    hooked = []
    for path, layer in _layers(model):
        original = layer.call

        def wrapper(*args: Any, __path: str = path, __layer: Any = layer, __call: Any = original, **kwargs: Any) -> Any:
            output = __call(*args, **kwargs)
            calls.append(_Call(__path, __layer, __call, args, kwargs, output))
            return output

        object.__setattr__(layer, "call", wrapper)
        hooked.append(layer)
    try:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
    finally:
        for layer in hooked:
            object.__delattr__(layer, "call")
    return calls, loss, grads


def _real_step(tf: Any, original: Any, data: Any) -> Any:
    """The real train step on the captured batch (Keras's own train function, retraced for its shape)."""
    return original(iter(tf.data.Dataset.from_tensors(data)))


# --- digests --------------------------------------------------------------------------------------


def _hex(tf: Any, value: Any) -> str | None:
    if value is None:
        return None
    digest = digest_structure(tf, value)
    return None if digest is None else hex64(digest.numpy())


def _name(variable: Any) -> str:
    return str(getattr(variable, "path", None) or variable.name)


def _weights(tf: Any, model: Any, skip: set[int]) -> list[list[str]]:
    return [[_name(v), _hex(tf, v.value if hasattr(v, "value") else v)] for v in model.variables if id(v) not in skip]


def _metrics(tf: Any, model: Any, y: Any) -> dict[str, Any]:
    """Every metric's result after the step, its class, and the random ops in its update_state."""
    objects = {}
    stack = list(model.metrics)
    while stack:
        metric = stack.pop(0)
        objects.setdefault(metric.name, metric)
        stack += [m for m in getattr(metric, "metrics", []) or [] if m is not metric]
    results = {}
    for name, value in model.get_metrics_result().items():
        metric = objects.get(name)
        entry: dict[str, Any] = {"value": _scalar_hex(value), "class": type(metric).__name__ if metric else None}
        if metric is not None and y is not None:
            entry["random_ops"] = _metric_ops(tf, metric, y, model)
        results[name] = entry
    return results


def _scalar_hex(value: Any) -> Any:
    try:
        return float(value).hex()
    except (TypeError, ValueError):
        return repr(value)


def _metric_ops(tf: Any, metric: Any, y: Any, model: Any) -> list[str] | None:
    if not hasattr(metric, "update_state") or type(metric).__name__ in ("CompileMetrics", "Mean"):
        return None
    try:
        y_spec = tf.TensorSpec(y.shape, y.dtype)
        out = model.outputs[0] if getattr(model, "outputs", None) else None
        pred_spec = tf.TensorSpec([y.shape[0], *out.shape[1:]], out.dtype) if out is not None else y_spec
        concrete = tf.function(lambda a, b: metric.update_state(a, b)).get_concrete_function(y_spec, pred_spec)
    except Exception:
        return None
    return random_ops(concrete.graph)
