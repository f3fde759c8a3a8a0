"""record.py: load_run refuses every malformed record with one clear RecordError, writes are atomic,
and any value a model or a training run produces is stored faithfully (NaN losses round-trip)."""

from __future__ import annotations

import json
import math
import os
import struct
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import DELETE, base_record, make_record, record_dict
from keras_repro import ReproducibilityError
from keras_repro.errors import RecordError
from keras_repro.record import SCHEMA, atomic_write_json, create_run_dir, load_run, to_jsonable

# ---------------------------------------------------------------------------------------------------
# load_run: every way a record can be bad


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, f"error message spans lines: {text!r}"
    assert 0 < len(text) < 600, text
    return text


def _write_bytes(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "r" / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


GOOD = json.dumps(base_record(), indent=1).encode()

BAD_FILES = {
    "empty": b"",
    "whitespace": b" \n\t\n",
    "not JSON": b"hello, I am not a record\n",
    "truncated half": GOOD[: len(GOOD) // 2],
    "truncated by one byte": GOOD[:-1],
    "truncated to one char": b"{",
    "binary": bytes(range(256)),
    "latin-1": '{"schema": "keras_repro.run/1", "host": "m\xe4chine"}'.encode("latin-1"),
    "a list": b"[1, 2, 3]",
    "a number": b"42",
    "null": b"null",
    "a string": b'"keras_repro.run/1"',
    "no schema": json.dumps({"run_id": "x", "status": "completed"}).encode(),
    "schema not a string": json.dumps({"schema": 1}).encode(),
    "schema without version": json.dumps({"schema": "keras_repro.run"}).encode(),
    "another schema": json.dumps({"schema": "mlflow.run/1"}).encode(),
    "newer version": json.dumps({**base_record(), "schema": "keras_repro.run/2"}).encode(),
    "much newer version": json.dumps({**base_record(), "schema": "keras_repro.run/99999999999999999999"}).encode(),
    "version not a number": json.dumps({**base_record(), "schema": "keras_repro.run/one"}).encode(),
    "version superscript digit": json.dumps({**base_record(), "schema": "keras_repro.run/\u00b2"}).encode(),
    "version Arabic-Indic digit": json.dumps({**base_record(), "schema": "keras_repro.run/\u0661"}).encode(),
    "version negative": json.dumps({**base_record(), "schema": "keras_repro.run/-1"}).encode(),
    "version empty": json.dumps({**base_record(), "schema": "keras_repro.run/"}).encode(),
    "integer too long to parse": b'{"schema": "keras_repro.run/1", "pid": ' + b"9" * 5000 + b"}",
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "BOM": b"\xef\xbb\xbf" + GOOD,
    "status unknown": json.dumps({**base_record(), "status": "exploded"}).encode(),
    "status not a string": json.dumps({**base_record(), "status": 3}).encode(),
    "policy a list": json.dumps({**base_record(), "policy": [42, "bitwise"]}).encode(),
    "metrics a string": json.dumps({**base_record(), "metrics": "loss=1"}).encode(),
    "metrics.steps a dict": json.dumps(record_dict(metrics__steps={"0": 1.0})).encode(),
    "metrics.steps strings": json.dumps(record_dict(metrics__steps=["1.0", "0.5"])).encode(),
    "metrics.epochs numbers": json.dumps(record_dict(metrics__epochs=[1.0, 0.5])).encode(),
    "metrics.steps_per_epoch strings": json.dumps(record_dict(metrics__steps_per_epoch=["4"])).encode(),
    "model.final hash a number": json.dumps(record_dict(model__final_weights_sha256=12)).encode(),
    "run_id a number": json.dumps({**base_record(), "run_id": 7}).encode(),
    "data a list": json.dumps({**base_record(), "data": []}).encode(),
    "environment a string": json.dumps({**base_record(), "environment": "linux"}).encode(),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_load_run_refuses_bad_files_with_one_line(tmp_path: Path, case: str) -> None:
    path = _write_bytes(tmp_path, BAD_FILES[case])
    with pytest.raises(RecordError) as info:
        load_run(path)
    _one_line(info.value)
    assert str(path) in str(info.value) or case in ("nested too deep",)


@pytest.mark.parametrize("case", ["newer version", "much newer version"])
def test_newer_schema_says_upgrade(tmp_path: Path, case: str) -> None:
    with pytest.raises(RecordError, match="newer than this keras_repro reads.*upgrade"):
        load_run(_write_bytes(tmp_path, BAD_FILES[case]))


def test_truncated_record_is_called_truncated(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="truncated"):
        load_run(_write_bytes(tmp_path, GOOD[: len(GOOD) // 2]))


def test_bad_paths(tmp_path: Path) -> None:
    file = tmp_path / "plain.txt"
    file.write_text("x")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    dir_named_run_json = tmp_path / "d" / "run.json"
    dir_named_run_json.mkdir(parents=True)
    cases = [
        tmp_path / "missing",
        tmp_path / "missing" / "run.json",
        empty_dir,
        file / "run.json",  # a path under a regular file
        dir_named_run_json,
        tmp_path / ("x" * 5000),  # name too long for the OS
        str(tmp_path / "nul\x00byte"),
        "",
    ]
    for case in cases:
        with pytest.raises(RecordError) as info:
            load_run(case)
        _one_line(info.value)
    assert issubclass(RecordError, ReproducibilityError)


def test_valid_record_loads_and_accepts_dir_or_file(tmp_path: Path) -> None:
    path = make_record(tmp_path)
    for target in (path, path.parent, str(path.parent)):
        rec = load_run(target)
        assert rec.status == "completed" and rec.steps == base_record()["metrics"]["steps"]


def test_older_records_without_optional_sections_still_load(tmp_path: Path) -> None:
    path = make_record(tmp_path, environment=DELETE, code=DELETE, data=DELETE, model=DELETE)
    assert load_run(path).final_weights_sha256 is None


# A fuzzer over the bytes of a valid record: whatever it becomes, load_run either returns a record or
# raises RecordError, and never anything else; records it accepts can be compared.

@st.composite
def _mutations(draw: st.DrawFn) -> bytes:
    if True:
        data = type("D", (), {"draw": staticmethod(draw)})
        raw = bytearray(GOOD)
        for _ in range(data.draw(st.integers(1, 6))):
            op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete", "dup"]))
            i = data.draw(st.integers(0, max(0, len(raw) - 1)))
            if op == "flip" and raw:
                raw[i] = data.draw(st.integers(0, 255))
            elif op == "cut":
                del raw[i:]
            elif op == "insert":
                raw[i:i] = data.draw(st.sampled_from([b"{", b"}", b"[", b"]", b",", b'"', b"NaN", b"-", b"1e999",
                                                      b"null", b"\\u0000", b"\xff", b"9" * 30]))
            elif op == "delete":
                del raw[i : i + data.draw(st.integers(1, 40))]
            elif op == "dup":
                raw[i:i] = raw[i : i + data.draw(st.integers(1, 80))]
        return bytes(raw)


def _check_loads_or_refuses(tmp_path: Path, raw: bytes) -> None:
    path = _write_bytes(tmp_path, raw)
    try:
        rec = load_run(path)
    except RecordError as e:
        _one_line(e)
        return
    except Exception as e:  # pragma: no cover - the failure this test looks for
        raise AssertionError(f"load_run raised {type(e).__name__}: {e} for {raw[:300]!r}") from e
    from keras_repro import compare

    try:
        compare(rec, load_run(make_record(tmp_path / "other")))
    except ReproducibilityError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_mutations())
def test_fuzzed_bytes_only_raise_record_error(tmp_path: Path, raw: bytes) -> None:
    _check_loads_or_refuses(tmp_path, raw)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["schema", "run_id", "status", "policy", "applied", "environment", "code", "fit", "hyperparameters",
          "model", "data", "metrics", "metrics__steps", "metrics__epochs", "metrics__steps_per_epoch",
          "model__final_weights_sha256", "model__initial_weights_sha256", "data__x", "data__order",
          "applied__mode", "policy__seed", "environment__env", "code__git", "started_at", "error"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(replacements=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, min_size=1, max_size=4))
def test_fields_of_any_json_type_only_raise_record_error(tmp_path: Path, replacements: dict) -> None:
    data = base_record()
    for key, value in replacements.items():
        *parents, leaf = key.split("__")
        target = data
        for p in parents:
            if not isinstance(target.get(p), dict):
                target[p] = {}
            target = target[p]
        target[leaf] = value
    _check_loads_or_refuses(tmp_path, json.dumps(data, allow_nan=True).encode())


# ---------------------------------------------------------------------------------------------------
# Faithful values: whatever training produces, the record keeps it (or says what it was)

def _roundtrip(tmp_path: Path, value: object) -> object:
    data = record_dict(hyperparameters__user={"v": value})
    path = tmp_path / "rt" / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)
    return load_run(path)["hyperparameters"]["user"]["v"]


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@pytest.mark.parametrize("value", [
    float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2,
    np.float32(0.1), np.float64("nan"), np.float16(65504),
])
def test_floats_round_trip_bit_for_bit(tmp_path: Path, value: object) -> None:
    got = _roundtrip(tmp_path, value)
    expected = float(value)  # type: ignore[arg-type]
    assert isinstance(got, float)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert _bits(got) == _bits(expected)


def test_nan_loss_round_trips_as_nan(tmp_path: Path) -> None:
    steps = [2.0, float("nan"), float("inf"), float("-inf")]
    path = tmp_path / "nan" / "run.json"
    path.parent.mkdir()
    atomic_write_json(path, record_dict(metrics__steps=steps, metrics__epochs=[{"loss": float("nan")}]))
    rec = load_run(path)
    assert rec.steps[0] == 2.0 and math.isnan(rec.steps[1]) and rec.steps[2:] == [math.inf, -math.inf]
    assert math.isnan(rec.epochs[0]["loss"])


@pytest.mark.parametrize("value", [2**64 + 1, -(2**100), 10**4000, np.int64(-(2**63)), np.uint64(2**64 - 1)])
def test_huge_ints_are_stored_exactly(tmp_path: Path, value: object) -> None:
    got = _roundtrip(tmp_path, value)
    assert got == int(value)  # type: ignore[call-overload]


class _BadRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr for you")


class _Node:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.parametrize("value, check", [
    (Decimal("0.1"), lambda v: v == {"__repr__": "Decimal('0.1')"}),
    (Fraction(1, 3), lambda v: v == {"__repr__": "Fraction(1, 3)"}),
    (1 + 2j, lambda v: v == {"__repr__": "(1+2j)"}),
    (b"\x00\xff", lambda v: v == {"__repr__": "b'\\x00\\xff'"}),
    (_BadRepr(), lambda v: "repr failed" in v["__repr__"]),
    (_Node(), lambda v: "_Node" in v["__repr__"]),
    (np.arange(4, dtype=np.int8), lambda v: v == [0, 1, 2, 3]),
    (np.zeros((200, 200)), lambda v: "array" in v["__repr__"]),  # too big to inline: summarised
    ({1: "a", (2, 3): "b", None: "c"}, lambda v: v == {"1": "a", "(2, 3)": "b", "None": "c"}),
    ({"b", "a"}, lambda v: v == ["a", "b"]),
    ("\ud800 lone surrogate", lambda v: isinstance(v, str)),
    (Path("/x/y"), lambda v: v == "/x/y"),
    (print, lambda v: "print" in v["__repr__"]),
])
def test_non_json_values_are_represented_not_fatal(tmp_path: Path, value: object, check) -> None:
    assert check(_roundtrip(tmp_path, value))


def test_self_referencing_structures_do_not_recurse_forever(tmp_path: Path) -> None:
    loop: list = []
    loop.append(loop)
    cyclic: dict = {}
    cyclic["self"] = cyclic
    for value in (loop, cyclic):
        got = _roundtrip(tmp_path, value)
        assert "__repr__" in json.dumps(got)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES)
def test_any_json_value_round_trips(tmp_path: Path, value: object) -> None:
    got = _roundtrip(tmp_path, value)
    assert json.dumps(got, sort_keys=True, allow_nan=True) == json.dumps(
        json.loads(json.dumps(to_jsonable(value), allow_nan=True)), sort_keys=True, allow_nan=True)


# ---------------------------------------------------------------------------------------------------
# Atomic writes and run directories

@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_leaves_old_record_and_no_temp_file(tmp_path: Path, monkeypatch, failing: str) -> None:
    path = tmp_path / "run.json"
    atomic_write_json(path, {"schema": SCHEMA, "n": 1})

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError):
        atomic_write_json(path, {"schema": SCHEMA, "n": 2, "big": "x" * 100_000})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"schema": SCHEMA, "n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_huge_int_beyond_json_digits_limit_is_stored_as_exact_hex(tmp_path: Path) -> None:
    value = 3**20000  # ~9500 digits: json can neither write nor read it in decimal
    got = _roundtrip(tmp_path, value)
    assert int(eval(got["__repr__"])) == value  # int('0x...', 16)


def test_record_of_a_run_that_failed_before_training_began_loads(tmp_path: Path) -> None:
    path = make_record(tmp_path, status="failed", model=None, data=None, fit=None, hyperparameters=None)
    assert load_run(path).final_weights_sha256 is None


def test_run_dir_that_is_a_file_or_under_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    for run_dir in (file, file / "runs", file / "a" / "b"):
        with pytest.raises(RecordError) as info:
            create_run_dir(run_dir)
        _one_line(info.value)
    assert file.read_text() == "x"


def test_run_ids_are_unique_even_after_seeding(tmp_path: Path) -> None:
    import random

    ids = set()
    for _ in range(50):
        random.seed(0)
        np.random.seed(0)
        ids.add(create_run_dir(tmp_path)[0])
    assert len(ids) == 50
