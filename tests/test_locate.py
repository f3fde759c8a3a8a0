"""`keras-repro check --locate` on real scripts: the data, the layer or the metric is named, in fresh processes.

One check runs four unseeded scenarios (one record each) and locates all four in one pair of instrumented
reruns; the seeded variants of the same four scenarios are the negative control ("reproducible").
"""

from __future__ import annotations

import json
import sys

import pytest

from helpers import REPO, run_child

from keras_repro.locate import ENV_LOCATE, compare_captures

pytestmark = pytest.mark.slow
CHILD = str(REPO / "tests" / "programs" / "locate_child.py")
SCENARIOS = ("pydataset", "clocklayer", "generator", "metric")


def _section(out: str, record: int) -> str:
    return "\n".join(line for line in out.splitlines() if line.startswith(f"locate: record {record} of 4:"))


def test_check_locates_data_layer_and_metric(tmp_path):
    proc = run_child([sys.executable, "-m", "keras_repro", "check", "--", sys.executable, CHILD, str(tmp_path), *SCENARIOS],
                     expect=1, timeout=900, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    out = proc.stdout
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


def test_seeded_variants_are_reproducible(tmp_path):
    seeded = [f"{s}-seeded" for s in SCENARIOS]
    proc = run_child([sys.executable, "-m", "keras_repro", "check", "--locate", "--", sys.executable, CHILD,
                      str(tmp_path), *seeded], expect=0, timeout=900, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.stdout.splitlines()[-1] == "reproducible", proc.stdout
    assert "locate: nothing to locate: the runs are identical" in proc.stdout


def test_capture_does_not_perturb_the_step_it_measures(tmp_path):
    """Weights after an instrumented step 0 == weights before step 1 of a run whose step 0 was not instrumented
    (a clock-free seeded generator layer: a capture that advanced its state would change the real step)."""
    captures = {}
    for step in (0, 1):
        out = tmp_path / f"step{step}.json"
        env = {ENV_LOCATE: json.dumps({"targets": [{"record": 1, "step": step, "out": str(out)}]}),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        run_child([sys.executable, CHILD, str(tmp_path / "runs"), "clocklayer-seeded"], env=env, timeout=600)
        captures[step] = json.loads(out.read_text())
    assert captures[0]["weights_after"] == captures[1]["weights_before"]
    assert captures[0]["rng_states"] != captures[1]["rng_states"]  # the generator did advance in the real step
    assert compare_captures(captures[0], captures[0]).item == "none"
    records = list((tmp_path / "runs").glob("*/run.json"))
    assert records and all(json.loads(r.read_text())["status"] == "interrupted" for r in records)
