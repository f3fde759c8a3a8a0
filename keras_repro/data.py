"""Fingerprints of training data: what it is, how much, and a content hash, without copying it.

Arrays are hashed in place through a memoryview (non-contiguous ones in bounded row chunks), so the
extra memory stays small whatever the array's size. Besides the ordered `sha256`, `rows_sha256` is an
order-independent digest over the samples, so a diff can tell "same samples in another order" from
"other samples".

Example:
    >>> import numpy as np
    >>> fp = fingerprint(np.zeros((4, 2), "float32"))
    >>> fp["kind"], fp["samples"], fp["shape"], fp["dtype"]
    ('ndarray', 4, [4, 2], 'float32')
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
from typing import Any, Mapping

import numpy as np

from keras_repro.launcher import usable_cores

__all__ = ["fingerprint", "array_fingerprint", "is_array_like", "is_tf_dataset", "num_samples"]

_CHUNK_BYTES = 8 << 20  # bound on the bytes handed to SHA-256 (or copied, for strided arrays) at a time
_SUB_BYTES = 1 << 20  # rows are hashed in cache-sized pieces of this many (padded) bytes
_THREAD_MIN_BYTES = 32 << 20  # below this, hashing in one thread is as fast
# Odd 64-bit multipliers for the per-row hash, fixed forever (records compare across versions).
_ROW_MULTIPLIERS_SEED = 0x6B657261735F7265  # "keras_re"
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ROWS_DIGEST_TAG = b"keras_repro.rows/2|"
_U64 = 2**64


def is_array_like(value: Any) -> bool:
    """NumPy arrays, eager tensors and anything exposing `__array__` with a shape (pandas, JAX)."""
    if isinstance(value, np.ndarray):
        return True
    if type(value).__module__.startswith("tensorflow") and hasattr(value, "numpy") and hasattr(value, "shape"):
        return not is_tf_dataset(value)
    return hasattr(value, "__array__") and hasattr(value, "shape") and not is_tf_dataset(value)


def is_tf_dataset(value: Any) -> bool:
    """True for a `tf.data.Dataset` (without importing TensorFlow: no TensorFlow, no dataset)."""
    dataset_class = getattr(getattr(sys.modules.get("tensorflow"), "data", None), "Dataset", None)
    return isinstance(dataset_class, type) and isinstance(value, dataset_class)


def num_samples(value: Any) -> int | None:
    """The size of the first dimension of an array or of the first array in a structure."""
    if value is None:
        return None
    if is_array_like(value):
        shape = getattr(value, "shape", ())
        return int(shape[0]) if len(shape) else None
    if isinstance(value, Mapping):
        for v in value.values():
            n = num_samples(v)
            if n is not None:
                return n
    if isinstance(value, (list, tuple)):
        for v in value:
            n = num_samples(v)
            if n is not None:
                return n
    return None


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy") and type(value).__module__.startswith("tensorflow"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def _row_multipliers(words: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(_ROW_MULTIPLIERS_SEED))
    return rng.integers(0, 2**63, size=words, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _mix(h: np.ndarray, tmp: np.ndarray | None = None) -> np.ndarray:
    """SplitMix64's finaliser, in place (`tmp`: scratch of h's shape, to avoid temporaries)."""
    if tmp is None:
        tmp = np.empty_like(h)
    for shift, multiplier in ((30, _MIX1), (27, _MIX2)):
        np.right_shift(h, np.uint64(shift), out=tmp)
        h ^= tmp
        h *= multiplier
    np.right_shift(h, np.uint64(31), out=tmp)
    h ^= tmp
    return h


class _RowHasher:
    """64-bit hashes of rows (one sample each), folded into an order-independent multiset digest.

    A row's hash is `mix(sum_i(word_i * m_i) mod 2**64 ^ width)`, its bytes read as little-endian
    64-bit words, zero-padded at the end. Rows are folded into two lanes, `sum(h)` and
    `sum(h * h)` mod 2**64, so memory stays constant however many rows there are. Products go
    to a preallocated buffer of about `_SUB_BYTES`, which keeps the work in the CPU cache.
    """

    def __init__(self, row_bytes: int) -> None:
        self.width = row_bytes
        self.words = max(1, (row_bytes + 7) // 8)
        self.multipliers = _row_multipliers(self.words)
        self.rows_per_piece = max(1, _SUB_BYTES // (8 * self.words))
        self.column_words = min(self.words, max(1, _SUB_BYTES // 8))
        self._product = np.empty(self.rows_per_piece * self.column_words, np.uint64)
        self._padded: np.ndarray | None = None
        self._total = np.empty(self.rows_per_piece, np.uint64)
        self._scratch = np.empty(self.rows_per_piece, np.uint64)
        self._widened = np.empty(self.rows_per_piece, np.uint64) if row_bytes in (1, 2, 4) else None
        self.rows = 0
        self.lanes = [0, 0]

    def update(self, block: np.ndarray) -> None:
        """Adds the rows of a C-contiguous block (first axis = samples)."""
        raw = block.reshape(block.shape[0], -1).view(np.uint8) if block.size else None
        for start in range(0, block.shape[0], self.rows_per_piece):
            rows = min(self.rows_per_piece, block.shape[0] - start)
            piece = raw[start : start + rows] if raw is not None else None
            h = self._sums(piece, rows)
            h ^= np.uint64(self.width)
            tmp = self._scratch[:rows]
            _mix(h, tmp)
            self.lanes[0] = (self.lanes[0] + int(h.sum(dtype=np.uint64))) % _U64
            with np.errstate(over="ignore"):
                np.multiply(h, h, out=tmp)
            self.lanes[1] = (self.lanes[1] + int(tmp.sum(dtype=np.uint64))) % _U64
            self.rows += rows

    def _words(self, piece: np.ndarray) -> np.ndarray:
        """The rows of `piece` (uint8, rows x width) as rows x words little-endian uint64, zero-padded."""
        rows, width = piece.shape
        if width % 8 == 0:
            return piece.view(np.uint64)
        if width in (1, 2, 4):  # one small item a row: zero-extension is the padding
            assert self._widened is not None
            words = self._widened[:rows].reshape(rows, 1)
            words[:, 0] = piece.view(f"<u{width}")[:, 0]
            return words
        if self._padded is None or self._padded.shape[0] < rows:
            self._padded = np.zeros((self.rows_per_piece, self.words * 8), np.uint8)
        padded = self._padded[:rows]
        padded[:, :width] = piece
        return padded.view(np.uint64)

    def _sums(self, piece: np.ndarray | None, rows: int) -> np.ndarray:
        total = self._total[:rows]
        if piece is None:  # rows of zero bytes
            total[:] = 0
            return total
        words = self._words(piece)
        with np.errstate(over="ignore"):
            if self.words == 1:  # one word a row: no reduction needed
                return np.multiply(words[:, 0], self.multipliers[0], out=total)
            total[:] = 0
            for c in range(0, self.words, self.column_words):  # huge rows: a slice of columns at a time
                part = words[:, c : c + self.column_words]
                out = self._product[: part.size].reshape(part.shape)
                np.multiply(part, self.multipliers[c : c + part.shape[1]], out=out)
                total += out.sum(axis=1, dtype=np.uint64)
        return total

    def hexdigest(self) -> str:
        text = _ROWS_DIGEST_TAG + b"%d|%d|%d" % (self.rows, self.lanes[0], self.lanes[1])
        return hashlib.sha256(text).hexdigest()


class _OrderedHasher:
    """SHA-256 over blocks in order; large inputs are hashed in a second thread (hashlib releases the
    GIL), so that the row hashes and SHA-256 run side by side. At most two blocks wait."""

    def __init__(self, header: bytes, threaded: bool) -> None:
        self._sha = hashlib.sha256(header)
        self._queue: queue.Queue[Any] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._work, name="keras_repro-sha256", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        assert self._queue is not None
        while (view := self._queue.get()) is not None:
            self._sha.update(view)

    def update(self, block: np.ndarray) -> None:
        view = memoryview(block.reshape(-1).view(np.uint8))
        if self._queue is None:
            self._sha.update(view)
        else:
            self._queue.put(view)

    def close(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None

    def hexdigest(self) -> str:
        self.close()
        return self._sha.hexdigest()


def array_fingerprint(value: Any, *, rows: bool = True) -> dict[str, Any]:
    """Fingerprint of one array: kind, shape, dtype, samples, `sha256` and `rows_sha256`.

    `sha256` covers dtype, shape and the bytes in C order. `rows_sha256` is an order-independent
    digest of the rows (samples): equal for the same samples in any order. The array is not copied when
    it is C-contiguous (otherwise ~8 MiB of rows at a time); the extra memory stays a few MiB.
    """
    a = _as_numpy(value)
    fp: dict[str, Any] = {
        "kind": "ndarray",
        "shape": [int(d) for d in a.shape],
        "dtype": str(a.dtype),
        "samples": int(a.shape[0]) if a.ndim else None,
    }
    header = f"{a.dtype.str}|{a.shape}|".encode()
    if a.dtype.hasobject:
        # Python objects (strings, mixed): hash their text form; no order-independent digest.
        h = hashlib.sha256(header)
        for item in a.reshape(-1):
            h.update(repr(item).encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        fp["sha256"] = h.hexdigest()
        fp["rows_sha256"] = None
        return fp
    want_rows = rows and a.ndim >= 1 and a.shape[0] > 0
    row_bytes = a.itemsize * (a.size // a.shape[0]) if a.ndim and a.shape[0] else a.itemsize
    ordered = _OrderedHasher(header, threaded=a.nbytes >= _THREAD_MIN_BYTES and usable_cores() > 1)
    row_hasher = _RowHasher(row_bytes) if want_rows else None
    try:
        if a.ndim == 0:
            ordered.update(np.ascontiguousarray(a).reshape(1))
        else:
            step = max(1, _CHUNK_BYTES // max(1, row_bytes))
            contiguous = a.flags.c_contiguous
            for start in range(0, a.shape[0], step):
                block = a[start : start + step]
                if not contiguous:
                    block = np.ascontiguousarray(block)
                ordered.update(block)
                if row_hasher is not None:
                    row_hasher.update(block)
    finally:
        ordered.close()
    fp["sha256"] = ordered.hexdigest()
    fp["rows_sha256"] = row_hasher.hexdigest() if row_hasher is not None else None
    return fp


def fingerprint(value: Any) -> dict[str, Any] | None:
    """Fingerprint of a fit input: an array, a nested structure of arrays, a tf.data.Dataset, or other.

    Datasets get their element spec and cardinality here; the samples they feed are fingerprinted
    while training runs (see `keras_repro.dataset_tap`), because iterating a dataset here could advance
    its shuffle state and change the training order.
    """
    if value is None:
        return None
    if is_tf_dataset(value):
        return dataset_fingerprint(value)
    if is_array_like(value):
        return array_fingerprint(value)
    if isinstance(value, Mapping):
        items = {str(k): fingerprint(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
        return _structure("dict", items, list(items.values()))
    if isinstance(value, (list, tuple)) and value and all(
        v is None or is_array_like(v) or isinstance(v, (Mapping, list, tuple)) for v in value
    ):
        items_list = [fingerprint(v) for v in value]
        return _structure(type(value).__name__ if isinstance(value, tuple) else "list", items_list, items_list)
    if isinstance(value, (list, tuple)):  # a plain list of numbers: an array to Keras
        return array_fingerprint(np.asarray(value))
    return {"kind": "other", "type": f"{type(value).__module__}.{type(value).__qualname__}", "repr": repr(value)[:200]}


def _structure(kind: str, items: Any, values: list[Any]) -> dict[str, Any]:
    h = hashlib.sha256(kind.encode())
    samples = None
    for fp in values:
        h.update(b"|" + (fp.get("sha256") or "none").encode() if isinstance(fp, dict) else b"|none")
        if samples is None and isinstance(fp, dict):
            samples = fp.get("samples")
    return {"kind": kind, "items": items, "samples": samples, "sha256": h.hexdigest()}


def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """Element spec and cardinality of a tf.data.Dataset (does not iterate it)."""
    fp: dict[str, Any] = {"kind": "dataset", "element_spec": repr(dataset.element_spec)}
    try:
        cardinality = int(dataset.cardinality().numpy())
    except Exception:  # pragma: no cover
        cardinality = -2
    fp["cardinality"] = cardinality
    fp["samples"] = None
    fp["first_elements"] = None
    fp["first_elements_sha256"] = None
    return fp
