"""absl flags for keras_repro: `--repro_seed`, `--repro_mode`, `--repro_threads`, `--repro_isa`, `--repro_dir`.

Importing this module defines the flags on absl's global `FLAGS`. Once `absl.app.run` (or `FLAGS(argv)`)
has parsed them, `keras_repro.configure()` and `keras_repro.fit()` called without those arguments use
them. Explicit arguments win over flags; flags win over the `KERAS_REPRO_*` environment.

Example:
    >>> from absl import app
    >>> import keras_repro, keras_repro.flags
    >>> def main(argv):
    ...     keras_repro.configure()           # takes --repro_seed / --repro_mode / --repro_threads
    >>> app.run(main)                         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from absl import flags

from keras_repro.isa import DEFAULT_LEVEL, LEVELS
from keras_repro.policy import MODES

__all__ = ["define_flags", "parsed_policy_values", "parsed_run_dir", "all_flag_values", "FLAGS"]

FLAGS = flags.FLAGS
_NAMES = ("repro_seed", "repro_mode", "repro_threads", "repro_isa", "repro_dir")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the five flags on `flag_values` (a fresh `FlagValues()` in tests); safe to call twice."""
    if "repro_seed" in flag_values:
        return
    flags.DEFINE_integer(
        "repro_seed", None, "Seed for Python, NumPy, TF and Keras, in [0, 2**32-1].",
        lower_bound=0, upper_bound=2**32 - 1, flag_values=flag_values,
    )
    flags.DEFINE_enum("repro_mode", None, list(MODES), "keras_repro mode.", flag_values=flag_values)
    flags.DEFINE_integer(
        "repro_threads", None, "Intra-op thread count (default: 1 in bitwise mode, all cores in deterministic).",
        lower_bound=1, flag_values=flag_values,
    )
    flags.DEFINE_string(
        "repro_isa", None,
        f"CPU instruction set to pin for oneDNN and XLA ({', '.join(LEVELS)}, or 'native' for no pin; "
        f"default: {DEFAULT_LEVEL} in bitwise mode). See docs/portability.md.", flag_values=flag_values,
    )
    flags.DEFINE_string("repro_dir", None, "Directory for run records (default: runs/).", flag_values=flag_values)


define_flags()


def parsed_policy_values(flag_values: flags.FlagValues = FLAGS) -> dict[str, Any] | None:
    """{"seed", "mode", "threads"} (and "isa" when given) from the parsed flags; None before parsing."""
    if not flag_values.is_parsed() or "repro_seed" not in flag_values:
        return None
    values = {
        "seed": flag_values["repro_seed"].value,
        "mode": flag_values["repro_mode"].value,
        "threads": flag_values["repro_threads"].value,
    }
    if "repro_isa" in flag_values and flag_values["repro_isa"].value is not None:
        values["isa"] = flag_values["repro_isa"].value
    return values


def parsed_run_dir(flag_values: flags.FlagValues = FLAGS) -> str | None:
    if not flag_values.is_parsed() or "repro_dir" not in flag_values:
        return None
    return flag_values["repro_dir"].value


def all_flag_values(flag_values: flags.FlagValues = FLAGS) -> dict[str, Any] | None:
    """Every parsed flag's value (the script's own flags too), for the record; None before parsing."""
    if not flag_values.is_parsed():
        return None
    from keras_repro.record import to_jsonable

    values = {}
    for name in flag_values:  # every registered name, short names included (public FlagValues iteration)
        flag = flag_values[name]
        if name != flag.name:  # short names alias the same flag
            continue
        module = flag_values.find_module_defining_flag(name, default="")
        if module.startswith("absl.") and name not in _NAMES:
            continue  # absl's own logging/testing flags
        values[name] = to_jsonable(flag.value)
    return dict(sorted(values.items()))
