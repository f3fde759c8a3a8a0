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


@pytest.mark.slow
def test_flags_drive_configure_and_fit_and_are_recorded(tmp_path: Path):
    proc = run_child([sys.executable, str(CHILD), "--repro_seed=5", "--repro_mode=seeded",
                      f"--repro_dir={tmp_path}", "--learning_rate=0.03"])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["applied"]["seed"] == 5 and out["applied"]["mode"] == "seeded"
    assert out["applied"]["seed_source"] == "flag"
    assert out["policy"] == {"seed": 5, "mode": "seeded", "threads": None}
    assert Path(out["path"]).parent.parent == tmp_path, "--repro_dir was not used"
    assert out["flags"]["repro_seed"] == 5 and out["flags"]["learning_rate"] == 0.03


@pytest.mark.slow
def test_explicit_arguments_win_over_flags_and_flags_over_environment(tmp_path: Path):
    proc = run_child([sys.executable, str(CHILD), "--repro_seed=5", "--repro_mode=seeded",
                      f"--repro_dir={tmp_path}", "--explicit_seed"],
                     env={"KERAS_REPRO_MODE": "bitwise", "KERAS_REPRO_SEED": "77"})
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["applied"]["mode"] == "seeded", "the flag must win over KERAS_REPRO_MODE"
    assert out["applied"]["seed"] == 5
    assert out["run_applied"]["seed"] == 123, "fit(seed=123) must win over --repro_seed"
