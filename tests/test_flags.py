"""absl flags: --repro_* reach configure()/fit() and the record; explicit arguments win."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from absl import flags

from helpers import REPO, run_child

CHILD = REPO / "tests" / "programs" / "absl_child.py"


def test_define_flags_on_fresh_flag_values_and_parse():
    from keras_repro import flags as repro_flags

    fv = flags.FlagValues()
    repro_flags.define_flags(fv)
    repro_flags.define_flags(fv)  # idempotent
    assert repro_flags.parsed_policy_values(fv) is None  # not parsed yet
    fv(["prog", "--repro_seed=5", "--repro_mode=bitwise", "--repro_threads=2", "--repro_dir=/tmp/r"])
    assert repro_flags.parsed_policy_values(fv) == {"seed": 5, "mode": "bitwise", "threads": 2}
    assert repro_flags.parsed_run_dir(fv) == "/tmp/r"


@pytest.mark.parametrize("argv", [["--repro_seed=-1"], ["--repro_seed=4294967296"], ["--repro_mode=fast"],
                                  ["--repro_threads=0"], ["--repro_seed=abc"]])
def test_bad_flag_values_are_refused_by_absl(argv):
    from keras_repro import flags as repro_flags

    fv = flags.FlagValues()
    repro_flags.define_flags(fv)
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", *argv])


@pytest.fixture(scope="module")
def absl_run(tmp_path_factory) -> tuple[dict, Path]:
    """One absl child: flags say seed 5, mode seeded; the environment says bitwise, seed 77 (flags must win)."""
    tmp_path = tmp_path_factory.mktemp("absl")
    proc = run_child([sys.executable, str(CHILD), "--repro_seed=5", "--repro_mode=seeded",
                      f"--repro_dir={tmp_path}", "--learning_rate=0.03"],
                     env={"KERAS_REPRO_MODE": "bitwise", "KERAS_REPRO_SEED": "77"})
    return json.loads(proc.stdout.strip().splitlines()[-1]), tmp_path


@pytest.mark.slow
def test_flags_drive_configure_and_fit_and_are_recorded(absl_run):
    out, tmp_path = absl_run
    first = out["runs"][0]  # fit() without arguments
    assert out["applied"]["seed"] == 5 and out["applied"]["mode"] == "seeded"
    assert out["applied"]["seed_source"] == "flag"
    assert first["policy"] == {"seed": 5, "mode": "seeded", "threads": None}
    assert Path(first["path"]).parent.parent == tmp_path, "--repro_dir was not used"
    assert first["flags"]["repro_seed"] == 5 and first["flags"]["learning_rate"] == 0.03


@pytest.mark.slow
def test_explicit_arguments_win_over_flags_and_flags_over_environment(absl_run):
    out, _ = absl_run
    assert out["applied"]["mode"] == "seeded", "the flag must win over KERAS_REPRO_MODE"
    assert out["applied"]["seed"] == 5
    assert out["runs"][1]["run_applied"]["seed"] == 123, "fit(seed=123) must win over --repro_seed"
