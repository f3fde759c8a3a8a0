"""The diff rule over per-step input digests (data.steps): data pipeline or model. In-process, TF-free."""

from __future__ import annotations

import json

import pytest

from helpers import make_record, record_dict, write_record

from keras_repro.comparison import compare
from keras_repro.explain_inputs import first_input_difference, input_step_causes, where
from keras_repro.record import atomic_write_json


def _steps(n=12, **changed):
    steps = [{"x": f"{k:016x}", "y": f"{k + 100:016x}"} for k in range(n)]
    for key, (k, value) in changed.items():
        steps[k][key] = value
    return steps


def test_first_input_difference_names_the_component_and_the_identical_ones():
    a = {"data": {"steps": _steps()}}
    b = {"data": {"steps": _steps(x=(5, "ffff"))}}
    assert first_input_difference(a, b) == (5, ["x"], ["y"])
    assert first_input_difference(a, a) is None
    assert first_input_difference(a, {"data": {"steps": None}}) is None  # no digests: no claim


def test_diff_says_the_data_pipeline_is_the_source(tmp_path):
    a = make_record(tmp_path, "a", data__steps=_steps())
    b_data = record_dict("b", data__steps=_steps(x=(5, "ffff")))
    b_data["metrics"]["steps"][6] = 0.9
    b = write_record(tmp_path, b_data)
    d = compare(a, b)
    assert d.causes[0].message == ("the inputs of step 5 (epoch 1, step 1) differ (x; y identical): "
                                   "the data pipeline is the source"), d.lines()
    assert d.causes[0].category == "data"
    assert not any(c.category == "nondeterminism" for c in d.causes)


def test_diff_says_inputs_identical_the_model_computed_differently(tmp_path):
    a = make_record(tmp_path, "a", data__steps=_steps())
    b_data = record_dict("b", data__steps=_steps())
    b_data["metrics"]["steps"][3] = 1.99
    b = write_record(tmp_path, b_data)
    (cause,) = compare(a, b).causes
    assert cause.category == "nondeterminism"
    assert cause.message.startswith("inputs identical at every step up to step 3 (epoch 0, step 3) (x, y), "
                                    "the model computed differently"), cause.message
    assert "leftover nondeterminism" in cause.message


def test_records_without_digests_keep_the_old_message(tmp_path):
    a = make_record(tmp_path, "a")
    b_data = record_dict("b")
    b_data["metrics"]["steps"][3] = 1.99
    (cause,) = compare(a, write_record(tmp_path, b_data)).causes
    assert cause.message.startswith("leftover nondeterminism")


def test_where_and_causes_without_steps_per_epoch():
    assert where({"metrics": {}}, 7) == "step 7"
    a = {"data": {"steps": [{"x": "1"}]}}
    assert input_step_causes(a, {"data": {"steps": [{"x": "2"}]}})[0].message == (
        "the inputs of step 0 differ (x): the data pipeline is the source")


def test_record_with_digests_of_10k_steps_stays_under_2_mb(tmp_path):
    """data.steps in the format StepInputs.read() writes, beside the 10k per-step losses it comes with."""
    rec = record_dict("big")
    rec["data"]["steps"] = [{"x": f"{(k * 2654435761) % 2**64:016x}", "y": f"{(k * 40503) % 2**64:016x}"}
                            for k in range(10_000)]
    rec["metrics"]["steps"] = [1.0 / (k + 3) for k in range(10_000)]
    rec["metrics"]["steps_per_epoch"] = [1000] * 10
    path = tmp_path / "run.json"
    atomic_write_json(path, rec)
    size = path.stat().st_size
    assert size < 2_000_000, size
    assert json.loads(path.read_text())["data"]["steps"][9999]["y"]


def test_diff_names_a_metric_that_differs_while_training_is_identical(tmp_path):
    a = make_record(tmp_path, "a", data__steps=_steps())
    b_data = record_dict("b", data__steps=_steps())
    b_data["metrics"]["epochs"][1]["accuracy"] = 0.7
    (cause,) = compare(a, write_record(tmp_path, b_data)).causes
    assert cause.message.startswith("inputs identical at every step (x, y), the training computed the same"), cause.message
    assert "metric 'accuracy' differs while every step's loss and the final weights are identical" in cause.message


def _digest_record(seed, x_digest):
    return {"applied": {"seed": seed}, "data": {"steps": [{"x": x_digest, "y": "y0"}]}, "metrics": {}}


@pytest.mark.parametrize("seeds, explained, fragment", [
    ((42, 42), False, "the data pipeline is the source"),
    ((42, 43), False, "follows from the seed (42 -> 43)"),
    ((42, None), False, "follows from the missing seed"),
    ((42, 42), True, "follows from the data difference above"),
])
def test_differing_inputs_are_blamed_on_the_pipeline_only_when_nothing_recorded_explains_them(seeds, explained,
                                                                                              fragment):
    from keras_repro.causes import _input_step_causes

    ra, rb = _digest_record(seeds[0], "a"), _digest_record(seeds[1], "b")
    [cause] = _input_step_causes(ra, rb, already_explained=explained)
    assert cause.message.startswith("the inputs of step 0 differ (x; y identical): ") and fragment in cause.message
