"""policy.py: every wrong seed, mode and thread count is refused early with one clear line, whether it
comes as an argument, from Policy(...), the environment (KERAS_REPRO_*) or absl flags."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from absl import flags as absl_flags

import keras_repro
from keras_repro.errors import InvalidPolicyError, ReproducibilityError
from keras_repro.policy import MAX_SEED, MAX_THREADS, Policy, resolve, validate_mode, validate_seed, validate_threads


def stable_id(value: object) -> str:
    """repr, without the memory address of a plain object(): ids must match across pytest-xdist workers."""
    return "object()" if type(value) is object else repr(value)


BAD_SEEDS = [
    True, False, -1, MAX_SEED + 1, 2**64, -(2**70), 1.0, 42.0, 0.5, math.nan, math.inf, "42", "", b"42",
    Decimal(42), Fraction(42, 1), 1 + 0j, [42], (42,), {"seed": 42}, object(), np.float32(1), np.int64(-1),
    np.uint64(2**63), np.array([1, 2]), np.bool_(True),
]
GOOD_SEEDS = [0, 1, 42, MAX_SEED, np.int32(7), np.uint32(MAX_SEED), np.int64(0), None]
BAD_MODES = [
    "", "Bitwise", "BITWISE", " bitwise", "bitwise ", "determinism", "strict", "on", "none", "true", "0", 1, 0,
    True, None.__class__, b"bitwise", ["bitwise"], 3.0, "off\x00",
]
BAD_THREADS = [0, -1, -(2**40), MAX_THREADS + 1, 10**9, True, False, 1.0, 2.5, "2", "", math.nan, [2], np.float64(2)]
GOOD_THREADS = [1, 2, MAX_THREADS, np.int8(3), None]


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and 0 < len(text) < 500, text
    return text


@pytest.mark.parametrize("seed", BAD_SEEDS, ids=stable_id)
def test_bad_seeds_are_refused_everywhere(seed: object) -> None:
    for call in (lambda: validate_seed(seed), lambda: Policy.create(seed=seed), lambda: Policy(seed=seed),
                 lambda: resolve(seed=seed, environ={}), lambda: keras_repro.configure(seed=seed)):
        with pytest.raises(InvalidPolicyError) as info:
            call()
        assert "seed" in _one_line(info.value) and "Fix:" in str(info.value)


@pytest.mark.parametrize("seed", GOOD_SEEDS, ids=stable_id)
def test_good_seeds_are_exact_python_ints(seed: object) -> None:
    got = Policy.create(seed=seed).seed
    assert got == (None if seed is None else int(seed)) and (got is None or type(got) is int)


@pytest.mark.parametrize("mode", BAD_MODES, ids=stable_id)
def test_bad_modes_are_refused_everywhere(mode: object) -> None:
    for call in (lambda: validate_mode(mode), lambda: Policy.create(mode=mode), lambda: Policy(mode=mode),
                 lambda: resolve(mode=mode, environ={}), lambda: keras_repro.configure(mode=mode)):
        with pytest.raises(InvalidPolicyError) as info:
            call()
        assert "'bitwise'" in _one_line(info.value)


def test_mode_in_wrong_case_suggests_the_right_one() -> None:
    with pytest.raises(InvalidPolicyError, match="Did you mean 'bitwise'"):
        validate_mode(" Bitwise")


def test_policy_built_directly_cannot_be_invalid() -> None:
    with pytest.raises(InvalidPolicyError):
        Policy(seed=1, mode=None)  # type: ignore[arg-type]
    assert Policy(seed=np.int64(5)).seed == 5 and type(Policy(seed=np.int64(5)).seed) is int


@pytest.mark.parametrize("threads", BAD_THREADS, ids=stable_id)
def test_bad_thread_counts_are_refused_everywhere(threads: object) -> None:
    for call in (lambda: validate_threads(threads), lambda: Policy.create(threads=threads),
                 lambda: Policy(threads=threads), lambda: keras_repro.configure(threads=threads)):
        with pytest.raises(InvalidPolicyError) as info:
            call()
        assert "threads" in _one_line(info.value)


@pytest.mark.parametrize("threads", GOOD_THREADS, ids=stable_id)
def test_good_thread_counts(threads: object) -> None:
    assert Policy.create(threads=threads).threads == (None if threads is None else int(threads))


BAD_ENV = [
    ("KERAS_REPRO_SEED", "abc"), ("KERAS_REPRO_SEED", "1.5"), ("KERAS_REPRO_SEED", "-3"),
    ("KERAS_REPRO_SEED", "4294967296"), ("KERAS_REPRO_SEED", "0x10"), ("KERAS_REPRO_SEED", "1_000"),
    ("KERAS_REPRO_SEED", "\u0664\u0662"), ("KERAS_REPRO_SEED", "9" * 200), ("KERAS_REPRO_SEED", "1e3"),
    ("KERAS_REPRO_SEED", "42 43"), ("KERAS_REPRO_SEED", "True"),
    ("KERAS_REPRO_MODE", "Bitwise"), ("KERAS_REPRO_MODE", "fast"), ("KERAS_REPRO_MODE", "1"),
    ("KERAS_REPRO_THREADS", "0"), ("KERAS_REPRO_THREADS", "-2"), ("KERAS_REPRO_THREADS", "two"),
    ("KERAS_REPRO_THREADS", "2.0"), ("KERAS_REPRO_THREADS", "100000"),
]


@pytest.mark.parametrize("name, value", BAD_ENV)
def test_bad_environment_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidPolicyError) as info:
        resolve(environ={name: value})
    assert name in _one_line(info.value)


def test_environment_values_are_trimmed_and_empty_means_unset() -> None:
    policy, sources = resolve(environ={"KERAS_REPRO_SEED": " 42 ", "KERAS_REPRO_MODE": "", "KERAS_REPRO_THREADS": "  "})
    assert policy == Policy(seed=42) and sources == {"seed": "env", "mode": "default", "threads": "default"}


def test_explicit_beats_flags_beats_environment() -> None:
    env = {"KERAS_REPRO_SEED": "1", "KERAS_REPRO_MODE": "seeded", "KERAS_REPRO_THREADS": "3"}
    flag_values = {"seed": 2, "mode": "bitwise", "threads": None}
    policy, sources = resolve(seed=3, flag_values=flag_values, environ=env)
    assert policy == Policy(seed=3, mode="bitwise", threads=3)
    assert sources == {"seed": "explicit", "mode": "flag", "threads": "env"}


def test_an_explicit_bad_value_is_refused_even_when_env_is_good() -> None:
    with pytest.raises(InvalidPolicyError):
        resolve(seed=-1, environ={"KERAS_REPRO_SEED": "1"})


@pytest.mark.parametrize("key, value", [("seed", -5), ("seed", 1.5), ("mode", "fast"), ("threads", 0)])
def test_bad_flag_values_given_programmatically_name_the_flag(key: str, value: object) -> None:
    with pytest.raises(InvalidPolicyError) as info:
        resolve(flag_values={key: value}, environ={})
    assert f"--repro_{key}" in _one_line(info.value)


@pytest.mark.parametrize("argv", [
    ["--repro_seed=-1"], ["--repro_seed=4294967296"], ["--repro_seed=abc"], ["--repro_seed=1.5"],
    ["--repro_mode=fast"], ["--repro_mode=Bitwise"], ["--repro_threads=0"], ["--repro_threads=x"],
])
def test_bad_absl_flags_are_refused_when_parsed(argv: list[str]) -> None:
    from keras_repro.flags import define_flags, parsed_policy_values

    fv = absl_flags.FlagValues()
    define_flags(fv)
    with pytest.raises(absl_flags.Error) as info:
        fv(["prog", *argv])
    assert argv[0].split("=")[0].lstrip("-") in str(info.value)
    assert parsed_policy_values(fv) is None  # nothing half-parsed leaks into the policy


def test_good_absl_flags_reach_the_policy() -> None:
    from keras_repro.flags import define_flags, parsed_policy_values

    fv = absl_flags.FlagValues()
    define_flags(fv)
    fv(["prog", "--repro_seed=7", "--repro_mode=bitwise", "--repro_threads=2"])
    policy, sources = resolve(flag_values=parsed_policy_values(fv), environ={})
    assert policy == Policy(seed=7, mode="bitwise", threads=2) and set(sources.values()) == {"flag"}


def test_refusals_change_nothing_in_the_process() -> None:
    from keras_repro import runtime

    before = runtime.configured_policy()
    for bad in ({"seed": -1}, {"mode": "x"}, {"threads": 0}):
        with pytest.raises(ReproducibilityError):
            keras_repro.configure(**bad)
    assert runtime.configured_policy() == before
