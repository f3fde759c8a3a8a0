"""Seeing which samples a tf.data pipeline feeds, without changing what it feeds.

A dataset cannot be fingerprinted by iterating it beforehand: a reshuffling `shuffle()` advances its
seed state with every iterator, so an extra pass would change the training order. Instead the dataset
handed to Keras gets one identity `map` that fingerprints each sample of the first batches in-graph
(`tf.fingerprint`, 8 bytes a sample) into a small variable buffer; the record reads the buffer after
the first epoch.

Example:
    >>> tap = DatasetTap(limit=32)                      # doctest: +SKIP
    >>> dataset = tap.wrap(dataset)                     # doctest: +SKIP
    >>> model.fit(dataset); tap.digests()[:2]           # doctest: +SKIP
    ['5c1f...', '09ab...']
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["DatasetTap"]


class DatasetTap:
    """Records per-sample fingerprints of the first `limit` samples a dataset yields."""

    def __init__(self, limit: int = 32) -> None:
        import tensorflow as tf

        self.limit = int(limit)
        self._tf = tf
        self._count = tf.Variable(0, dtype=tf.int64, trainable=False, name="keras_repro_tap_count")
        self._buffer = tf.Variable(
            tf.zeros([self.limit, 8], tf.uint8), trainable=False, name="keras_repro_tap_buffer"
        )
        self.enabled = True

    def wrap(self, dataset: Any) -> Any:
        tf = self._tf
        components = [
            spec for spec in tf.nest.flatten(dataset.element_spec) if isinstance(spec, tf.TensorSpec)
        ]
        if not components or any(spec.shape.rank == 0 for spec in components):
            self.enabled = False  # unbatched scalars, ragged or sparse only: nothing to fingerprint per sample
            return dataset
        count, buffer, limit = self._count, self._buffer, self.limit

        def sample_digests(element: Any) -> Any:
            parts = []
            for t in tf.nest.flatten(element):
                if not isinstance(t, tf.Tensor) or t.shape.rank == 0:
                    continue
                rows = tf.shape(t)[0]
                parts.append(tf.fingerprint(tf.reshape(t, [rows, -1])))
            return tf.fingerprint(tf.concat(parts, axis=1))

        def record(*element: Any) -> Any:
            element = element[0] if len(element) == 1 else element

            def store() -> Any:
                digests = sample_digests(element)
                start = count.read_value()
                take = tf.minimum(tf.cast(tf.shape(digests)[0], tf.int64), limit - start)
                rows = tf.range(start, start + take)
                buffer.scatter_nd_update(tf.expand_dims(rows, 1), digests[:take])
                count.assign_add(take)
                return tf.constant(True)

            with tf.control_dependencies([tf.cond(count < limit, store, lambda: tf.constant(False))]):
                return tf.nest.map_structure(tf.identity, element)

        return dataset.map(record)

    def digests(self) -> list[str]:
        if not self.enabled:
            return []
        n = int(self._count.numpy())
        return [bytes(row).hex() for row in self._buffer.numpy()[:n]]

    def summary(self) -> dict[str, Any]:
        digests = self.digests()
        return {
            "first_elements": digests or None,
            "first_elements_sha256": hashlib.sha256("".join(digests).encode()).hexdigest() if digests else None,
        }
