"""What the user asks for: a frozen, validated `Policy` (seed, mode, threads, isa).

This module never touches TensorFlow; `keras_repro.runtime` applies a policy.

Example:
    >>> from keras_repro.policy import Policy
    >>> Policy.create(seed=42, mode="bitwise")
    Policy(seed=42, mode='bitwise', threads=None, isa=None)
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from typing import Any, Mapping

from keras_repro.errors import InvalidPolicyError
from keras_repro.isa import validate_isa

__all__ = [
    "MODES",
    "DEFAULT_MODE",
    "MAX_SEED",
    "MAX_THREADS",
    "ENV_SEED",
    "ENV_MODE",
    "ENV_THREADS",
    "ENV_ISA",
    "ENV_DIR",
    "ENV_RECORDS_FILE",
    "ENV_AUTOLOG",
    "Policy",
    "validate_seed",
    "validate_mode",
    "validate_threads",
    "validate_isa",
    "draw_seed",
    "resolve",
]

MODES = ("off", "seeded", "deterministic", "bitwise")
DEFAULT_MODE = "deterministic"
MAX_SEED = 2**32 - 1
MAX_THREADS = 4096  # more is a typo, not a machine: TF would start that many threads per pool

# Environment variables through which `keras-repro run` / `check` pass a policy on.
ENV_SEED = "KERAS_REPRO_SEED"
ENV_MODE = "KERAS_REPRO_MODE"
ENV_THREADS = "KERAS_REPRO_THREADS"
ENV_ISA = "KERAS_REPRO_ISA"
ENV_DIR = "KERAS_REPRO_DIR"
ENV_RECORDS_FILE = "KERAS_REPRO_RECORDS_FILE"
# Set by `keras-repro run`/`check` for the child's start-up hook: "1" autolog with the policy above,
# "off" record only (keras_repro/_bootstrap/sitecustomize.py).
ENV_AUTOLOG = "KERAS_REPRO_AUTOLOG"


def _describe(value: Any) -> str:
    return f"{value!r} (of type {type(value).__name__})"


def validate_seed(seed: Any, *, source: str = "seed") -> int | None:
    """Returns `seed` if it is None or an int in [0, 2**32 - 1], else raises.

    Example:
        >>> validate_seed(7)
        7
    """
    if seed is None:
        return None
    # bool is an int subclass; numpy integers are accepted as exact ints.
    if isinstance(seed, bool) or not _is_integer(seed):
        raise InvalidPolicyError(
            f"Expected `{source}` to be an integer in [0, {MAX_SEED}]. Received: {source}={_describe(seed)}. "
            f"Fix: pass a whole number, e.g. {source}=42."
        )
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise InvalidPolicyError(
            f"Expected `{source}` to be in [0, {MAX_SEED}] (NumPy's legacy seed range). Received: {source}={seed}. "
            f"Fix: pass a seed in that range, e.g. {source}={seed % (MAX_SEED + 1)}."
        )
    return seed


def validate_mode(mode: Any, *, source: str = "mode") -> str | None:
    """Returns `mode` if it is None or one of `MODES`, else raises."""
    if mode is None:
        return None
    if not isinstance(mode, str) or mode not in MODES:
        hint = ""
        if isinstance(mode, str) and mode.strip().lower() in MODES:
            hint = f" Did you mean {mode.strip().lower()!r}?"
        raise InvalidPolicyError(
            f"Expected `{source}` to be one of {', '.join(repr(m) for m in MODES)}. "
            f"Received: {source}={_describe(mode)}.{hint} Fix: pass e.g. {source}='bitwise'."
        )
    return mode


def validate_threads(threads: Any, *, source: str = "threads") -> int | None:
    """Returns `threads` if it is None or a positive int, else raises."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not _is_integer(threads) or not 1 <= int(threads) <= MAX_THREADS:
        raise InvalidPolicyError(
            f"Expected `{source}` to be a positive integer (the intra-op thread count, at most {MAX_THREADS}) or "
            f"None for the mode's default. Received: {source}={_describe(threads)}. Fix: pass e.g. {source}=1."
        )
    return int(threads)


def _is_integer(value: Any) -> bool:
    if isinstance(value, int):
        return True
    try:  # NumPy integer scalars, without importing NumPy here.
        import numbers

        return isinstance(value, numbers.Integral)
    except Exception:  # pragma: no cover
        return False


