"""data.py: array fingerprints are exact (same bytes, same hash), order-independent where they say so,
identical for contiguous and strided views, and hash large arrays without copying them."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest

from keras_repro.data import array_fingerprint, fingerprint

RNG = np.random.default_rng(0)
ARRAYS = {
    "2d float32": RNG.standard_normal((300, 7)).astype("float32"),
    "1d float32": RNG.standard_normal(1000).astype("float32"),
    "1d int8": RNG.integers(-9, 9, 257).astype("int8"),
    "1d int16": RNG.integers(-9, 9, 257).astype("int16"),
    "1d float64": RNG.standard_normal(99),
    "images uint8": RNG.integers(0, 255, (40, 5, 5, 3), dtype=np.uint8),
    "odd width float16": RNG.standard_normal((64, 33)).astype("float16"),
    "wide rows": RNG.standard_normal((3, 300_000)).astype("float32"),
    "bool": RNG.integers(0, 2, (50, 3)).astype(bool),
    "complex": (RNG.standard_normal((10, 2)) + 1j).astype("complex64"),
}


def _reference_sha256(a: np.ndarray) -> str:
    """The documented meaning of `sha256`: dtype, shape, then the bytes in C order."""
    return hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode() + np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_sha256_is_dtype_shape_and_bytes(name: str) -> None:
    a = ARRAYS[name]
    fp = array_fingerprint(a)
    assert fp["sha256"] == _reference_sha256(a)
    assert fp["shape"] == list(a.shape) and fp["samples"] == a.shape[0] and fp["dtype"] == str(a.dtype)


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_rows_digest_ignores_order_but_not_content(name: str) -> None:
    a = ARRAYS[name]
    fp = array_fingerprint(a)
    shuffled = a[RNG.permutation(a.shape[0])]
    assert array_fingerprint(shuffled)["rows_sha256"] == fp["rows_sha256"]
    changed = a.copy()
    flat = changed.reshape(changed.shape[0], -1).view(np.uint8)
    flat[a.shape[0] // 2, -1] ^= 1  # one bit of one sample
    assert array_fingerprint(changed)["rows_sha256"] != fp["rows_sha256"]
    assert array_fingerprint(changed)["sha256"] != fp["sha256"]


def test_rows_digest_counts_duplicates() -> None:
    a = np.arange(12, dtype="float32").reshape(6, 2)
    doubled = a.copy()
    doubled[1] = doubled[0]
    tripled = doubled.copy()
    tripled[2] = tripled[0]
    digests = {array_fingerprint(x)["rows_sha256"] for x in (a, doubled, tripled)}
    assert len(digests) == 3


@pytest.mark.parametrize("view", ["fortran", "strided", "negative", "transposed"])
def test_strided_views_hash_like_their_contiguous_copy(view: str) -> None:
    base = RNG.standard_normal((400, 6))
    a = {"fortran": np.asfortranarray(base), "strided": base[::3, ::2], "negative": base[::-1],
         "transposed": base.T}[view]
    assert array_fingerprint(a) == array_fingerprint(np.ascontiguousarray(a))


def test_same_samples_padded_the_same_way_whatever_their_width() -> None:
    # Rows of 1, 2 or 4 bytes take a zero-extension shortcut; it must equal the general zero padding.
    from keras_repro.data import _RowHasher

    for dtype in ("uint8", "int16", "float32"):
        a = RNG.integers(0, 100, (50, 1)).astype(dtype)
        fast = _RowHasher(a.itemsize)
        fast.update(a)
        padded = np.zeros((50, 8), np.uint8)
        padded[:, : a.itemsize] = a.view(np.uint8).reshape(50, -1)
        slow = _RowHasher(8)
        slow.width = a.itemsize  # same width tag, general path
        slow.update(padded)
        assert fast.hexdigest() == slow.hexdigest()


def test_empty_scalar_and_object_arrays() -> None:
    assert array_fingerprint(np.zeros((0, 3)))["rows_sha256"] is None
    assert array_fingerprint(np.zeros((4, 0)))["samples"] == 4
    assert array_fingerprint(np.float32(3.5))["samples"] is None
    obj = np.array(["a", 1, None], dtype=object)
    assert array_fingerprint(obj)["sha256"] != array_fingerprint(np.array(["a", 2, None], dtype=object))["sha256"]


def test_large_array_is_hashed_without_a_copy() -> None:
    a = np.ones((4096, 16384), np.float32)  # 256 MiB: large enough for the second hashing thread
    a[17, 5] = 2.0
    tracemalloc.start()
    try:
        fp = array_fingerprint(a)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"fingerprint allocated {peak / 2**20:.1f} MiB extra"
    assert fp["sha256"] == _reference_sha256(a)


def test_many_tiny_rows_use_constant_memory() -> None:
    a = np.arange(8 << 20, dtype=np.float32)  # 8M samples of 4 bytes: a sorted digest list would take 64 MiB
    tracemalloc.start()
    try:
        array_fingerprint(a)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.1f} MiB"


def test_structures_and_other_inputs() -> None:
    x = {"b": np.zeros((5, 2)), "a": np.ones((5,))}
    fp = fingerprint(x)
    assert fp["kind"] == "dict" and list(fp["items"]) == ["a", "b"] and fp["samples"] == 5
    assert fingerprint([np.zeros(3), np.ones(3)])["kind"] == "list"
    assert fingerprint([1.0, 2.0])["kind"] == "ndarray"
    other = fingerprint(iter([1, 2]))
    assert other["kind"] == "other" and "iterator" in other["type"]
    assert fingerprint(None) is None
