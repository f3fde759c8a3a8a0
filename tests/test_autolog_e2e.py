"""Zero-change adoption, proven in fresh processes: `keras-repro run` and `check` on scripts that never
import keras_repro, an absl.app script, a custom training loop, and autolog's in-process scenarios.

Nine TensorFlow children in all, each running as much as one process can prove.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import REPO, describe_child, run_child

pytestmark = pytest.mark.slow

PYTHON = sys.executable
PROGRAMS = REPO / "tests" / "programs"
PLAIN = str(PROGRAMS / "plain_script.py")
CLI = [PYTHON, "-m", "keras_repro"]


def _lines(proc, tag):
    return [line.split(None, 1)[1] for line in proc.stdout.splitlines() if line.startswith(tag + " ")]


def _records(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*/run.json"))]


def test_run_makes_an_unmodified_script_bitwise_reproducible_as_a_file_and_as_a_module(tmp_path):
    # Run 1: `python plain_script.py`; run 2: `python -m plain_script`. Same code, same policy: the
    # script's own printed weight hash and loss must be the same bits, and each run writes a record.
    a = run_child([*CLI, "run", "--seed", "3", "--mode", "bitwise", "--", PYTHON, PLAIN],
                  cwd=tmp_path, env={"KERAS_REPRO_DIR": str(tmp_path / "a")}, timeout=300)
    b = run_child([*CLI, "run", "--seed", "3", "--mode", "bitwise", "--", PYTHON, "-m", "plain_script"],
                  cwd=PROGRAMS, env={"KERAS_REPRO_DIR": str(tmp_path / "b")}, timeout=300)
    assert _lines(a, "WEIGHTS") and _lines(a, "WEIGHTS") == _lines(b, "WEIGHTS"), describe_child(b, describe_child(a))
    assert _lines(a, "LOSS") == _lines(b, "LOSS")
    assert _lines(a, "HISTORY") == ["History ['loss', 'val_loss']"]
    assert "Random ops require a seed" not in a.stderr + b.stderr
    for directory in (tmp_path / "a", tmp_path / "b"):
        (record,) = _records(directory)
        assert record["status"] == "completed" and record["applied"]["mode"] == "bitwise"
        assert record["applied"]["seed"] == 3 and record["applied"]["op_determinism"] is True
        fit = record["fit"]
        assert (fit["batch_size"], fit["epochs"], fit["verbose"], fit["validation_split"]) == (16, 2, 0, 0.25)
        assert record["model"]["random_layers"] == ["Dropout", "RandomFlip", "RandomTranslation"]
        assert record["model"]["final_weights_sha256"] == _lines(a, "WEIGHTS")[0]


def test_check_without_options_records_only_and_names_the_sources_and_the_fix(tmp_path):
    out = tmp_path / "printed.txt"
    proc = run_child([*CLI, "check", "--", PYTHON, PLAIN], cwd=tmp_path, env={"PLAIN_OUT": str(out)},
                     expect=1, timeout=300)
    printed = out.read_text().splitlines()
    assert len(printed) == 2 and printed[0] != printed[1], printed  # negative control: unseeded runs differ
    text = proc.stdout
    assert text.splitlines()[-1] == "not reproducible", text
    assert "likely source: no seed: the runs seeded nothing (mode 'off')" in text, text
    assert "initial weights differ" in text and "another sample order: fit(shuffle=True)" in text, text
    assert "Dropout, RandomFlip, RandomTranslation" in text, text
    assert f"fix: keras-repro run --seed 42 --mode deterministic -- {PYTHON} {PLAIN}" in text, text
    for record in _records(tmp_path / "runs"):
        assert record["applied"]["mode"] == "off" and record["applied"]["seeded"] == []


def test_check_with_a_policy_proves_the_same_unmodified_script_reproducible(tmp_path):
    # The subclass variant: its overriding fit runs once per call and its train_step is used.
    out = tmp_path / "printed.txt"
    proc = run_child([*CLI, "check", "--seed", "3", "--mode", "bitwise", "--", PYTHON, PLAIN, "--subclass"],
                     cwd=tmp_path, env={"PLAIN_OUT": str(out)}, expect=0, timeout=300)
    assert proc.stdout.splitlines()[-1] == "reproducible", proc.stdout
    printed = out.read_text().splitlines()
    assert len(printed) == 2 and printed[0] == printed[1] and printed[0].endswith(" 1"), printed


def test_an_absl_script_and_the_python_processes_it_starts_get_autolog(tmp_path):
    proc = run_child([*CLI, "run", "--seed", "3", "--mode", "bitwise", "--", PYTHON, str(PROGRAMS / "absl_plain.py"),
                      "--epochs=2"], cwd=tmp_path, timeout=300)
    assert _lines(proc, "GRANDCHILD") == ["False True 3 False"], proc.stdout  # inherited; lazy; no TF import
    (record,) = _records(tmp_path / "runs")
    assert record["status"] == "completed" and record["fit"]["epochs"] == 2
    assert record["model"]["final_weights_sha256"] == _lines(proc, "WEIGHTS")[0]


def test_a_custom_loop_gets_the_policy_from_an_in_process_autolog_and_a_no_fit_record(tmp_path):
    records_file = tmp_path / "records.txt"
    records_file.write_text("")
    proc = run_child([PYTHON, str(PROGRAMS / "custom_loop.py")], cwd=tmp_path,
                     env={"KERAS_REPRO_RECORDS_FILE": str(records_file)}, timeout=300)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["applied_at_call"] is None  # before `import tensorflow`: applied when TF was imported
    assert found["policy"] == {"seed": 3, "mode": "bitwise", "threads": None} and found["op_determinism"] is True
    assert found["fit_patched"] is True
    (path,) = records_file.read_text().split()
    record = json.loads(Path(path).read_text())
    assert record["no_fit"].startswith("no keras Model.fit ran") and record["status"] == "completed"
    assert record["applied"]["mode"] == "bitwise" and record["fit"] is None


def test_autolog_in_process_scenarios(tmp_path):
    records_file = tmp_path / "records.txt"
    records_file.write_text("")
    proc = run_child([PYTHON, str(PROGRAMS / "autolog_child.py")], cwd=tmp_path,
                     env={"KERAS_REPRO_RECORDS_FILE": str(records_file)}, timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "thread count at 1" in out["too_late"] and "Fix:" in out["too_late"]
    assert out["active_after_refusal"] is False
    assert out["applied_now"] == "seeded" and out["same_again"] is True
    assert "already active" in out["conflict"] and "differs in seed" in out["conflict"]
    assert out["tf_keras_is_keras"] is True
    from test_autolog import KERAS_FIT_PARAMETERS

    assert tuple(out["keras_signature"]) == KERAS_FIT_PARAMETERS  # the stand-in of test_autolog.py is faithful
    assert out["plain_fit_records"] == 1 and out["history"] == ["History", True, True, 2]
    assert out["recorded_fit"] == {"batch_size": 8, "epochs": 2, "verbose": 0, "shuffle": True}
    assert out["keras_repro_fit_records"] == 1  # the script's own keras_repro.fit: not recorded twice
    assert out["subclass_records"] == 1 and out["subclass_calls"] == [1, True]
    assert out["own_callback_records"] == 1
    assert out["type_error_patched"] == out["type_error_plain"] and "epoch" in out["type_error_plain"]
    assert out["tf_keras"].startswith("Expected a Keras 3 model") and "\n" not in out["tf_keras"]
    assert out["restored"] is True and out["disabled_records"] == 0
