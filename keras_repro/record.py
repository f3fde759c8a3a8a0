"""The run record: one directory per run holding `run.json`, written atomically.

TensorFlow-free, so `show`, `diff` and `plot` can read records without starting TF.
The format is documented in docs/record-format.md.

Example:
    >>> rec = load_run("runs/20261127-101500-3f2a9c")      # doctest: +SKIP
    >>> rec.status, rec.final_weights_sha256                # doctest: +SKIP
    ('completed', '9b1d...')
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from keras_repro.errors import RecordError
from keras_repro.policy import ENV_RECORDS_FILE

__all__ = [
    "SCHEMA",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "RECORD_FILE",
    "RunRecord",
    "load_run",
    "validate_record",
    "to_jsonable",
    "atomic_write_json",
    "create_run_dir",
    "utc_now",
]

SCHEMA_NAME = "keras_repro.run"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"
RECORD_FILE = "run.json"
STATUSES = ("running", "completed", "failed", "interrupted")

# Top-level sections every record of this schema has, with their JSON types.
_SECTIONS: dict[str, type | tuple[type, ...]] = {
    "run_id": str,
    "status": str,
    "policy": dict,
    "applied": dict,
    "environment": dict,
    "code": dict,
    "fit": dict,
    "hyperparameters": dict,
    "model": dict,
    "data": dict,
    "metrics": dict,
}


# Python refuses to convert ints of more than 4300 decimal digits to or from text (CVE-2020-10735);
# 14000 bits is about 4214 digits.
_MAX_INT_BITS = 14_000
_VERSION = re.compile(r"[0-9]{1,9}\Z")


def utc_now() -> str:
    """The current UTC time in ISO 8601 with microseconds, e.g. '2026-11-27T10:15:00.123456+00:00'."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def to_jsonable(value: Any, *, _depth: int = 0) -> Any:
    """Converts `value` into JSON-encodable data without losing what it says.

    Floats stay Python floats (their `repr` round-trips bit for bit; NaN and infinities are written as
    the JSON extensions `NaN`/`Infinity`, which Python reads back). NumPy scalars and arrays become
    numbers and lists, mappings get string keys, and anything else becomes its `repr` inside
    `{"__repr__": ...}` so that a value never breaks a record.

    Example:
        >>> to_jsonable({"lr": 1e-3, 2: (1, 2), "f": float("nan")})
        {'lr': 0.001, '2': [1, 2], 'f': nan}
    """
    if _depth > 50:
        return {"__repr__": _safe_repr(value)}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:  # json cannot write (or read back) it in decimal
            return {"__repr__": f"int({hex(value)!r}, 16)"}
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, _depth=_depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v, _depth=_depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)
    shape = getattr(value, "shape", None)
    if callable(item) and shape == ():  # NumPy / TF scalar
        try:
            return to_jsonable(item(), _depth=_depth + 1)
        except Exception:
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and shape is not None and _size(shape) <= 10_000:
        try:
            return to_jsonable(tolist(), _depth=_depth + 1)
        except Exception:
            pass
    numpy_method = getattr(value, "numpy", None)
    if callable(numpy_method):
        try:
            return to_jsonable(numpy_method(), _depth=_depth + 1)
        except Exception:
            pass
    return {"__repr__": _safe_repr(value)}


