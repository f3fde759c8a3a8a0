"""Per-step input digests: a 64-bit digest of every training batch as the model receives it.

`StepInputs.install(model)` wraps the model's `train_step` (an instance attribute, the class is not
touched) so that each step first digests `x`, `y` and `sample_weight` in-graph and stores the three
digests in a row of a small int64 ring buffer; `ReproCallback` reads the buffer every few hundred steps
and at each epoch end into `data.steps`, one entry per train step. The
digest sees the batch *as fed*, after every adapter, so arrays, `tf.data` pipelines, generators and
`keras.utils.PyDataset` are covered alike. It is written with plain integer ops (bitcast, multiply, sum),
so it also runs inside XLA-compiled train steps, where `tf.fingerprint` has no kernel.

The digest of a tensor is `sum_i(word_i * m_i) mod 2**64`, over its bytes read as 32-bit words (16- and
8-bit types widened), with odd position multipliers `m_i`, mixed with its element count and dtype.
Integer sums are exact in any order, so the digest itself is deterministic. It is not cryptographic: it
tells "the same batch" from "another batch", which is all `diff` needs.

Limits: under `steps_per_execution > 1` there is still one entry per train step, so `data.steps` is
longer than `metrics.steps` (one entry per execution); under a `tf.distribute` strategy nothing is
recorded (`data.steps` is null).

Example:
    >>> tap = StepInputs.install(model)        # doctest: +SKIP
    >>> model.fit(x, y, epochs=1)              # doctest: +SKIP
    >>> tap.read()                             # doctest: +SKIP
    {'x': '5c1f2a09ab44e1d2', 'y': '09ab44e1d25c1f2a'}
"""

from __future__ import annotations

from typing import Any

__all__ = ["StepInputs", "COMPONENTS", "digest_tensor"]

COMPONENTS = ("x", "y", "sample_weight")
_MARK = "_keras_repro_step_inputs"  # the model attribute holding its StepInputs
_GOLDEN = 2654435761  # Knuth's multiplicative constant; multipliers are ((i * _GOLDEN) & 0x7fffffff) | 1
_U64 = 2**64


def _words(tf: Any, t: Any) -> Any:
    """The bytes of `t` as a 1-D int64 tensor of unsigned 32-, 16- or 8-bit words."""
    flat = tf.reshape(t, [-1])
    dtype = t.dtype
    if dtype == tf.string:
        return tf.strings.to_hash_bucket_fast(flat, 2**62)
    if dtype == tf.bool:
        return tf.cast(flat, tf.int64)
    size = dtype.size
    if size % 4 == 0:
        words = tf.bitcast(flat, tf.uint32)
    elif size == 2:
        words = tf.bitcast(flat, tf.uint16)
    else:
        words = tf.bitcast(flat, tf.uint8)
    return tf.cast(tf.reshape(words, [-1]), tf.int64)


def digest_tensor(tf: Any, t: Any) -> Any:
    """A scalar int64 digest of one tensor (graph- and XLA-safe)."""
    t = tf.convert_to_tensor(t)
    words = _words(tf, t)
    n = tf.size(words, out_type=tf.int64)
    index = tf.range(n, dtype=tf.int64)
    multipliers = tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(index * _GOLDEN, 0x7FFFFFFF), 1)
    total = tf.reduce_sum(words * multipliers)  # each product < 2**63; the sum wraps mod 2**64
    tag = sum(ord(c) * 131**k for k, c in enumerate(t.dtype.name)) % 2**31
    return total * 1000003 + n * 8191 + tag


def digest_structure(tf: Any, value: Any) -> Any:
    """One scalar int64 digest of a tensor or a nested structure of tensors (None: None)."""
    if value is None:
        return None
    # expand_composites: a RaggedTensor (or SparseTensor) batch is digested through its component tensors
    leaves = [leaf for leaf in tf.nest.flatten(value, expand_composites=True) if leaf is not None]
    if not leaves:
        return None
    if len(leaves) == 1:
        return digest_tensor(tf, leaves[0])
    parts = tf.stack([digest_tensor(tf, leaf) for leaf in leaves])
    weights = tf.constant([2 * k + 1 for k in range(len(leaves))], tf.int64) * _GOLDEN
    return tf.reduce_sum(parts * weights) + len(leaves)


def hex64(value: int) -> str:
    """An int64 digest as 16 hex digits, through SplitMix64's finaliser (so small sums spread out)."""
    h = int(value) % _U64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) % _U64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) % _U64
    return format(h ^ (h >> 31), "016x")


