"""keras-repro plot: a PNG with the overlaid curves, and a one-line error without matplotlib."""

from __future__ import annotations

import math
import sys

import pytest

from helpers import make_record, record_dict, write_record

from keras_repro.cli import main
from keras_repro.plot import MISSING_MATPLOTLIB, plot_runs


def _records(tmp_path):
    a = make_record(tmp_path, "run-a")
    b = record_dict("run-b", policy__mode="seeded", applied__mode="seeded", status="interrupted")
    b["metrics"]["steps"] = b["metrics"]["steps"][:5] + [1.3, math.nan, math.inf]
    b["metrics"]["epochs"] = [{"loss": 2.0, "accuracy": 0.5, "val_loss": 2.1, "val_accuracy": 0.4},
                              {"loss": 1.1, "accuracy": 0.7, "val_loss": 1.2, "val_accuracy": 0.6}]
    return a, write_record(tmp_path, b)


def test_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a, b = _records(tmp_path)
    out = tmp_path / "curves.png"
    code = main(["plot", str(a), str(b), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out == f"wrote {out}\n"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000, len(data)  # three panels of curves, not an empty canvas


def test_plot_labels_and_divergence(tmp_path):
    pytest.importorskip("matplotlib")
    from keras_repro import plot as plot_module

    texts: list[str] = []
    original = plot_module._mark
    plot_module._mark = lambda ax, x, color, text: (texts.append(text), original(ax, x, color, text))
    try:
        a, b = _records(tmp_path)
        plot_runs([a, b], tmp_path / "c.png")
    finally:
        plot_module._mark = original
    assert texts[0] == "run 2 diverges: epoch 1, step 1\nrelative gap 3.8e-02"
    assert "run 2 diverges in epoch 1" in texts[1:]
    labels = plot_module._labels([plot_module.as_record(b)])
    assert labels == ["run-b (seeded, seed 42) [interrupted] [loss not finite from step 6]"]


def test_plot_without_matplotlib(tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    a, b = _records(tmp_path)
    code = main(["plot", str(a), str(b), "-o", str(tmp_path / "c.png")])
    _, err = capsys.readouterr()
    assert code == 2
    assert err == f"keras-repro: error: {MISSING_MATPLOTLIB}\n"
    assert MISSING_MATPLOTLIB == "matplotlib is not installed; pip install 'keras-repro[plot]'"
    assert not (tmp_path / "c.png").exists()


def test_plot_bad_record(tmp_path, capsys):
    (tmp_path / "run.json").write_text('{"schema": "keras_repro.run/9"}')
    code = main(["plot", str(tmp_path), "-o", str(tmp_path / "c.png")])
    assert code == 2 and "newer than this keras_repro reads" in capsys.readouterr().err
