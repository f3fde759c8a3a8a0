"""keras_repro.fit: the record it writes, field by field, and the errors it gives on bad input."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO, run_child

from keras_repro import InvalidPolicyError, load_run
from keras_repro.training import fit

CHILD = REPO / "tests" / "programs" / "train_child.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[dict, object]:
    run_dir = tmp_path_factory.mktemp("runs")
    proc = run_child([sys.executable, str(CHILD), "--mode", "bitwise", "--seed", "21", "--run-dir", str(run_dir),
                      "--validation-split", "0.25"], env={"PYTHONHASHSEED": "0"})
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, load_run(out["path"])


def test_record_has_the_contract_fields(trained):
    out, rec = trained
    assert rec["schema"] == "keras_repro.run/1" and rec.status == "completed"
    assert rec["started_at"] and rec["ended_at"] and rec["error"] is None
    assert rec["policy"] == {"seed": 21, "mode": "bitwise", "threads": None}
    applied = rec["applied"]
    assert (applied["seed"], applied["mode"], applied["threads"]) == (21, "bitwise", 1)
    assert applied["op_determinism"] is True and applied["onednn"] == "off" and applied["devices"] == "cpu-only"
    env = rec["environment"]
    for key in ("python", "tensorflow", "keras", "numpy", "platform", "cpu_model", "cpu_count", "devices"):
        assert env.get(key) is not None, key
    assert env["devices"] == ["/device:CPU:0"]
    assert env["env"]["PYTHONHASHSEED"] == "0" and env["env"]["TF_ENABLE_ONEDNN_OPTS"] == "0"
    code = rec["code"]
    assert code["script"] == str(CHILD) and len(code["script_sha256"]) == 64 and "--seed" in code["argv"]
    assert rec["fit"]["epochs"] == 2 and rec["fit"]["batch_size"] == 32 and rec["fit"]["validation_split"] == 0.25
    hp = rec["hyperparameters"]
    assert hp["optimizer"] == "Adam" and hp["learning_rate"] == 0.01
    assert hp["loss"] == "sparse_categorical_crossentropy" and hp["optimizer_config"]["beta_1"] == 0.9
    model = rec["model"]
    assert model["param_count"] == 12 * 16 + 16 + 16 * 2 + 2
    assert model["initial_weights_sha256"] == out["initial"] and model["final_weights_sha256"] == out["final"]
    assert len(model["architecture_sha256"]) == 64
    x = rec["data"]["x"]
    assert (x["kind"], x["shape"], x["dtype"], x["samples"]) == ("ndarray", [384, 12], "float32", 384)
    assert len(x["sha256"]) == 64 and len(x["rows_sha256"]) == 64
    assert rec["data"]["y"]["dtype"] == "int32"


def test_metrics_are_stored_exactly(trained):
    out, rec = trained
    epochs = rec["metrics"]["epochs"]
    assert [float.hex(e["loss"]) for e in epochs] == out["history_loss"], "epoch losses must round-trip bit for bit"
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epochs[0])
    assert [float.hex(s) for s in rec["metrics"]["steps"]] == out["steps"]
    assert rec["metrics"]["steps_per_epoch"] == [9, 9]  # 288 training samples / 32
    assert len(rec["data"]["order"]) == 2 and sorted(set(rec["data"]["order"][0]["head"])) == sorted(rec["data"]["order"][0]["head"])


def test_the_record_is_rewritten_atomically_without_leftovers(trained):
    _, rec = trained
    assert sorted(p.name for p in Path(rec.path).parent.iterdir()) == ["run.json"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"shuffle": "yes"}, "shuffle"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"seed": -3}, "seed"),
        ({"mode": "exact"}, "mode"),
        ({"threads": "2"}, "threads"),
    ],
)
def test_bad_fit_arguments_are_refused_before_anything_runs(kwargs, fragment):
    with pytest.raises(InvalidPolicyError, match=fragment):
        fit(object(), None, None, **kwargs)


@pytest.mark.slow
def test_fit_errors_on_a_bad_builder_a_conflicting_policy_and_a_failing_fit(tmp_path):
    code = textwrap.dedent(f"""
        import json, numpy as np, keras_repro
        keras_repro.configure(seed=1, mode="bitwise")
        import keras
        errors = {{}}
        try:
            keras_repro.fit(lambda: "not a model", np.zeros((4, 1)), np.zeros(4), run_dir={str(tmp_path)!r})
        except keras_repro.ReproducibilityError as e:
            errors["builder"] = str(e)
        def build():
            m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
            m.compile("sgd", "mse")
            return m
        try:
            keras_repro.fit(build, np.zeros((4, 1)), np.zeros(4), mode="seeded", run_dir={str(tmp_path)!r}, verbose=0)
        except keras_repro.PolicyConflictError as e:
            errors["conflict"] = str(e)
        try:
            keras_repro.fit(build, np.zeros((4, 1)), np.zeros((5, 3)), run_dir={str(tmp_path)!r}, verbose=0)
        except Exception as e:
            errors["failed"] = type(e).__name__
        print(json.dumps(errors))
    """)
    proc = run_child([sys.executable, "-c", code])
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "returned str, not a keras.Model" in errors["builder"] and "Fix:" in errors["builder"]
    assert "conflicts with the policy" in errors["conflict"]
    assert "failed" in errors
    records = [load_run(p) for p in tmp_path.iterdir()]
    assert [r.status for r in records] == ["failed"], "the failing fit must leave a record saying failed"
    assert records[0]["error"]