def draw_seed() -> int:
    """A fresh seed from the OS (never from a seeded RNG), for runs given none."""
    return secrets.randbelow(MAX_SEED + 1)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The reproducibility policy of a run, as asked.

    Attributes:
        seed: int in [0, 2**32 - 1], or None (a seed is then drawn and recorded, except in mode "off").
        mode: "off", "seeded", "deterministic" or "bitwise".
        threads: the intra-op thread count, or None for the mode's default.
        isa: the CPU instruction set to pin ("SSE41", "AVX", "AVX2", "AVX512_CORE", ... see
            `keras_repro.isa.LEVELS`), "native" for no pin, or None for the mode's default (bitwise:
            "AVX2" on x86-64; other modes: no pin). See docs/portability.md.

    Example:
        >>> Policy.create(seed=1, mode="seeded").mode
        'seeded'
    """

    seed: int | None = None
    mode: str = DEFAULT_MODE
    threads: int | None = None
    isa: str | None = None

    def __post_init__(self) -> None:  # a Policy is valid however it was built
        validate_seed(self.seed)
        if self.mode is None or validate_mode(self.mode) is None:
            raise InvalidPolicyError(f"Expected `mode` to be one of {', '.join(repr(m) for m in MODES)}. Received: mode=None.")
        validate_threads(self.threads)
        object.__setattr__(self, "seed", None if self.seed is None else int(self.seed))
        object.__setattr__(self, "threads", None if self.threads is None else int(self.threads))
        object.__setattr__(self, "isa", validate_isa(self.isa))

    @classmethod
    def create(cls, seed: Any = None, mode: Any = None, threads: Any = None, isa: Any = None) -> Policy:
        """Validates and builds a policy; `mode=None` means the default mode."""
        return cls(
            seed=validate_seed(seed),
            mode=validate_mode(mode) or DEFAULT_MODE,
            threads=validate_threads(threads),
            isa=validate_isa(isa),
        )

    def as_dict(self) -> dict[str, Any]:
        """seed, mode, threads, and isa when one was asked (records without it read as "mode default")."""
        out: dict[str, Any] = {"seed": self.seed, "mode": self.mode, "threads": self.threads}
        if self.isa is not None:
            out["isa"] = self.isa
        return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Reads KERAS_REPRO_SEED/MODE/THREADS/ISA, validating them with their variable names."""
    out: dict[str, Any] = {}
    raw_seed = environ.get(ENV_SEED, "").strip()
    if raw_seed:
        out["seed"] = validate_seed(_parse_int(raw_seed, ENV_SEED), source=ENV_SEED)
    raw_mode = environ.get(ENV_MODE, "").strip()
    if raw_mode:
        out["mode"] = validate_mode(raw_mode, source=ENV_MODE)
    raw_threads = environ.get(ENV_THREADS, "").strip()
    if raw_threads:
        out["threads"] = validate_threads(_parse_int(raw_threads, ENV_THREADS), source=ENV_THREADS)
    raw_isa = environ.get(ENV_ISA, "").strip()
    if raw_isa:
        out["isa"] = validate_isa(raw_isa, source=ENV_ISA)
    return out


def _parse_int(text: str, source: str) -> Any:
    if re.fullmatch(r"[+-]?[0-9]{1,30}", text):  # ASCII digits only: int() would also take '1_0' or '٤٢'
        return int(text, 10)
    raise InvalidPolicyError(
        f"Expected the environment variable {source} to hold a whole number. Received: {text[:80]!r}. "
        f"Fix: unset it or set e.g. {source}=42."
    )


def resolve(
    seed: Any = None,
    mode: Any = None,
    threads: Any = None,
    *,
    isa: Any = None,
    flag_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Policy, dict[str, str]]:
    """Merges explicit arguments, absl flag values and environment defaults.

    Explicit arguments win over flags; flags win over the environment (`KERAS_REPRO_*`, as set by
    `keras-repro run`). Returns the policy and, per field, where its value came from (`isa` only when
    some source gave one).

    Example:
        >>> policy, sources = resolve(seed=3, environ={"KERAS_REPRO_MODE": "bitwise"})
        >>> policy, sources["mode"]
        (Policy(seed=3, mode='bitwise', threads=None, isa=None), 'env')
    """
    explicit = {
        "seed": validate_seed(seed),
        "mode": validate_mode(mode),
        "threads": validate_threads(threads),
        "isa": validate_isa(isa),
    }
    flags = dict(flag_values or {})
    checks = (("seed", validate_seed), ("mode", validate_mode), ("threads", validate_threads), ("isa", validate_isa))
    for key, check in checks:
        if flags.get(key) is not None:
            flags[key] = check(flags[key], source=f"--repro_{key}")
    env = _from_env(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in ("seed", "mode", "threads", "isa"):
        for source, table in (("explicit", explicit), ("flag", flags), ("env", env)):
            if table.get(key) is not None:
                values[key] = table[key]
                sources[key] = source
                break
        else:
            values[key] = None
            sources[key] = "default"
    policy = Policy(
        seed=validate_seed(values["seed"], source="--repro_seed" if sources["seed"] == "flag" else "seed"),
        mode=validate_mode(values["mode"]) or DEFAULT_MODE,
        threads=validate_threads(values["threads"]),
        isa=values["isa"],
    )
    if sources["isa"] == "default":
        del sources["isa"]
    return policy, sources
