"""Seeing which samples a tf.data pipeline feeds, without changing what it feeds or how fast.

A dataset cannot be fingerprinted by iterating it beforehand: a reshuffling `shuffle()` advances its
seed state with every iterator, so an extra pass would change the training order. Instead the dataset
handed to Keras gets `enumerate()` and one sequential identity `map` that, for the first `limit`
batches of every epoch, fingerprints each sample in-graph (`tf.fingerprint`, 8 bytes a sample) and
writes the digests with `tf.print` to a small file; the record reads that file.

Why `tf.print` and not a variable: under op determinism, TF's `make_deterministic` rewrite serialises
every parallel map and disables prefetching in a pipeline whose functions hold stateful ops, except a
short list it knows to be safe when run asynchronously (legacy random ops, `Print`, `Assert`). A tap
that assigned to a variable made a parallel-map pipeline 2-3x slower (measured, TF 2.21); `PrintV2` is
on that list, so the user's pipeline keeps its parallelism.

Example:
    >>> tap = DatasetTap(limit=32)                      # doctest: +SKIP
    >>> dataset = tap.wrap(dataset)                     # doctest: +SKIP
    >>> model.fit(dataset); tap.digests()[:2]           # doctest: +SKIP
    ['5c1f2a...', '09ab44...']
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
from typing import Any

__all__ = ["DatasetTap"]

_LINE = re.compile(r"^(\d+)\s+\[([-\d\s]*)\]\s*$")


class DatasetTap:
    """Records per-sample fingerprints of the first samples of each epoch a dataset yields.

    Args:
        limit: how many samples of the first epoch `digests()` returns (batches are tapped until at
            least this many samples are covered: the first `limit` batches of every epoch).
        directory: where the digest file goes (default: the system temp folder); `close()` removes it.
    """

    def __init__(self, limit: int = 32, directory: str | os.PathLike[str] | None = None) -> None:
        self.limit = int(limit)
        fd, self.path = tempfile.mkstemp(prefix=".keras_repro_tap_", suffix=".txt", dir=directory)
        os.close(fd)
        self.enabled = True

    def wrap(self, dataset: Any) -> Any:
        import tensorflow as tf

        components = [spec for spec in tf.nest.flatten(dataset.element_spec) if isinstance(spec, tf.TensorSpec)]
        if not components or any(spec.shape.rank == 0 for spec in components):
            self.enabled = False  # unbatched scalars, ragged or sparse only: nothing to fingerprint per sample
            return dataset
        limit, stream = self.limit, "file://" + self.path

        def sample_digests(element: Any) -> Any:
            parts = []
            for t in tf.nest.flatten(element):
                if not isinstance(t, tf.Tensor) or t.shape.rank == 0:
                    continue
                parts.append(tf.fingerprint(tf.reshape(t, [tf.shape(t)[0], -1])))
            return tf.bitcast(tf.fingerprint(tf.concat(parts, axis=1)), tf.int64)

        def record(index: Any, element: Any) -> Any:
            def emit() -> Any:
                with tf.control_dependencies([tf.print(index, sample_digests(element), summarize=-1, output_stream=stream)]):
                    return tf.constant(True)

            with tf.control_dependencies([tf.cond(index < limit, emit, lambda: tf.constant(False))]):
                return tf.nest.map_structure(tf.identity, element)

        return dataset.enumerate().map(record)

    def epochs(self) -> list[list[str]]:
        """Digests (hex) of the tapped samples, one list per epoch seen so far."""
        if not self.enabled:
            return []
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            return []
        epochs: list[list[str]] = []
        for line in lines:
            match = _LINE.match(line.strip())
            if not match:
                continue
            if int(match.group(1)) == 0 or not epochs:
                epochs.append([])
            epochs[-1].extend(struct.pack("<q", int(v)).hex() for v in match.group(2).split())
        return epochs

    def digests(self) -> list[str]:
        """Digests of the first `limit` samples of the first epoch."""
        epochs = self.epochs()
        return epochs[0][: self.limit] if epochs else []

    def count(self) -> int:
        return len(self.digests())

    def summary(self) -> dict[str, Any]:
        digests = self.digests()
        return {
            "first_elements": digests or None,
            "first_elements_sha256": hashlib.sha256("".join(digests).encode()).hexdigest() if digests else None,
        }

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def __del__(self) -> None:
        self.close()
