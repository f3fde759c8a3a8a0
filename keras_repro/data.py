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
from typing import Any, Mapping

import numpy as np

__all__ = ["fingerprint", "array_fingerprint", "is_array_like", "num_samples"]

_CHUNK_BYTES = 16 << 20  # bound on the bytes hashed (or copied, for strided arrays) at a time
# Odd 64-bit multipliers for the per-row hash, fixed forever (records compare across versions).
_ROW_MULTIPLIERS_SEED = 0x6B657261735F7265  # "keras_re"
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def is_array_like(value: Any) -> bool:
    """NumPy arrays, eager tensors and anything exposing `__array__` with a shape (pandas, JAX)."""
    if isinstance(value, np.ndarray):
        return True
    if type(value).__module__.startswith("tensorflow") and hasattr(value, "numpy") and hasattr(value, "shape"):
        return not _is_tf_dataset(value)
    return hasattr(value, "__array__") and hasattr(value, "shape") and not _is_tf_dataset(value)


def _is_tf_dataset(value: Any) -> bool:
    return any(c.__name__ in ("DatasetV2", "DatasetV1") for c in type(value).__mro__)


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


def _row_hashes(block: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """64-bit hashes of the rows of a C-contiguous block (one sample per row), vectorised."""
    rows = block.shape[0]
    raw = block.reshape(rows, -1).view(np.uint8) if block.size else np.zeros((rows, 0), np.uint8)
    width = raw.shape[1]
    pad = (-width) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((rows, pad), np.uint8)], axis=1)
    words = raw.view(np.uint64)
    with np.errstate(over="ignore"):
        h = (words * multipliers[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
        h ^= np.uint64(width)
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return h


def array_fingerprint(value: Any, *, rows: bool = True) -> dict[str, Any]:
    """Fingerprint of one array: kind, shape, dtype, samples, `sha256` and `rows_sha256`.

    `sha256` covers dtype, shape and the bytes in C order. The array is not copied when it is
    C-contiguous; otherwise at most ~16 MiB of rows at a time.
    """
    a = _as_numpy(value)
    fp: dict[str, Any] = {
        "kind": "ndarray",
        "shape": [int(d) for d in a.shape],
        "dtype": str(a.dtype),
        "samples": int(a.shape[0]) if a.ndim else None,
    }
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    if a.dtype.hasobject:
        # Python objects (strings, mixed): hash their text form; no order-independent digest.
        for item in a.reshape(-1):
            h.update(repr(item).encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        fp["sha256"] = h.hexdigest()
        fp["rows_sha256"] = None
        return fp
    want_rows = rows and a.ndim >= 1 and a.shape[0] > 0
    row_bytes = max(1, a.itemsize * (a.size // a.shape[0] if a.ndim and a.shape[0] else 1))
    multipliers = _row_multipliers((row_bytes + 7) // 8) if want_rows else None
    row_hashes = []
    if a.ndim == 0:
        h.update(np.ascontiguousarray(a).tobytes())
    else:
        step = max(1, _CHUNK_BYTES // row_bytes)
        contiguous = a.flags.c_contiguous
        for start in range(0, a.shape[0], step):
            block = a[start : start + step]
            if not contiguous:
                block = np.ascontiguousarray(block)
            h.update(memoryview(block.reshape(-1).view(np.uint8)))
            if want_rows:
                assert multipliers is not None
                row_hashes.append(_row_hashes(block, multipliers))
    fp["sha256"] = h.hexdigest()
    if want_rows:
        all_rows = np.sort(np.concatenate(row_hashes))
        fp["rows_sha256"] = hashlib.sha256(all_rows.tobytes()).hexdigest()
    else:
        fp["rows_sha256"] = None
    return fp


def fingerprint(value: Any) -> dict[str, Any] | None:
    """Fingerprint of a fit input: an array, a nested structure of arrays, a tf.data.Dataset, or other.

    Datasets get their element spec and cardinality here; the samples they feed are fingerprinted
    while training runs (see `keras_repro.dataset_tap`), because iterating a dataset here could advance
    its shuffle state and change the training order.
    """
    if value is None:
        return None
    if _is_tf_dataset(value):
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
