"""compare() on hand-made records: each cause alone, several at once, and the metric verdicts."""

from __future__ import annotations

import dataclasses
import math

import pytest

from helpers import DELETE, make_record, record_dict

from keras_repro import RecordError, compare
from keras_repro.comparison import CATEGORIES, leftover_message, relative_gap
from keras_repro.record import RunRecord

NEW = "cd" * 32


def diverged(steps_from: int = 5, **overrides):
    """Run B: the base record with `overrides`, its loss differing from global step `steps_from` on."""
    b = record_dict("b", **overrides)
    steps = b["metrics"]["steps"]
    for i in range(steps_from, len(steps)):
        steps[i] = steps[i] + 0.001
    b["metrics"]["epochs"][-1]["loss"] = 0.5
    b["model"]["final_weights_sha256"] = NEW
    return b


def only_cause(result):
    assert len(result.causes) == 1, [c.message for c in result.causes]
    return result.causes[0]


def test_identical_records():
    d = compare(record_dict("a"), record_dict("b", pid=99, host="other", started_at="x", code__argv=["x.py"],
                                               code__script="/elsewhere/train.py"))
    assert d.identical is True
    assert d.causes == () and d.first_divergence is None
    assert d.lines()[-1].startswith("metrics: identical (12 steps, 3 epochs")