class StepInputs:
    """The digest buffer of one model and the wrapper that fills it.

    Each train step writes its digests into row `counter % CAPACITY` of an int64 variable and counts
    itself; `after_step` reads the buffer only every few dozen steps (`flush` at each epoch end), so a
    step pays for a few in-graph ops, not for a device-to-host read. Use `StepInputs.install(model)`
    before the model's train function is made (ReproCallback does it in `set_model`, which Keras calls
    before `make_train_function`).
    """

    CAPACITY = 256

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self._tf = tf
        self.present: tuple[str, ...] | None = None  # known once the step is traced
        self.reason: str | None = None
        self.original = model.train_step
        self.per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        self._read = 0  # train steps already appended to the record
        self._pending = 0  # on_train_batch_end calls since the last read
        if _distributed(tf, model):
            self.reason = "not recorded under a tf.distribute strategy"
            return
        with tf.init_scope():
            self.buffer = tf.Variable(tf.zeros([self.CAPACITY, len(COMPONENTS)], tf.int64), trainable=False,
                                      name="keras_repro_step_inputs")
            self.counter = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="keras_repro_step_count")

    @classmethod
    def install(cls, model: Any) -> StepInputs:
        """Wraps `model.train_step` (once per model); returns the model's `StepInputs`.

        A model whose train function was already made gets it rebuilt (`model.train_function = None`),
        so that the wrapper is in it. Under a `tf.distribute` strategy nothing is wrapped and
        `reason` says so.
        """
        existing = model.__dict__.get(_MARK)
        if isinstance(existing, cls):
            return existing
        tap = cls(model)
        object.__setattr__(model, _MARK, tap)
        if tap.reason is not None:
            return tap
        object.__setattr__(model, "train_step", tap._train_step)
        if getattr(model, "train_function", None) is not None:
            model.train_function = None  # rebuilt by fit's make_train_function, with the wrapper in it
        return tap

    def _train_step(self, data: Any) -> Any:
        import keras

        tf = self._tf
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        digests = [digest_structure(tf, part) for part in (x, y, sample_weight)]
        self.present = tuple(name for name, d in zip(COMPONENTS, digests, strict=True) if d is not None)
        zero = tf.constant(0, tf.int64)
        row = tf.stack([zero if d is None else d for d in digests])
        self.buffer.scatter_nd_update(tf.reshape(self.counter % self.CAPACITY, [1, 1]), tf.reshape(row, [1, -1]))
        self.counter.assign_add(1)
        return self.original(data)

    def after_step(self, steps: list[Any]) -> None:
        """Called after every step: appends the buffered digests to `steps` when the buffer may fill."""
        self._pending += 1
        if (self._pending + 1) * self.per_call > self.CAPACITY:
            self.flush(steps)

    def flush(self, steps: list[Any]) -> None:
        """Appends the digests of every train step not yet in `steps`, one entry per step, in order."""
        self._pending = 0
        if self.present is None or self.reason is not None:
            return
        total = int(self.counter.numpy())
        rows = self.buffer.numpy()
        for step in range(self._read, total):
            if total - step > self.CAPACITY:  # overwritten before it was read (cannot happen with after_step)
                steps.append(None)
                continue
            values = rows[step % self.CAPACITY]
            steps.append({name: hex64(values[k]) for k, name in enumerate(COMPONENTS) if name in self.present})
        self._read = total

    def read(self) -> dict[str, str] | None:
        """The digests of the last step: {"x": hex, "y": hex[, "sample_weight": hex]}; None if not traced."""
        if self.present is None or self.reason is not None:
            return None
        total = int(self.counter.numpy())
        values = self.buffer.numpy()[(total - 1) % self.CAPACITY]
        return {name: hex64(values[k]) for k, name in enumerate(COMPONENTS) if name in self.present}


def _distributed(tf: Any, model: Any) -> bool:
    try:
        strategy = model.distribute_strategy
    except Exception:
        return False
    return tf.distribute.has_strategy() or strategy is not tf.distribute.get_strategy()


def describe_source(value: Any) -> str | None:
    """The data source of a fit input in user terms, e.g. 'Batches (keras.utils.PyDataset)',
    'generator function noisy_batches', 'tf.data MapDataset'; None for arrays and None."""
    if value is None:
        return None
    cls = type(value)
    names = [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]
    if any(n.endswith(".PyDataset") for n in names):
        return f"{cls.__name__} (keras.utils.PyDataset)" if cls.__name__ != "PyDataset" else "keras.utils.PyDataset"
    code = getattr(value, "gi_code", None)
    if code is not None:
        return f"generator function {code.co_name}() ({code.co_filename}:{code.co_firstlineno})"
    if any(c.__name__ in ("DatasetV2", "DatasetV1") for c in cls.__mro__):
        from keras_repro import _compat

        chain = _compat.dataset_chain(value)
        return "tf.data " + " <- ".join(chain) if chain else f"tf.data {cls.__name__.lstrip('_')}"
    if isinstance(value, (dict, list, tuple)) or hasattr(value, "__array__"):
        return None
    return f"{cls.__name__} ({cls.__module__})"
