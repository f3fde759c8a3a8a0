"""The keras-repro command line: exit codes, one-line errors, show/diff/run/check output."""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import time

import pytest

from helpers import PYTHON, make_record, record_dict, run_child, write_record

from keras_repro.cli import main
from keras_repro.policy import ENV_RECORDS_FILE


def run_main(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


# --- diff -----------------------------------------------------------------------------------------


def test_diff_identical_exits_0(tmp_path, capsys):
    a, b = make_record(tmp_path, "a"), make_record(tmp_path, "b", pid=5, host="elsewhere")
    code, out, err = run_main(capsys, "diff", a, b.parent)
    assert code == 0, out + err
    assert out.splitlines()[-1] == "verdict: identical"
    assert "metrics: identical (12 steps, 3 epochs, final weights identical)" in out


def test_diff_different_lists_causes_then_metrics(tmp_path, capsys):
    b = record_dict("b", hyperparameters__learning_rate=0.003, data__x__sha256="cd" * 32,
                    data__x__rows_sha256="cd" * 32)
    b["metrics"]["steps"][5] = 1.3
    a_path, b_path = make_record(tmp_path, "a"), write_record(tmp_path, b)
    code, out, err = run_main(capsys, "diff", a_path, b_path)
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[2].startswith("cause: data x: content changed")
    assert lines[3] == "cause: hyperparameter learning_rate: 0.001 -> 0.003"
    assert lines[4] == ("metrics: first divergence: loss at epoch 1, step 1 (global step 5): "
                        "1.25 vs 1.3 (relative gap 3.8e-02)")
    assert lines[-1] == "verdict: different (2 causes)"


def test_diff_recorded_difference_with_identical_results_exits_0(tmp_path, capsys):
    a, b = make_record(tmp_path, "a"), make_record(tmp_path, "b", environment__numpy="2.4.7")
    code, out, _ = run_main(capsys, "diff", a, b)
    assert code == 0
    assert "recorded difference (the results are identical): version numpy: 2.4.6 -> 2.4.7" in out


def test_diff_json(tmp_path, capsys):
    a, b = make_record(tmp_path, "a"), make_record(tmp_path, "b", fit__epochs=4, model__final_weights_sha256="0" * 64)
    code, out, _ = run_main(capsys, "diff", "--json", a, b)
    data = json.loads(out)
    assert code == 1 and data["identical"] is False
    assert data["causes"][0]["message"] == "fit argument epochs: 3 -> 4"


BAD_RECORDS = {
    "empty": ("", "the file is empty"),
    "not JSON": ("hello there", "not valid JSON"),
    "truncated": ('{"schema": "keras_repro.run/1", "run_id": "a", "metrics": {"steps": [1.0, 2.', "truncated JSON"),
    "other schema": ('{"schema": "mlflow.run/1"}', "is not a keras_repro run record"),
    "no schema": ('{"run_id": "x"}', "no 'schema' field"),
    "newer version": ('{"schema": "keras_repro.run/2"}', "newer than this keras_repro reads"),
    "wrong type": ('{"schema": "keras_repro.run/1", "metrics": []}', "field 'metrics' should be a JSON object"),
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_diff_bad_record_is_one_line_exit_2(tmp_path, capsys, name):
    text, fragment = BAD_RECORDS[name]
    bad = tmp_path / "bad" / "run.json"
    bad.parent.mkdir()
    bad.write_text(text)
    code, out, err = run_main(capsys, "diff", make_record(tmp_path, "a"), bad.parent)
    assert code == 2 and out == ""
    assert err.startswith("keras-repro: error: ") and err.count("\n") == 1, err
    assert fragment in err


def test_diff_missing_path(tmp_path, capsys):
    code, _, err = run_main(capsys, "diff", tmp_path / "nope", make_record(tmp_path, "a"))
    assert code == 2
    assert err == f"keras-repro: error: {str(tmp_path / 'nope')!r}: no such file or directory. Expected a run directory or its run.json.\n"
    code, _, err = run_main(capsys, "diff", tmp_path, tmp_path)  # a directory without run.json
    assert code == 2 and "no run.json in it" in err


def test_diff_error_through_python_m_has_no_traceback(tmp_path):
    proc = run_child([PYTHON, "-m", "keras_repro", "diff", str(tmp_path / "x"), str(tmp_path / "y")], expect=2)
    assert proc.stderr.startswith("keras-repro: error: ") and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_diff_is_fast_on_10000_steps(tmp_path, capsys):
    a = record_dict("a")
    a["metrics"].update(steps=[1.0 / (i + 1) for i in range(10_000)], steps_per_epoch=[1000] * 10,
                        epochs=[{"loss": 1.0 / (e + 1), "accuracy": e / 10} for e in range(10)])
    b = json.loads(json.dumps(a, allow_nan=True))
    b["run_id"] = "b"
    b["metrics"]["steps"][9_999] = 0.5
    pa, pb = write_record(tmp_path, a), write_record(tmp_path, b)
    start = time.perf_counter()
    code, out, _ = run_main(capsys, "diff", pa, pb)
    elapsed = time.perf_counter() - start
    assert code == 1 and "epoch 9, step 999 (global step 9999)" in out
    assert elapsed < 1.0, f"diff of two 10,000-step records took {elapsed:.3f} s"


# --- show -----------------------------------------------------------------------------------------


def test_show_summary(tmp_path, capsys):
    path = make_record(tmp_path, "a", resumed_from="20261127-000000-bbbbbb")
    code, out, _ = run_main(capsys, "show", path)
    assert code == 0
    for fragment in ("run: a", "status: completed", "resumed from: 20261127-000000-bbbbbb",
                     "policy (asked): seed=42, mode=bitwise, threads=none", "applied: seed=42, mode=bitwise, threads=1",
                     "versions: python=3.11.7, tensorflow=2.21.0", "data x: ndarray, shape [256, 4], dtype float32",
                     "hyperparameters: optimizer=Adam, learning_rate=0.001", "fit: epochs=3, batch_size=64",
                     "final metrics: loss=0.4375, accuracy=0.875", "weights: initial "):
        assert fragment in out, fragment


def test_show_running_record_with_dead_pid_is_stale(tmp_path, capsys):
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that existed and is gone
    path = make_record(tmp_path, "a", status="running", ended_at=None, pid=proc.pid, host=socket.gethostname())
    code, out, _ = run_main(capsys, "show", path)
    assert code == 0 and f"status: interrupted (stale: process {proc.pid} is gone)" in out
    live = make_record(tmp_path, "b", status="running", ended_at=None, pid=os.getpid(), host=socket.gethostname())
    _, out, _ = run_main(capsys, "show", live)
    assert f"status: running (process {os.getpid()})" in out


def test_show_and_diff_partial_record(tmp_path, capsys):
    partial = tmp_path / "p" / "run.json"
    partial.parent.mkdir()
    partial.write_text('{"schema": "keras_repro.run/1", "run_id": "p", "status": "failed", "error": "OOM"}')
    code, out, _ = run_main(capsys, "show", partial)
    assert code == 0 and "status: failed: OOM" in out and "policy (asked): (not recorded)" in out
    code, out, _ = run_main(capsys, "diff", partial, make_record(tmp_path, "a"))
    assert code == 1
    assert "note: run A has no 'data' section (older or partial record): not compared" in out
    assert out.splitlines()[-1] == "verdict: different (no recorded cause; see the notes)"


def test_show_bad_record(tmp_path, capsys):
    (tmp_path / "run.json").write_text("[1, 2]")
    code, out, err = run_main(capsys, "show", tmp_path)
    assert code == 2 and out == "" and "expected a JSON object, found list" in err


# --- run ------------------------------------------------------------------------------------------


def test_run_passes_policy_and_exit_code(tmp_path, capsys):
    script = "import os, sys; print(os.environ['PYTHONHASHSEED'], os.environ['KERAS_REPRO_MODE']); sys.exit(3)"
    proc = run_child([PYTHON, "-m", "keras_repro", "run", "--seed", "7", "--mode", "bitwise", "--",
                      PYTHON, "-c", script], expect=3)
    assert proc.stdout.strip() == "7 bitwise"


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "abc"], "Expected `seed` to be an integer"),
    (["--seed", "-1"], "Expected `seed` to be in [0, 4294967295]"),
    (["--mode", "Bitwise"], "Did you mean 'bitwise'?"),
    (["--threads", "0"], "Expected `threads` to be a positive integer"),
])
def test_run_refuses_bad_policy(capsys, args, fragment):
    code, out, err = run_main(capsys, "run", *args, "--", sys.executable, "-c", "pass")
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_run_without_command(capsys):
    code, _, err = run_main(capsys, "run", "--seed", "1")
    assert code == 2 and "No command given" in err