def _size(shape: Any) -> int:
    try:
        return math.prod(int(d) for d in shape)
    except Exception:
        return 10**9


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not break the record
        text = f"<{type(value).__name__}: repr failed: {e}>"
    return text if len(text) <= 2000 else text[:2000] + "...(truncated)"


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Writes `data` as JSON to `path` atomically: a temporary file in the same folder, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never a half-written one.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(data), indent=1, allow_nan=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def create_run_dir(run_dir: str | os.PathLike[str]) -> tuple[str, Path]:
    """Creates `<run_dir>/<run_id>/` exclusively and returns (run_id, path).

    Run ids are `YYYYmmdd-HHMMSS-<6 hex>`; the hex part comes from the OS, never from a seeded RNG
    (so seeding cannot make two concurrent runs collide), and `mkdir` fails on a clash, so a retry
    picks another id.
    """
    base = Path(run_dir)
    if base.exists() and not base.is_dir():
        raise RecordError(
            f"Cannot create run records in {str(base)!r}: it exists and is not a directory. "
            f"Fix: pass run_dir= a directory (or remove the file)."
        )
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RecordError(
            f"Cannot create the run directory {str(base)!r}: {e.strerror or e}. "
            f"Fix: pass run_dir= a writable directory, or set KERAS_REPRO_DIR."
        ) from None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        run_id = f"{stamp}-{secrets.token_hex(3)}"
        path = base / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise RecordError(
                f"Cannot create the run directory {str(path)!r}: {e.strerror or e}. "
                f"Fix: pass run_dir= a writable directory."
            ) from None
        return run_id, path
    raise RecordError(f"Could not find a free run id under {str(base)!r} after 100 tries.")


