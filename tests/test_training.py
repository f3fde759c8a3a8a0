"""keras_repro.fit: the record it writes, field by field, and the errors it gives on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REPO

from keras_repro import InvalidPolicyError, load_run
from keras_repro.training import fit

CHILD = REPO / "tests" / "programs" / "train_child.py"


@pytest.fixture(scope="module")
def trained(training_runs) -> tuple[dict, object]:
    # Scenario "record" of child A1 (tests/training_runs.py): configure(seed=9, mode="bitwise") in a process
    # started with PYTHONHASHSEED=0, then fit(seed=21, mode="bitwise", validation_split=0.25).
    out = training_runs.result("A1", "record")
    return out, load_run(out["path"])


@pytest.mark.slow
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


@pytest.mark.slow
def test_metrics_are_stored_exactly(trained):
    out, rec = trained
    epochs = rec["metrics"]["epochs"]
    assert [float.hex(e["loss"]) for e in epochs] == out["history_loss"], "epoch losses must round-trip bit for bit"
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epochs[0])
    assert [float.hex(s) for s in rec["metrics"]["steps"]] == out["steps"]
    assert rec["metrics"]["steps_per_epoch"] == [9, 9]  # 288 training samples / 32
    assert len(rec["data"]["order"]) == 2 and sorted(set(rec["data"]["order"][0]["head"])) == sorted(rec["data"]["order"][0]["head"])


@pytest.mark.slow
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
def test_fit_errors_on_a_bad_builder_a_conflicting_policy_and_a_failing_fit(training_runs):
    # Scenario "errors" of child A1, a process configured with mode "bitwise": fit(mode="seeded") conflicts.
    errors = training_runs.result("A1", "errors")["errors"]
    assert "returned str, not a keras.Model" in errors["builder"] and "Fix:" in errors["builder"]
    assert "conflicts with the policy" in errors["conflict"]
    assert "failed" in errors
    records = [load_run(p) for p in training_runs.run_dir("A1", "errors").iterdir()]
    assert [r.status for r in records] == ["failed"], "the failing fit must leave a record saying failed"
    assert records[0]["error"]
