"""`keras-repro plot`: overlay the curves of several runs and mark where they first diverge.

One panel for the per-step training loss, then one per metric in the epoch logs (training solid,
validation dashed). Each run after the first is compared with the first; its first divergence is a
vertical line with a note. Uses matplotlib's Agg canvas directly (no pyplot, no global backend
change); matplotlib is the optional extra `plot`. TensorFlow-free.

Example:
    >>> plot_runs(["runs/a", "runs/b"], "curves.png")   # doctest: +SKIP
    PosixPath('curves.png')
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from keras_repro.comparison import RecordLike, as_record, compare
from keras_repro.errors import ReproducibilityError
from keras_repro.record import RunRecord

__all__ = ["plot_runs", "MISSING_MATPLOTLIB"]

MISSING_MATPLOTLIB = "matplotlib is not installed; pip install 'keras-repro[plot]'"


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReproducibilityError(MISSING_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def plot_runs(runs: Sequence[RecordLike], output: str | os.PathLike[str], labels: Sequence[str] | None = None) -> Path:
    """Writes a PNG overlaying the loss and metric curves of `runs`; returns its path.

    Args:
        runs: records, dicts or paths; the first is the reference the others are compared with.
        output: the PNG file to write.
        labels: one label per run (default: the script and the recorded settings that differ, e.g.
            `train.py seed=2`; see keras_repro/run_labels.py).

    Raises:
        ReproducibilityError: matplotlib is missing, a record cannot be read, or the PNG cannot be written.

    Example:
        >>> plot_runs(["runs/a", "runs/b"], "curves.png")   # doctest: +SKIP
    """
    Figure, FigureCanvasAgg = _matplotlib()
    records = [as_record(r) for r in runs]
    if not records:
        raise ReproducibilityError("No runs to plot. Usage: keras-repro plot RUN_A RUN_B [...] -o curves.png")
    metrics = _metric_names(records)
    panels = (["loss per step"] if any(r.steps for r in records) else []) + metrics
    if not panels:
        raise ReproducibilityError("None of the runs recorded any metrics (metrics.steps / metrics.epochs are empty); nothing to plot.")
    # The per-step loss spans the top row; one panel per epoch metric below, two per row.
    has_steps = panels[0] == "loss per step"
    cols = 1 if len(metrics) <= 1 else 2
    rows = int(has_steps) + math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(13, 3.8 * rows + 0.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, cols)
    axes = [fig.add_subplot(grid[0, :])] if has_steps else []
    for k in range(len(metrics)):
        row, col = divmod(k, cols)
        axes.append(fig.add_subplot(grid[row + int(has_steps), col]))
    colors = [f"C{i % 10}" for i in range(len(records))]
    labels = _legend_labels(records, labels)  # issue 12: human labels, not run ids
    divergences = [compare(records[0], r).first_divergence if i else None for i, r in enumerate(records)]

    for ax, panel in zip(axes, panels, strict=True):
        if panel == "loss per step":
            _plot_steps(ax, records, colors, labels, divergences)
        else:
            _plot_metric(ax, panel, records, colors, labels, divergences)
    fig.suptitle(_title(records, divergences), fontsize=11)
    path = Path(output)
    try:
        fig.savefig(path, format="png")
    except OSError as e:
        raise ReproducibilityError(f"Cannot write {str(path)!r}: {e.strerror or e}. Fix: pass -o a writable path.") from None
    return path


def _metric_names(records: Sequence[RunRecord]) -> list[str]:
    """Base metric names in first-seen order ("loss", "accuracy"); `val_x` joins the panel of `x`."""
    names: list[str] = []
    for rec in records:
        for log in rec.epochs:
            for key in log if isinstance(log, dict) else ():
                base = key[4:] if key.startswith("val_") else key
                if base not in names and _numeric(log[key]):
                    names.append(base)
    return names


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(values: Sequence[Any]) -> list[float]:
    """Numbers as floats; NaN, infinities and non-numbers become NaN (gaps in the line)."""
    return [float(v) if _numeric(v) and math.isfinite(v) else math.nan for v in values]


def _labels(records: Sequence[RunRecord]) -> list[str]:
    labels = []
    for i, rec in enumerate(records):
        policy = rec.applied or rec.policy
        label = f"{rec.run_id or f'run {i + 1}'} ({policy.get('mode', '?')}, seed {policy.get('seed')})"
        if rec.status not in (None, "completed"):
            label += f" [{rec.status}]"
        bad = next((k for k, v in enumerate(rec.steps) if not (_numeric(v) and math.isfinite(v))), None)
        if bad is not None:
            label += f" [loss not finite from step {bad}]"
        labels.append(label)
    return labels


def _legend_labels(records: Sequence[RunRecord], given: Sequence[str] | None) -> list[str]:
    """issue 12: 'run 2: train.py seed=2' plus the status notes of `_labels` (keras_repro/run_labels.py)."""
    from keras_repro.run_labels import human_labels

    notes = [label[label.index(")") + 1:].strip() if ")" in label else "" for label in _labels(records)]
    return [f"run {i + 1}: {human}" + (f" {note}" if note else "")
            for i, (human, note) in enumerate(zip(human_labels(records, given), notes, strict=True))]


def _title(records: Sequence[RunRecord], divergences: Sequence[Any]) -> str:
    if len(records) == 1:
        return f"keras_repro: {records[0].run_id}"
    if all(d is None for d in divergences[1:]):
        return f"keras_repro: {len(records)} runs, no divergence in the shared metrics"
    return f"keras_repro: {len(records)} runs (dotted lines: first divergence from {records[0].run_id})"


def _plot_steps(ax: Any, records: Sequence[RunRecord], colors: list[str], labels: list[str], divergences: list[Any]) -> None:
    for i, rec in enumerate(records):
        ys = _finite(rec.steps)
        ax.plot(range(len(ys)), ys, color=colors[i], lw=1.2, alpha=0.85, label=labels[i],
                ls="-" if i == 0 else "--")
    boundaries = _epoch_starts(records[0])
    for x in boundaries[1:]:
        ax.axvline(x - 0.5, color="0.85", lw=0.8, zorder=0)
    for i, div in enumerate(divergences):
        if div is not None and div.global_step is not None:
            where = f"epoch {div.epoch}, step {div.step}" if div.epoch is not None else f"step {div.global_step}"
            _mark(ax, div.global_step, colors[i], f"run {i + 1} diverges: {where}\nrelative gap {_gap(div.relative_gap)}")
    ax.set_title("training loss per step (grey lines: epoch starts)", fontsize=10)
    ax.set_xlabel("global step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")


def _plot_metric(ax: Any, name: str, records: Sequence[RunRecord], colors: list[str], labels: list[str],
                 divergences: list[Any]) -> None:
    for i, rec in enumerate(records):
        for key, style, suffix in ((name, "-", "train"), (f"val_{name}", ":", "validation")):
            values = [log.get(key) if isinstance(log, dict) else None for log in rec.epochs]
            if any(_numeric(v) for v in values):
                ax.plot(range(len(values)), _finite(values), color=colors[i], ls=style, marker="o", ms=3.5,
                        label=f"{suffix}: {labels[i]}")
    for i, div in enumerate(divergences):
        if div is not None and div.epoch is not None:
            _mark(ax, div.epoch, colors[i], f"run {i + 1} diverges in epoch {div.epoch}")
    ax.set_title(f"{name} per epoch (solid: training, dotted: validation)", fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _mark(ax: Any, x: float, color: str, text: str) -> None:
    """A dotted vertical line at `x` with a note beside it (left of the line in the right part of the panel).

    Each further mark on the same panel gets its note one row lower and a marker of its own at the top of
    the line, so that runs diverging at the same step each stay visible (issue 12).
    """
    slot = len(ax.texts)  # the notes already on this panel
    markers = ("v", "^", "s", "D", "o", "P", "X")
    ax.axvline(x, color=color, ls=":", lw=1.6)
    ax.plot([x], [1.0 - 0.04 * (slot % 10)], marker=markers[slot % len(markers)], color=color, ms=7,
            transform=ax.get_xaxis_transform(), clip_on=False)
    low, high = ax.get_xlim()
    right_side = high > low and (x - low) / (high - low) > 0.6
    ax.annotate(text, xy=(x, 0.98 - 0.13 * (slot % 7)), xycoords=("data", "axes fraction"), xytext=(-5 if right_side else 5, 0),
                textcoords="offset points", ha="right" if right_side else "left", va="top", fontsize=8, color=color,
                bbox={"boxstyle": "round,pad=0.25", "fc": "white", "alpha": 0.85, "ec": color})


def _epoch_starts(rec: RunRecord) -> list[int]:
    counts = rec.metrics.get("steps_per_epoch")
    if not isinstance(counts, list) or not all(isinstance(c, int) for c in counts):
        return []
    starts, total = [], 0
    for c in counts:
        starts.append(total)
        total += c
    return starts


def _gap(gap: float) -> str:
    return "inf" if math.isinf(gap) else f"{gap:.1e}"
