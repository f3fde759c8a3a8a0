"""Per-epoch sample order for array inputs, derived from (seed, epoch): the fix for Keras's
seeded-shuffle pitfall.

Keras 3 shuffles arrays inside a `Dataset.map` with a seeded random op. Once a global seed is set, that
op restarts with every new iterator, so `model.fit(x, y, shuffle=True)` feeds every epoch in the same
order (docs/tf-notes.md). keras_repro instead gives Keras a dataset of one pass over the arrays whose
k-th iteration feeds pass `first + k` in the order `stateless_shuffle(range(n), seed=[key(seed), pass])`.
Keras iterates it exactly as it iterates its own array dataset (a fresh iterator per epoch, or its
carry-over when `steps_per_epoch` is shorter than the data, partial last executions at the data's end),
so the steps are those of `model.fit`; the order differs between passes, is identical across reruns and
depends on nothing but (seed, pass), so a resumed run can start at any pass (`pass_at_epoch`).

Example:
    >>> order = epoch_order(num_samples=5, seed=42, epoch=0)       # doctest: +SKIP
    >>> sorted(order.tolist())                                     # doctest: +SKIP
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from keras_repro.errors import InvalidInputError

__all__ = ["ArrayStream", "epoch_order", "order_summary", "pass_at_epoch", "shuffle_key"]


def shuffle_key(seed: int) -> int:
    """A 63-bit key for the shuffle stream, derived from the run seed with SHA-256 (never `hash()`)."""
    digest = hashlib.sha256(f"keras_repro.shuffle/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _epoch_indices(tf: Any, n: int, batch_size: int, shuffle: Any, key: int, epoch: Any) -> Any:
    """Dataset of index batches for one epoch (epoch is a scalar int64 tensor)."""
    indices = tf.range(n, dtype=tf.int64)
    seed = tf.stack([tf.constant(key, tf.int64), tf.cast(epoch, tf.int64)])
    if shuffle is True:
        indices = tf.random.experimental.stateless_shuffle(indices, seed=seed)
    full = n // batch_size
    head = tf.reshape(indices[: full * batch_size], [full, batch_size])
    batches = tf.data.Dataset.from_tensor_slices(head)
    if n % batch_size:
        batches = batches.concatenate(tf.data.Dataset.from_tensors(indices[full * batch_size :]))
    if shuffle == "batch":  # Keras's meaning: batches in order, samples shuffled within each batch
        def within(i: Any, batch: Any) -> Any:
            return tf.random.experimental.stateless_shuffle(batch, seed=tf.stack([seed[0] ^ seed[1], i]))

        batches = batches.enumerate().map(within)
    return batches


def epoch_order(num_samples: int, seed: int, epoch: int, batch_size: int = 32, shuffle: Any = True) -> np.ndarray:
    """The sample order of one epoch as fed to the model (eager; for the record and for tests)."""
    import tensorflow as tf

    if shuffle is True:  # one op, the same permutation _epoch_indices feeds in batches
        seed_pair = tf.constant([shuffle_key(seed), int(epoch)], tf.int64)
        return tf.random.experimental.stateless_shuffle(tf.range(num_samples, dtype=tf.int64), seed=seed_pair).numpy()
    batches = _epoch_indices(tf, num_samples, batch_size, shuffle, shuffle_key(seed), tf.constant(epoch, tf.int64))
    return np.concatenate([b.numpy() for b in batches]) if num_samples else np.zeros([0], np.int64)


def order_summary(order: np.ndarray, epoch: int, head: int = 8) -> dict[str, Any]:
    return {
        "epoch": int(epoch),
        "sha256": hashlib.sha256(np.ascontiguousarray(order, dtype=np.int64).tobytes()).hexdigest(),
        "head": [int(i) for i in order[:head]],
    }


class ArrayStream:
    """Array inputs as a tf.data dataset of one pass per iteration, each pass ordered by (seed, pass).

    Args:
        arrays: the structure Keras would receive, e.g. `(x, y)` or `(x, y, sample_weight)`; x may be a
            dict or list of arrays for multi-input models.
        batch_size: samples per batch (the last batch of a pass may be smaller, as in Keras).
        shuffle: True (a new permutation per pass) or "batch" (Keras's meaning: batches in order,
            samples shuffled within each batch).
        seed: the run seed.

    `dataset(first_pass)` has the cardinality of one pass, so Keras's epoch iterator applies its own
    rules to it; every iterator Keras reads from feeds the next pass. `rewind()` puts the pass counter
    back to `first_pass` (Keras reads one batch of a throw-away iterator when it builds a distributed
    model; `fit` rewinds when training begins).
    """

    def __init__(self, arrays: Any, batch_size: int, shuffle: Any, seed: int) -> None:
        from keras_repro.data import num_samples

        n = num_samples(arrays)
        if not n:
            raise InvalidInputError("Expected at least one training sample. Received: arrays with 0 samples. "
                                   "Fix: pass non-empty x and y.")
        sizes = sorted({int(a.shape[0]) for a in _leaves(arrays)})
        if len(sizes) > 1:  # Keras's own check ("Data cardinality is ambiguous"); tf.gather would not notice
            raise InvalidInputError(
                f"Data cardinality is ambiguous: the arrays passed as x, y (and sample_weight) have first "
                f"dimensions {sizes}. Fix: pass arrays that all contain the same number of samples."
            )
        self.arrays = arrays
        self.num_samples = int(n)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.key = shuffle_key(seed)
        self.batches_per_epoch = math.ceil(self.num_samples / self.batch_size)
        self.first_pass = 0
        self._counter: Any = None

    def dataset(self, first_pass: int = 0) -> Any:
        """One pass of batches per iterator; the k-th iterator read from feeds pass `first_pass + k`."""
        import tensorflow as tf

        self.first_pass = int(first_pass)
        counter = self._counter = tf.Variable(self.first_pass, dtype=tf.int64, trainable=False,
                                              name="keras_repro_pass")
        n, bs, shuffle, key = self.num_samples, self.batch_size, self.shuffle, self.key
        # Read when an iterator yields its first batch: an iterator Keras makes and never reads takes no pass.
        passes = tf.data.Dataset.range(1).map(lambda _: counter.assign_add(1) - 1)
        indices = passes.flat_map(lambda e: _epoch_indices(tf, n, bs, shuffle, key, e))
        data = tf.nest.map_structure(_to_tensor, _tuples(self.arrays))

        def gather(i: Any) -> Any:
            return tf.nest.map_structure(lambda t: tf.gather(t, i, axis=0), data)

        stream = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        stream = stream.apply(tf.data.experimental.assert_cardinality(self.batches_per_epoch))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return stream.with_options(options).prefetch(tf.data.AUTOTUNE)

    def rewind(self) -> None:
        """The next iterator read from feeds `first_pass` again."""
        if self._counter is not None:
            self._counter.assign(self.first_pass)

    def order(self, epoch: int) -> np.ndarray:
        return epoch_order(self.num_samples, self.seed, epoch, self.batch_size, self.shuffle)


def pass_at_epoch(batches: int, steps_per_epoch: int | None, per_execution: int, epochs_done: int) -> tuple[int, int]:
    """(passes begun before, batches already taken from the current pass) when Keras begins epoch
    `initial_epoch + epochs_done` on finite data of `batches` batches.

    This is Keras's `EpochIterator` walk (keras/src/trainers/epoch_iterator.py): without
    `steps_per_epoch` every epoch makes a fresh iterator; with it, the iterator carries over to the next
    epoch until `batches` steps were seen, counting `per_execution` steps per execution.

    Example:
        >>> pass_at_epoch(10, 9, 1, 1), pass_at_epoch(10, 9, 1, 2)
        ((0, 9), (1, 0))
    """
    passes, seen, current = 0, 0, False
    for _ in range(epochs_done):
        if not current or steps_per_epoch is None:
            passes, seen, current = passes + 1, 0, True
        for _step in range(0, steps_per_epoch or batches, per_execution):
            if seen >= batches:
                break
            seen += per_execution
        if seen >= batches:
            current = False
    if not current or steps_per_epoch is None:
        return passes, 0
    return passes - 1, seen


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [] if value is None or not hasattr(value, "shape") or not len(value.shape) else [value]


def _tuples(value: Any) -> Any:
    """tf.nest treats lists as structures too, but Keras expects tuples for (x, y, sw)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _to_tensor(value: Any) -> Any:
    import tensorflow as tf

    if value is None:
        return None
    if tf.is_tensor(value):
        return value
    return tf.convert_to_tensor(np.asarray(value))