# --- check ----------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, os, sys
    record = json.loads({record!r})
    kind = {kind!r}
    if kind == "fail":
        sys.stderr.write("loading data\\nValueError: shapes do not match\\n")
        sys.exit(4)
    out = os.path.abspath(os.path.join({out!r}, os.urandom(3).hex()))
    os.makedirs(out)
    record["run_id"] = os.path.basename(out)
    record["pid"] = os.getpid()
    if kind == "data":
        record["data"]["x"]["sha256"] = record["data"]["x"]["rows_sha256"] = os.urandom(32).hex()
        record["metrics"]["steps"][0] += int.from_bytes(os.urandom(2), "big") / 1e6 + 1e-6
    count = {{"norecord": 0, "two": 2}}.get(kind, 1)
    if kind == "growing":  # one record in the first run, two in the next
        marker = os.path.join({out!r}, "..", "ran-once")
        count = 2 if os.path.exists(marker) else 1
        open(marker, "w").close()
    for i in range(count):
        path = os.path.join(out, str(i), "run.json")
        os.makedirs(os.path.dirname(path))
        record["hyperparameters"]["user"] = {{"phase": i}}
        with open(path, "w") as f:
            json.dump(record, f)
        with open(os.environ[{env!r}], "a") as f:
            f.write(path + "\\n")
