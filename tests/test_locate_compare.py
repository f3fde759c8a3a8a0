"""compare_captures: the first differing item of a located step, in the order the step computes it. TF-free."""

from __future__ import annotations

import copy

from keras_repro.locate import compare_captures, locate_step


def _capture():
    return {
        "step": 3, "source": "Batches (keras.utils.PyDataset)",
        "source_rngs": [["rng", "np.random.Generator", "aa"]],
        "weights_before": [["m/d/kernel", "1"], ["m/d/bias", "2"]],
        "rng_states": [["m/noise", "gen", "tf.random.Generator", "s1"]],
        "inputs": {"x": "10", "y": "11"},
        "layers": [
            {"path": "m/d", "name": "d", "class": "Dense", "output": "20", "random_ops": [], "holds": []},
            {"path": "m/noise", "name": "noise", "class": "Jitter", "output": "21",
             "random_ops": ["RngReadAndSkip", "StatelessRandomNormalV2"], "holds": [["gen", "tf.random.Generator"]]},
            {"path": "m", "name": "m", "class": "Functional", "output": "21", "random_ops": None, "holds": []},
        ],
        "loss": "0x1.8p-1", "gradients": [["m/d/kernel", "30"], ["m/d/bias", "31"]],
        "weights_after": [["m/d/kernel", "40"], ["m/d/bias", "41"]],
        "metrics": {"loss": {"value": "0x1p-1", "class": "Mean"}, "acc": {"value": "0x1p-2", "class": "Acc", "random_ops": ["PyFunc"]}},
    }


def _changed(path, value):
    c = copy.deepcopy(_capture())
    target = c
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return c


def test_identical_captures_find_nothing():
    f = compare_captures(_capture(), _capture())
    assert f.item == "none" and "agree on every item of step 3" in f.lines()[-1]


def test_order_weights_before_first():
    b = _changed(["inputs", "x"], "99")
    b["weights_before"][1][1] = "9"
    f = compare_captures(_capture(), b)
    assert (f.item, f.name) == ("weights_before", "m/d/bias")


def test_input_names_the_source_and_blames_no_layer():
    b = _changed(["inputs", "x"], "99")
    b["source_rngs"][0][2] = "bb"
    b["layers"][0]["output"] = "98"
    text = "\n".join(compare_captures(_capture(), b).lines())
    assert "the inputs of step 3 differ (x; y identical): the data pipeline is the source, no layer is blamed" in text
    assert "data source: Batches (keras.utils.PyDataset)" in text
    assert "Batches holds a np.random.Generator (attribute 'rng')" in text
    assert "fix: seed every random source in Batches" in text and "layer" not in text.split("blamed")[1]


def test_layer_named_with_the_identical_ones_before_it_its_ops_and_state():
    b = _changed(["layers", 1, "output"], "77")
    b["rng_states"][0][3] = "s2"
    f = compare_captures(_capture(), b)
    text = "\n".join(f.lines())
    assert (f.item, f.name) == ("layer", "m/noise")
    assert "identical: the outputs of the 1 layer before it: d (Dense)" in text
    assert "the output of layer 'noise' (Jitter, path m/noise)" in text
    assert "random/stateful ops inside 'noise': RngReadAndSkip, StatelessRandomNormalV2" in text
    assert "holds a tf.random.Generator (attribute 'gen') whose state differed before the step" in text
    assert "tf.random.Generator.from_seed(seed)" in text


def test_loss_gradient_weights_after_metric_in_order():
    assert compare_captures(_capture(), _changed(["loss"], "0x1p+0")).item == "loss"
    b = _changed(["gradients", 1, 1], "0")
    assert (compare_captures(_capture(), b).item, compare_captures(_capture(), b).name) == ("gradient", "m/d/bias")
    assert compare_captures(_capture(), _changed(["weights_after", 0, 1], "0")).item == "weights_after"
    f = compare_captures(_capture(), _changed(["metrics", "acc", "value"], "0x1p-3"))
    text = "\n".join(f.lines())
    assert (f.item, f.name) == ("metric", "acc")
    assert "metric 'acc' (Acc) while the weights are identical: a nondeterministic metric op" in text
    assert "PyFunc" in text


def test_generator_source_is_named_by_its_function():
    a = _changed(["source"], "generator function noisy() (/x/t.py:3)")
    a["source_rngs"] = []
    b = copy.deepcopy(a)
    b["inputs"]["y"] = "0"
    text = "\n".join(compare_captures(a, b).lines())
    assert "(y; x identical)" in text and "seed every random source in noisy()" in text


class _Comparison:
    def __init__(self, div):
        self.first_divergence = div


class _Div:
    def __init__(self, epoch, global_step):
        self.epoch, self.global_step = epoch, global_step


def test_locate_step():
    assert locate_step(_Comparison(_Div(1, 5)), [0] * 8, [4, 4], None) == 5
    assert locate_step(_Comparison(_Div(1, 5)), [0] * 8, [4, 4], 2) == 2  # inputs differ earlier
    assert locate_step(_Comparison(_Div(1, None)), [0] * 8, [4, 4], None) == 4  # a metric in epoch 1's log
    assert locate_step(_Comparison(None), [0] * 8, [4, 4], None) == 7  # final weights only
