"""Plot labels runs by script and differing setting (or --label); every diverging run gets its own mark."""

from __future__ import annotations

import pytest

from helpers import make_record, record_dict, write_record

from keras_repro.cli import main
from keras_repro.errors import ReproducibilityError
from keras_repro.run_labels import human_labels


def _three(tmp_path):
    base = make_record(tmp_path, "base")
    b = record_dict("b", hyperparameters__learning_rate=0.003)
    b["hyperparameters"]["optimizer_config"]["learning_rate"] = 0.003
    b["metrics"]["steps"][0] = 2.6
    c = record_dict("c", applied__seed=7, policy__seed=7)
    c["metrics"]["steps"][0] = 2.4
    return [base, write_record(tmp_path, b), write_record(tmp_path, c)]


def test_labels_name_the_script_and_the_settings_that_differ(tmp_path):
    from keras_repro.comparison import as_record

    records = [as_record(p) for p in _three(tmp_path)]
    # The first run: its values of what differs anywhere; the others: what differs from the first.
    assert human_labels(records) == ["train.py seed=42, learning_rate=0.001", "train.py learning_rate=0.003",
                                     "train.py seed=7"]
    same = [as_record(make_record(tmp_path, f"s{i}")) for i in range(2)]
    assert human_labels(same) == ["train.py (run 1)", "train.py (run 2)"]
    assert human_labels(records, ["a", "b", "c"]) == ["a", "b", "c"]
    with pytest.raises(ReproducibilityError, match="one --label per run"):
        human_labels(records, ["a"])
    flagged = [as_record(make_record(tmp_path, f"f{i}", code__flags={"learning_rate": lr, "repro_seed": 1},
                                     hyperparameters__learning_rate=lr, code__argv=["train.py", f"--learning_rate={lr}"]))
               for i, lr in enumerate((0.001, 0.003))]
    assert human_labels(flagged) == ["train.py learning_rate=0.001", "train.py learning_rate=0.003"]


def test_every_diverging_run_gets_its_own_visible_mark(tmp_path):
    pytest.importorskip("matplotlib")
    from keras_repro import plot as plot_module

    seen = []
    original = plot_module._mark

    def spy(ax, x, color, text):
        original(ax, x, color, text)
        seen.append((id(ax), x, color, ax.texts[-1].xy[1], text))

    plot_module._mark = spy
    try:
        plot_module.plot_runs(_three(tmp_path), tmp_path / "c.png", labels=None)
    finally:
        plot_module._mark = original
    steps_panel = [m for m in seen if "diverges:" in m[4]]
    assert [m[4].split(" diverges")[0] for m in steps_panel] == ["run 2", "run 3"]
    assert all(m[1] == 0 for m in steps_panel)  # both diverge at step 0 ...
    assert len({m[3] for m in steps_panel}) == 2 and len({m[2] for m in steps_panel}) == 2  # ... yet both show


def test_plot_cli_label(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    paths = _three(tmp_path)
    out = tmp_path / "c.png"
    assert main(["plot", *map(str, paths), "-o", str(out), "--label", "base", "--label", "lr", "--label", "seed"]) == 0
    assert main(["plot", *map(str, paths), "-o", str(out), "--label", "only-one"]) == 2
    assert "one --label per run" in capsys.readouterr().err