class RunRecord(Mapping[str, Any]):
    """A run record: a read-only mapping over the JSON of `run.json`, with typed shortcuts.

    Example:
        >>> rec = RunRecord({"schema": SCHEMA, "run_id": "r1", "status": "completed"})
        >>> rec.run_id, rec["status"]
        ('r1', 'completed')
    """

    def __init__(self, data: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> None:
        self._data = dict(data)
        self.path: Path | None = Path(path) if path is not None else None

    # Mapping protocol
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"RunRecord(run_id={self.run_id!r}, status={self.status!r}, path={str(self.path)!r})"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data, allow_nan=True))

    def section(self, name: str) -> dict[str, Any]:
        value = self._data.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def run_id(self) -> str | None:
        return self._data.get("run_id")

    @property
    def status(self) -> str | None:
        return self._data.get("status")

    @property
    def directory(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    @property
    def policy(self) -> dict[str, Any]:
        return self.section("policy")

    @property
    def applied(self) -> dict[str, Any]:
        return self.section("applied")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.section("metrics")

    @property
    def epochs(self) -> list[dict[str, Any]]:
        value = self.metrics.get("epochs")
        return value if isinstance(value, list) else []

    @property
    def steps(self) -> list[float]:
        value = self.metrics.get("steps")
        return value if isinstance(value, list) else []

    @property
    def initial_weights_sha256(self) -> str | None:
        return self.section("model").get("initial_weights_sha256")

    @property
    def final_weights_sha256(self) -> str | None:
        return self.section("model").get("final_weights_sha256")


def _short(path: Any) -> str:
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    return text if len(text) <= 300 else text[:150] + "..." + text[-100:]


def _record_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        return p / RECORD_FILE
    return p


def load_run(path: str | os.PathLike[str]) -> RunRecord:
    """Reads a run record from a run directory or its `run.json`.

    Raises `RecordError` (a `ReproducibilityError`) with a one-line message when the path is missing,
    the file is empty, truncated or not JSON, of another schema or a newer schema version, or when a
    section has the wrong type.

    Example:
        >>> rec = load_run("runs/20261127-101500-3f2a9c")   # doctest: +SKIP
    """
    try:
        p = _record_path(path)
        if not p.exists():
            where = "no such file or directory" if not Path(path).exists() else f"no {RECORD_FILE} in it"
            raise RecordError(f"{_short(path)!r}: {where}. Expected a run directory or its {RECORD_FILE}.")
        raw = p.read_bytes()
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, a directory called run.json, ...
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise RecordError(f"{_short(path)!r}: cannot read a run record: {reason}.") from None
    if not raw.strip():
        raise RecordError(f"{str(p)!r}: the file is empty; not a run record.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError(f"{str(p)!r}: not UTF-8 text; not a run record.") from None
    except json.JSONDecodeError as e:
        what = "truncated JSON" if e.pos >= len(raw.rstrip()) - 1 else "not valid JSON"
        raise RecordError(f"{str(p)!r}: {what} (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    except RecursionError:
        raise RecordError(f"{str(p)!r}: JSON nested too deeply; not a run record.") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise RecordError(f"{str(p)!r}: not a run record: {' '.join(str(e).split())[:200]}.") from None
    validate_record(data, where=str(p))
    return RunRecord(data, p)


def validate_record(data: Any, *, where: str = "record") -> None:
    """Raises `RecordError` unless `data` looks like a record of this schema."""
    if not isinstance(data, dict):
        raise RecordError(f"{where!r}: expected a JSON object, found {type(data).__name__}; not a run record.")
    schema = data.get("schema")
    if not isinstance(schema, str) or "/" not in schema:
        raise RecordError(f"{where!r}: no 'schema' field of the form '{SCHEMA_NAME}/N'; not a keras_repro run record.")
    name, _, version = schema.rpartition("/")
    if name != SCHEMA_NAME:
        raise RecordError(f"{where!r}: schema {schema!r} is not a keras_repro run record (expected {SCHEMA!r}).")
    if not _VERSION.match(version):
        if version.isdigit() and version.isascii():  # a huge version number: from the future
            version = "999999999"
        else:
            raise RecordError(f"{where!r}: schema version {version[:40]!r} is not a number (expected {SCHEMA!r}).")
    if int(version) > SCHEMA_VERSION:
        raise RecordError(
            f"{where!r}: schema {schema!r} is newer than this keras_repro reads ({SCHEMA!r}). "
            f"Fix: upgrade keras_repro (pip install -U keras-repro)."
        )
    for key, kind in _SECTIONS.items():
        # A section is null until known (a run that failed before training began has no model yet).
        if key in data and not isinstance(data[key], kind) and not (data[key] is None and kind is dict):
            raise RecordError(
                f"{where!r}: field {key!r} should be a {_type_name(kind)}, found {type(data[key]).__name__}."
            )
    status = data.get("status")
    if status is not None and status not in STATUSES:
        raise RecordError(f"{where!r}: status {status!r} is not one of {', '.join(STATUSES)}.")
    for name, check, expected in _FIELDS:
        section, _, key = name.partition(".")
        container = data.get(section)
        if isinstance(container, dict) and key in container and not check(container[key]):
            raise RecordError(f"{where!r}: field {name!r} should be {expected}, found {_found(container[key])}.")


def _number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _list_of(check: Any) -> Any:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _found(value: Any) -> str:
    if isinstance(value, list):
        bad = [type(x).__name__ for x in value[:50]]
        return f"a list of {', '.join(sorted(set(bad)))}" if bad else "an empty list"
    return type(value).__name__


# Nested fields whose type the readers (show, diff, plot) rely on: (section.key, check, expected).
_FIELDS: tuple[tuple[str, Any, str], ...] = (
    ("metrics.steps", _list_of(_number), "a list of numbers (or null)"),
    ("metrics.epochs", _list_of(lambda e: isinstance(e, dict)), "a list of JSON objects"),
    ("metrics.steps_per_epoch", _list_of(lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 0),
     "a list of non-negative integers"),
    ("model.initial_weights_sha256", lambda v: v is None or isinstance(v, str), "a string or null"),
    ("model.final_weights_sha256", lambda v: v is None or isinstance(v, str), "a string or null"),
)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "JSON object", list: "list", str: "string"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def announce_record(path: str | os.PathLike[str]) -> None:
    """Appends a record's absolute path to `$KERAS_REPRO_RECORDS_FILE`, if set (how `check` finds it).

    One `write` with O_APPEND: lines of concurrent runs never interleave. (`RunWriter` announces every
    fit's record through it.)
    """
    records_file = os.environ.get(ENV_RECORDS_FILE)
    if not records_file:
        return
    line = (str(Path(path).resolve()) + "\n").encode()
    fd = os.open(records_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
