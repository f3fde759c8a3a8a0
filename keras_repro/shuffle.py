"""Per-epoch sample order for array inputs, derived from (seed, epoch): the fix for Keras's
seeded-shuffle pitfall.

Keras 3 shuffles arrays inside a `Dataset.map` with a seeded random op. Once a global seed is set, that
op restarts with every new iterator, so `model.fit(x, y, shuffle=True)` feeds every epoch in the same
order (docs/tf-notes.md). keras_repro instead builds one stream of batches for the whole run: epoch e's order
is `stateless_shuffle(range(n), seed=[key(seed), e])`. It differs between epochs, is identical across
reruns, and depends on nothing but (seed, epoch), so a resumed run can start the stream at any step.

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

__all__ = ["shuffle_key", "epoch_order", "order_summary", "ArrayStream"]

_DATA_EPOCHS = 2**62  # the stream is endless; Keras stops it by steps_per_epoch * epochs


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
    """Array inputs as one tf.data stream of batches over all epochs, ordered by (seed, epoch).

    Args:
        arrays: the structure Keras would receive, e.g. `(x, y)` or `(x, y, sample_weight)`; x may be a
            dict or list of arrays for multi-input models.
        batch_size: samples per batch (the last batch of an epoch may be smaller, as in Keras).
        shuffle: True (a new permutation per epoch) or "batch" (Keras's meaning: batches in order,
            samples shuffled within each batch).
        seed: the run seed.

    `steps_per_epoch` is what must be passed to `model.fit` so that Keras keeps one iterator over the
    stream instead of restarting it each epoch; `dataset(start_step)` starts the stream at a global step.
    """

    def __init__(self, arrays: Any, batch_size: int, shuffle: Any, seed: int) -> None:
        from keras_repro.data import num_samples

        n = num_samples(arrays)
        if not n:
            raise InvalidInputError(
                "Expected at least one training sample. Received: arrays with 0 samples. Fix: pass non-empty x and y."
            )
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

    def dataset(self, start_step: int = 0) -> Any:
        """The batch stream, starting at global batch `start_step` (epoch * batches_per_epoch + step)."""
        import tensorflow as tf

        first_epoch, skip = divmod(int(start_step), self.batches_per_epoch)
        n, bs, shuffle, key = self.num_samples, self.batch_size, self.shuffle, self.key
        epochs = tf.data.Dataset.range(first_epoch, _DATA_EPOCHS)
        indices = epochs.flat_map(lambda e: _epoch_indices(tf, n, bs, shuffle, key, e))
        if skip:
            indices = indices.skip(skip)
        data = tf.nest.map_structure(_to_tensor, _tuples(self.arrays))

        def gather(i: Any) -> Any:
            return tf.nest.map_structure(lambda t: tf.gather(t, i, axis=0), data)

        stream = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return stream.with_options(options).prefetch(tf.data.AUTOTUNE)

    def order(self, epoch: int) -> np.ndarray:
        return epoch_order(self.num_samples, self.seed, epoch, self.batch_size, self.shuffle)


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
