"""`keras-repro check --locate` on real scripts: the data, the layer or the metric is named, in fresh processes.

One check runs four unseeded scenarios and, in the same processes, their seeded variants (one record
each): the four unseeded ones are located in one pair of instrumented reruns; the seeded ones are the
negative control (identical; nothing to locate).
"""

from __future__ import annotations

import json
import sys

import pytest

from helpers import REPO, ChildSpec, run_child, run_children_concurrently

from keras_repro.locate import ENV_LOCATE, compare_captures

pytestmark = pytest.mark.slow
CHILD = str(REPO / "tests" / "programs" / "locate_child.py")
SCENARIOS = ("pydataset", "clocklayer", "generator", "metric")
SEEDED = tuple(f"{s}-seeded" for s in SCENARIOS)


def _section(out: str, record: int) -> str:
    return "\n".join(line for line in out.splitlines() if line.startswith(f"locate: record {record} of 8:"))


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """`keras-repro check` over the four unseeded scenarios, then their seeded variants, in one script."""
    tmp = tmp_path_factory.mktemp("locate")
    return run_child([sys.executable, "-m", "keras_repro", "check", "--", sys.executable, CHILD, str(tmp),
                      *SCENARIOS, *SEEDED], expect=1, timeout=900, env={"TF_CPP_MIN_LOG_LEVEL": "2"})


def test_check_locates_data_layer_and_metric(checked):
    out = checked.stdout
    pydataset, layer, generator, metric = (_section(out, r) for r in (1, 2, 3, 4))
    # A PyDataset with np.random.default_rng() noise: the data is named, no layer is blamed.
    assert "the inputs of step 0 differ (x; y identical): the data pipeline is the source" in pydataset, out
    assert "data source: Batches (keras.utils.PyDataset)" in pydataset, out
    assert "np.random.Generator (attribute 'rng')" in pydataset, out
    assert "output of layer" not in pydataset, out
    # A clock-seeded tf.random.Generator in a custom layer of a functional model: that layer, the ones before identical.
    assert "identical: the outputs of the 1 layer before it: hidden (Dense)" in layer, out
    assert "first difference: the output of layer 'noisy' (ClockNoise" in layer, out
    assert "RngReadAndSkip" in layer and "StatelessRandomNormalV2" in layer, out
    assert "tf.random.Generator.from_seed(seed)" in layer, out
    # A generator function with unseeded noise: the function is named.
    assert "data source: generator function noisy_batches()" in generator, out
    assert "output of layer" not in generator, out
    # A Dropout-free model whose only difference is a metric.
    assert "identical: the weights after" in metric, out
    assert "first difference: metric 'noisy_mean' (NoisyMean) while the weights are identical" in metric, out
    assert "PyFunc" in metric, out
    # diff's rule over the per-step input digests, in the check's own report.
    assert out.count("the data pipeline is the source") >= 4, out
    assert "inputs identical at every step up to step 0 (epoch 0, step 0) (x, y), the model computed differently" in out


def test_seeded_variants_are_reproducible(checked):
    for record in range(5, 9):  # records 5-8: the seeded variants of the four scenarios, in the same processes
        assert f"run 1 vs run 2, record {record} of 8: identical" in checked.stdout, checked.stdout
        assert not _section(checked.stdout, record), checked.stdout  # nothing located where nothing differs


def test_capture_does_not_perturb_the_step_it_measures(tmp_path):
    """Weights after an instrumented step 0 == weights before step 1 of a run whose step 0 was not instrumented
    (a clock-free seeded generator layer: a capture that advanced its state would change the real step)."""
    specs = []
    for step in (0, 1):  # two processes at once
        target = {"record": 1, "step": step, "out": str(tmp_path / f"step{step}.json")}
        env = {ENV_LOCATE: json.dumps({"targets": [target]}), "TF_CPP_MIN_LOG_LEVEL": "2"}
        specs.append(ChildSpec([sys.executable, CHILD, str(tmp_path / "runs"), "clocklayer-seeded"], env=env,
                               timeout=600))
    run_children_concurrently(specs)
    captures = {step: json.loads((tmp_path / f"step{step}.json").read_text()) for step in (0, 1)}
    assert captures[0]["weights_after"] == captures[1]["weights_before"]
    assert captures[0]["rng_states"] != captures[1]["rng_states"]  # the generator did advance in the real step
    assert compare_captures(captures[0], captures[0]).item == "none"
    records = list((tmp_path / "runs").glob("*/run.json"))
    assert records and all(json.loads(r.read_text())["status"] == "interrupted" for r in records)
