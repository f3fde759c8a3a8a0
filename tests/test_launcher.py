"""`keras-repro run`: what must be set before Python/TF start, passed to the child."""

from __future__ import annotations

import json
import sys

import pytest

from keras_repro.errors import ReproducibilityError
from keras_repro.launcher import launch_environment, run_command
from keras_repro.policy import Policy


def test_bitwise_environment():
    env = launch_environment(Policy.create(seed=7, mode="bitwise"), environ={"HOME": "/root"})
    assert env["PYTHONHASHSEED"] == "7"
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0" and env["CUDA_VISIBLE_DEVICES"] == "-1"
    assert env["TF_NUM_INTRAOP_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert (env["KERAS_REPRO_SEED"], env["KERAS_REPRO_MODE"]) == ("7", "bitwise")
    assert env["HOME"] == "/root"


def test_deterministic_keeps_devices_and_onednn_and_off_sets_nothing_but_the_mode():
    det = launch_environment(Policy.create(seed=1, mode="deterministic", threads=3), environ={})
    assert "CUDA_VISIBLE_DEVICES" not in det and "TF_ENABLE_ONEDNN_OPTS" not in det
    assert det["TF_NUM_INTRAOP_THREADS"] == "3" and det["KERAS_REPRO_THREADS"] == "3"
    off = launch_environment(Policy.create(mode="off"), environ={})
    assert off == {"KERAS_REPRO_MODE": "off"}


def test_bitwise_refuses_an_explicit_onednn_on():
    with pytest.raises(ReproducibilityError, match="TF_ENABLE_ONEDNN_OPTS"):
        launch_environment(Policy.create(seed=1, mode="bitwise"), environ={"TF_ENABLE_ONEDNN_OPTS": "1"})


def test_run_command_passes_environment_and_exit_code(tmp_path, capfd):
    code = ("import json, os, sys; print(json.dumps({k: os.environ.get(k) for k in "
            "['PYTHONHASHSEED', 'KERAS_REPRO_SEED', 'KERAS_REPRO_MODE']})); sys.exit(3)")
    rc = run_command([sys.executable, "-c", code], Policy.create(seed=11, mode="bitwise"))
    out = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert rc == 3
    assert out == {"PYTHONHASHSEED": "11", "KERAS_REPRO_SEED": "11", "KERAS_REPRO_MODE": "bitwise"}


def test_child_configure_picks_up_the_launched_policy(capfd):
    code = "import json, keras_repro; print(json.dumps(keras_repro.configure(mode=None)))"
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    rc = run_command([sys.executable, "-c", code], Policy.create(seed=4, mode="seeded"), environ=env)
    applied = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert rc == 0
    assert (applied["seed"], applied["mode"], applied["seed_source"]) == (4, "seeded", "env")


def test_missing_command_is_a_clear_error():
    with pytest.raises(ReproducibilityError, match="Command not found"):
        run_command(["/nonexistent/program"], Policy.create(seed=1))
    with pytest.raises(ReproducibilityError, match="No command"):
        run_command([], Policy.create(seed=1))