def test_result_is_frozen():
    d = compare(record_dict("a"), record_dict("b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.identical = False  # type: ignore[misc]


def test_hyperparameter_flattened_once():
    b = diverged(hyperparameters__learning_rate=0.003, hyperparameters__optimizer_config__learning_rate=0.003)
    c = only_cause(compare(record_dict("a"), b))
    assert (c.category, c.field, c.a, c.b) == ("hyperparameters", "hyperparameters.learning_rate", 0.001, 0.003)
    assert c.message == "hyperparameter learning_rate: 0.001 -> 0.003"


def test_nested_hyperparameter_uses_dots():
    c = only_cause(compare(record_dict("a"), diverged(hyperparameters__optimizer_config__beta_1=0.95)))
    assert c.message == "hyperparameter optimizer_config.beta_1: 0.9 -> 0.95"


@pytest.mark.parametrize(
    "overrides, kind, fragment",
    [
        ({"data__x__sha256": NEW, "data__x__rows_sha256": NEW}, "content", "data x: content changed"),
        ({"data__x__sha256": NEW}, "order", "data x: same samples in another order"),
        ({"data__y__samples": 200, "data__y__shape": [200]}, "samples", "data y: sample count 256 -> 200"),
        ({"data__x__dtype": "float64"}, "dtype", "data x: dtype float32 -> float64"),
        ({"data__x__shape": [256, 5]}, "shape", "data x: shape [256, 4] -> [256, 5]"),
    ],
)
def test_data_causes_say_how(overrides, kind, fragment):
    c = compare(record_dict("a"), diverged(**overrides)).causes[0]
    assert c.category == "data" and c.kind == kind
    assert fragment in c.message


def test_fit_order_and_dataset_order():
    b = diverged(data__order=[{"epoch": 0, "sha256": NEW, "head": [5, 6, 7]}])
    c = only_cause(compare(record_dict("a"), b))
    assert c.field == "data.order.0" and "epoch 0" in c.message and "[17, 3, 250] -> [5, 6, 7]" in c.message

    ds = {"kind": "dataset", "element_spec": "TensorSpec(4)", "cardinality": 4, "samples": None,
          "first_elements": ["e1", "e2", "e3"]}
    a = record_dict("a", data__x=ds)
    b = diverged(data__x=dict(ds, first_elements=["e2", "e1", "e3"]))
    c = only_cause(compare(a, b))
    assert c.field == "data.x.first_elements" and c.kind == "order"
    assert "same elements in another order (first difference at element 0)" in c.message


def test_validation_data_present_in_one_run():
    c = only_cause(compare(record_dict("a"), diverged(data__validation={"x": None, "y": None})))
    assert c.message == "data validation data: given only in run B"


def test_fit_code_model_environment_categories():
    b = diverged(fit__batch_size=32, code__script_sha256=NEW, code__git__dirty=True,
                 environment__tensorflow="2.20.0", environment__cpu_count=8,
                 environment__env__TF_ENABLE_ONEDNN_OPTS="1", environment__env__OMP_NUM_THREADS=None)
    messages = [c.message for c in compare(record_dict("a"), b).causes]
    assert messages == [
        "fit argument batch_size: 64 -> 32",
        f"code: the training script changed (script_sha256 {record_dict()['code']['script_sha256'][:12]} -> {NEW[:12]})",
        "code git dirty: false -> true",
        "version tensorflow: 2.21.0 -> 2.20.0",
        "hardware cpu_count: 2 -> 8",
        "environment variable TF_ENABLE_ONEDNN_OPTS: '0' -> '1'",
        "environment variable OMP_NUM_THREADS: '1' -> unset",
    ]


def test_several_causes_follow_category_order():
    b = diverged(environment__env__PYTHONHASHSEED="1", applied__threads=2, policy__threads=2,
                 hyperparameters__loss="mse", data__x__sha256=NEW, data__x__rows_sha256=NEW,
                 environment__keras="3.0.0", fit__epochs=5, model__param_count=99)
    categories = [c.category for c in compare(record_dict("a"), b).causes]
    assert categories == ["data", "hyperparameters", "fit", "model", "policy", "versions", "environment"]
    assert categories == sorted(categories, key=CATEGORIES.index)


def test_seed_difference_and_initial_weights():
    b = diverged(0, policy__seed=7, applied__seed=7, model__initial_weights_sha256=NEW)
    causes = compare(record_dict("a"), b).causes
    assert [c.message for c in causes][0] == "seed: 42 -> 7"
    assert causes[1].category == "initialisation" and "expected with a different seed" in causes[1].message


def test_drawn_seeds_are_named():
    a = record_dict("a", policy__seed=None, applied__seed_source="drawn")
    b = diverged(0, policy__seed=None, applied__seed=9, applied__seed_source="drawn")
    assert compare(a, b).causes[0].message == "seed: 42 -> 9 (no seed given: each run drew its own)"


def test_initial_weights_differ_with_same_seed():
    c = only_cause(compare(record_dict("a"), diverged(0, model__initial_weights_sha256=NEW)))
    assert c.category == "initialisation"
    assert "built before seeding or outside keras_repro.fit's builder" in c.message


@pytest.mark.parametrize("mode, fragment", [
    ("off", "seeds nothing"),
    ("seeded", "no op determinism"),
    ("deterministic", "does not pin oneDNN or devices"),
    ("bitwise", "unseeded random source in user code"),
])
def test_leftover_nondeterminism_by_mode(mode, fragment):
    a = record_dict("a", policy__mode=mode, applied__mode=mode)
    b = diverged(7, policy__mode=mode, applied__mode=mode)
    d = compare(a, b)
    c = only_cause(d)
    assert c.category == "nondeterminism" and c.message.startswith("leftover nondeterminism: nothing recorded differs")
    assert fragment in c.message and fragment in leftover_message(mode)
    div = d.first_divergence
    assert (div.epoch, div.step, div.global_step) == (1, 3, 7)
    assert (div.a, div.b) == (1.0, 1.001)
    assert div.relative_gap == pytest.approx(0.001 / 1.001)


def test_weights_differ_with_identical_metrics_is_not_identical():
    d = compare(record_dict("a"), record_dict("b", model__final_weights_sha256=NEW))
    assert not d.identical and d.weights_identical is False and d.first_divergence is None
    assert only_cause(d).category == "nondeterminism"
    assert "weights: final weights differ" in d.lines()


def test_nan_losses_equal_and_divergent():
    steps = record_dict()["metrics"]["steps"][:6] + [math.nan] * 6
    a = record_dict("a", metrics__steps=steps)
    assert compare(a, record_dict("b", metrics__steps=list(steps))).identical
    b_steps = list(steps)
    b_steps[5] = math.nan
    d = compare(a, record_dict("b", metrics__steps=b_steps))
    assert d.first_divergence.global_step == 5 and math.isnan(d.first_divergence.b)
    assert d.first_divergence.relative_gap == math.inf
    assert "relative gap inf" in d.first_divergence.describe()


def test_epoch_log_divergence_and_final_gaps():
    b = record_dict("b")
    b["metrics"]["epochs"][1]["accuracy"] = 0.8
    b["metrics"]["epochs"][2]["loss"] = 0.5
    d = compare(record_dict("a"), b)
    assert not d.identical
    assert (d.epoch_divergence.metric, d.epoch_divergence.epoch) == ("accuracy", 1)
    assert d.first_divergence == d.epoch_divergence  # the steps agree
    gaps = {g.name: g for g in d.final_gaps}
    assert gaps["loss"].absolute_gap == 0.0625 and not gaps["loss"].identical
    assert gaps["accuracy"].identical
    assert "final: loss 0.4375 vs 0.5 (relative gap 1.2e-01)" in d.lines()


def test_interrupted_shorter_run():
    short = record_dict("b", status="interrupted", error="KeyboardInterrupt", model__final_weights_sha256=None)
    short["metrics"].update(steps=short["metrics"]["steps"][:6], epochs=short["metrics"]["epochs"][:1],
                            steps_per_epoch=[4, 2])
    d = compare(record_dict("a"), short)
    assert not d.identical and d.first_divergence is None and d.weights_identical is None
    assert d.steps_compared == 6 and d.epochs_compared == 1
    assert "run B is interrupted (not completed): KeyboardInterrupt" in d.notes
    assert any("run B stopped earlier" in n for n in d.notes)
    assert d.causes == ()  # stopping early is not nondeterminism


def test_resumed_run_is_noted():
    d = compare(record_dict("a"), record_dict("b", resumed_from="20261127-000000-bbbbbb"))
    assert d.identical and "run B was resumed from 20261127-000000-bbbbbb" in d.notes


def test_missing_sections_are_noted_not_causes():
    b = record_dict("b", environment=DELETE, applied=DELETE, data=DELETE)
    d = compare(record_dict("a"), b)
    assert d.identical and d.causes == ()
    assert "run B has no 'environment' section (older or partial record): not compared" in d.notes
    assert any("no 'applied' section" in n for n in d.notes)


def test_minimal_records_compare():
    d = compare({"schema": "keras_repro.run/1", "run_id": "a"}, {"schema": "keras_repro.run/1", "run_id": "b"})
    assert d.identical and any("neither run recorded final weights" in n for n in d.notes)


def test_accepts_paths_records_and_dicts(tmp_path):
    path = make_record(tmp_path, "a")
    rec = RunRecord(record_dict("a"))
    assert compare(path, rec).identical and compare(path.parent, record_dict("c")).identical
    with pytest.raises(RecordError, match="no such file or directory"):
        compare(tmp_path / "missing", rec)
    with pytest.raises(RecordError, match="schema"):
        compare({"schema": "other/1"}, rec)
    with pytest.raises(RecordError, match="Expected a RunRecord, a dict or a path"):
        compare(42, rec)  # type: ignore[arg-type]


def test_repr_values_ignore_memory_addresses():
    a = record_dict("a", fit__callbacks={"__repr__": "<Foo object at 0x7f01>"})
    b = record_dict("b", fit__callbacks={"__repr__": "<Foo object at 0x7f99>"})
    assert compare(a, b).identical
    c = record_dict("c", fit__callbacks={"__repr__": "<Bar object at 0x7f99>"})
    assert not compare(a, diverged(fit__callbacks={"__repr__": "<Bar object at 0x7f99>"})).identical
    assert compare(a, c).causes[0].field == "fit.callbacks"


def test_relative_gap():
    assert relative_gap(1.0, 1.0) == 0.0
    assert relative_gap(2.0, 1.0) == 0.5
    assert relative_gap(math.nan, math.nan) == 0.0
    assert relative_gap(1.0, math.inf) == math.inf
    assert relative_gap("adam", "sgd") == math.inf


def test_to_dict_is_plain_data():
    d = compare(record_dict("a"), diverged(fit__epochs=4)).to_dict()
    assert d["identical"] is False and d["causes"][0]["field"] == "fit.epochs"
    assert d["first_divergence"]["global_step"] == 5


def test_a_mode_change_is_one_policy_cause_plus_one_line_for_what_follows():
    b = diverged(0, policy__mode="off", applied__mode="off", applied__op_determinism=False,
                 applied__devices="all", applied__onednn="default", applied__seeded=[],
                 applied__warnings=["something"], code__flags={"repro_mode": "off"})
    a = record_dict("a", code__flags={"repro_mode": "bitwise"})
    messages = [c.message for c in compare(a, b).causes]
    assert any(m.startswith("mode: bitwise -> off") for m in messages), messages
    derived = [m for m in messages if m.startswith("applied settings that follow from the mode")]
    assert len(derived) == 1 and "op_determinism" in derived[0] and "onednn" in derived[0]
    assert not any(m.startswith("applied op_determinism") for m in messages), messages
    assert not any("--repro_mode" in m for m in messages), "the flag repeats the policy cause"
    assert not any("warnings" in m and "applied warnings" in m for m in messages)


def test_same_epochs_other_steps_per_epoch_is_noted_as_such():
    b = record_dict("b", data__x__samples=300, data__x__sha256=NEW)
    b["metrics"]["steps"] = b["metrics"]["steps"] + [0.1, 0.1, 0.1]
    b["metrics"]["steps_per_epoch"] = [5, 5, 5]
    notes = compare(record_dict("a"), b).notes
    assert any("different numbers of steps per epoch" in n for n in notes), notes


def _dist(**kw):
    base = {"strategy": "MultiWorkerMirroredStrategy", "replicas": 2, "num_workers": 2, "local_replicas": 1,
            "cluster": {"worker": 2}, "worker_index": 0, "is_chief": True}
    base.update(kw)
    return base


def test_distribution_topology_is_a_cause_and_worker_identity_is_named():
    a = record_dict("a", distribution=_dist())
    assert compare(a, record_dict("b", distribution=_dist())).identical is True
    causes = compare(a, diverged(0, distribution=_dist(replicas=4, num_workers=4, cluster={"worker": 4}))).causes
    assert [c.field for c in causes] == ["distribution.replicas", "distribution.num_workers", "distribution.cluster"]
    other_worker = compare(a, record_dict("b", distribution=_dist(worker_index=1, is_chief=False))).causes
    assert [c.field for c in other_worker] == ["distribution.worker_index"]
    alone = compare(record_dict("a"), diverged(0, distribution=_dist())).causes
    assert alone[0].message.startswith("distribution: none -> MultiWorkerMirroredStrategy with 2 replicas")


def test_tf_config_is_recorded_without_addresses(monkeypatch):
    from keras_repro.environment import capture_environment

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:5001", "127.0.0.1:5002"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    recorded = capture_environment(devices=False)["env"]["TF_CONFIG"]
    assert "5001" not in recorded and '"worker": 2' in recorded and '"index": 1' in recorded