""")


def child_command(tmp_path, kind):
    script = tmp_path / f"train_{kind}.py"
    script.write_text(CHILD.format(record=json.dumps(record_dict()), kind=kind, out=str(tmp_path / "runs"),
                                   env=ENV_RECORDS_FILE))
    return [sys.executable, str(script)]


def test_check_reproducible(tmp_path, capsys):
    code, out, err = run_main(capsys, "check", "--", *child_command(tmp_path, "same"))
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("run 1: exit 0, 1 record") and lines[1].startswith("run 2: exit 0, 1 record")
    assert lines[2] == "run 1 vs run 2: identical (12 steps, 3 epochs)"
    assert lines[-1] == "reproducible"
    assert err.startswith("keras-repro: run 1 of 2: ") and "keras-repro: run 2 of 2: " in err
    assert len(list((tmp_path / "runs").iterdir())) == 2  # the script chose where its records went


def test_check_data_differs_each_run(tmp_path, capsys):
    code, out, err = run_main(capsys, "check", "--runs", "3", "--", *child_command(tmp_path, "data"))
    assert code == 1, out + err
    assert "run 1 vs run 3: differ" in out
    assert "  cause: data x: content changed" in out
    assert "likely source: the training data differs between the runs: unseeded randomness in data loading" in out
    assert "np.random.default_rng() without a seed" in out
    assert out.splitlines()[-1] == "not reproducible"


def test_check_child_without_record(tmp_path, capsys):
    code, out, err = run_main(capsys, "check", "--", *child_command(tmp_path, "norecord"))
    assert code == 2, out + err
    assert "run 1: wrote no run record" in out and "does the command call keras_repro.fit?" in out
    assert out.splitlines()[-1] == "cannot check: see the problems above"


def test_check_failing_child(tmp_path, capsys):
    code, out, err = run_main(capsys, "check", "--", *child_command(tmp_path, "fail"))
    assert code == 2, out + err
    assert "run 1: the command failed with exit code 4; its stderr ends with:" in out
    assert "  | ValueError: shapes do not match" in out


def test_check_usage_errors(capsys):
    code, _, err = run_main(capsys, "check", "--runs", "1", "--", sys.executable, "-c", "pass")
    assert code == 2 and "Expected --runs to be an integer >= 2" in err
    code, _, err = run_main(capsys, "check")
    assert code == 2 and "No command given" in err
    code, _, err = run_main(capsys, "check", "--", "/no/such/program")
    assert code == 2 and "Command not found: '/no/such/program'" in err


def test_check_pairs_several_records_in_order(tmp_path, capsys):
    code, out, err = run_main(capsys, "check", "--", *child_command(tmp_path, "two"))
    assert code == 0, out + err
    assert "run 1: exit 0, 2 records" in out
    assert "run 1 vs run 2, record 1 of 2: identical" in out and "run 1 vs run 2, record 2 of 2: identical" in out


def test_check_different_record_counts(tmp_path, capsys):
    code, out, err = run_main(capsys, "check", "--", *child_command(tmp_path, "growing"))
    assert code == 2, out + err
    assert "the runs wrote different numbers of records (run 1: 1, run 2: 2), so they cannot be paired" in out


@pytest.mark.parametrize("overrides, fragment", [
    ({"model__initial_weights_sha256": "cd" * 32}, "model was built before seeding, or outside keras_repro.fit's builder"),
    ({"data__x": {"kind": "dataset", "element_spec": "s", "cardinality": 2, "first_elements": ["b", "a"]}},
     "built (and shuffled) before keras_repro.configure()"),
    ({"policy__seed": None, "applied__seed": 8}, "launch through `keras-repro run --seed 42 -- CMD`"),
    ({"metrics__steps": [2.5] * 11 + [0.1]}, "nondeterministic ops or threads"),
    ({"data__order": [{"epoch": 0, "sha256": "0" * 64, "head": [1]}]}, "fed the samples in another order with the same seed (bitwise)"),
])
def test_check_names_likely_source_and_fix(overrides, fragment):
    from keras_repro.checking import likely_sources
    from keras_repro.comparison import compare

    a = record_dict("a", data__x={"kind": "dataset", "element_spec": "s", "cardinality": 2, "first_elements": ["a", "b"]},
                    policy__seed=None if "policy__seed" in overrides else 42)
    b = record_dict("b", **{"data__x": a["data"]["x"], "policy__seed": a["policy"]["seed"], **overrides})
    hints = likely_sources(compare(a, b))
    assert len(hints) == 1 and fragment in hints[0], hints
