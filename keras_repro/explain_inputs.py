"""What the per-step input digests (`data.steps`) say about two runs: data or model.

`keras_repro.input_digest` records a digest of x, y and sample_weight for every training step. When two
runs differ, the first step whose inputs differ says "the data pipeline is the source"; inputs identical
at every step up to the divergence say "the model computed differently". TensorFlow-free.

Example:
    >>> a = {"data": {"steps": [{"x": "1", "y": "2"}]}}
    >>> b = {"data": {"steps": [{"x": "3", "y": "2"}]}}
    >>> first_input_difference(a, b)
    (0, ['x'], ['y'])
"""

from __future__ import annotations

from typing import Any, Mapping

from keras_repro.causes import Cause

__all__ = ["first_input_difference", "input_step_causes", "refine_leftover", "where"]


def _steps(rec: Any) -> list[Any] | None:
    data = rec.get("data") if isinstance(rec, Mapping) or hasattr(rec, "get") else None
    steps = data.get("steps") if isinstance(data, Mapping) else None
    return steps if isinstance(steps, list) else None


def first_input_difference(ra: Any, rb: Any) -> tuple[int, list[str], list[str]] | None:
    """(global step, differing components, identical components) of the first step whose input digests
    differ, over the steps both records have; None when they agree or either has no digests."""
    sa, sb = _steps(ra), _steps(rb)
    if sa is None or sb is None:
        return None
    for k, (da, db) in enumerate(zip(sa, sb, strict=False)):
        if not isinstance(da, Mapping) or not isinstance(db, Mapping) or da == db:
            continue
        names = list(da) + [n for n in db if n not in da]
        differing = [n for n in names if da.get(n) != db.get(n)]
        return k, differing, [n for n in names if n not in differing]
    return None


def where(rec: Any, global_step: int) -> str:
    """'step 5 (epoch 1, step 1)' from `metrics.steps_per_epoch`, or 'step 5'."""
    metrics = rec.get("metrics") if hasattr(rec, "get") else None
    counts = metrics.get("steps_per_epoch") if isinstance(metrics, Mapping) else None
    if isinstance(counts, list):
        start = 0
        for epoch, count in enumerate(counts):
            if isinstance(count, int) and global_step < start + count:
                return f"step {global_step} (epoch {epoch}, step {global_step - start})"
            start += count if isinstance(count, int) else 0
    return f"step {global_step}"


def input_step_causes(ra: Any, rb: Any, because: str | None = None) -> list[Cause]:
    """One data cause when the inputs of some step differ.

    `because`: what already explains the difference (another seed, changed data); None: nothing recorded
    does, so the data pipeline is the source.

    Example:
        >>> a = {"data": {"steps": [{"x": "1", "y": "2"}]}}
        >>> input_step_causes(a, {"data": {"steps": [{"x": "3", "y": "2"}]}})[0].message
        'the inputs of step 0 differ (x; y identical): the data pipeline is the source'
    """
    found = first_input_difference(ra, rb)
    if found is None:
        return []
    k, differing, same = found
    what = ", ".join(differing) + (f"; {', '.join(same)} identical" if same else "")
    sa, sb = _steps(ra), _steps(rb)
    assert sa is not None and sb is not None
    losses = (ra.get("metrics") or {}).get("steps") or []
    aligned = not losses or len(sa) == len(losses)  # not under steps_per_execution > 1
    source = because if because is not None else "the data pipeline is the source"
    message = f"the inputs of {where(ra, k) if aligned else f'train step {k}'} differ ({what}): {source}"
    return [Cause("data", f"data.steps.{k}", sa[k], sb[k], message, "content")]


def refine_leftover(cause: Cause, ra: Any, rb: Any, divergence_step: int | None) -> Cause:
    """The leftover-nondeterminism cause, saying whether the inputs agreed up to the divergence, and
    naming a metric that differs while every step's loss and the final weights agree."""
    metric = _metric_only(ra, rb)
    sa, sb = _steps(ra), _steps(rb)
    if sa is None or sb is None or not sa or first_input_difference(ra, rb) is not None:
        prefix = ""
    else:
        names = ", ".join(n for n in (sa[0] or {}) if isinstance(sa[0], Mapping)) or "inputs"
        if divergence_step is None:
            prefix = f"inputs identical at every step ({names}), "
        else:
            upto = min(divergence_step, len(sa) - 1, len(sb) - 1)
            prefix = f"inputs identical at every step up to {where(ra, upto)} ({names}), "
        prefix += ("the model computed differently" if metric is None else "the training computed the same") + \
            " (`keras-repro check --locate -- CMD` names the layer or metric); "
    if metric is not None:
        prefix += (f"metric {metric!r} differs while every step's loss and the final weights are identical: a "
                   f"nondeterministic metric (it changes what is reported, not what is trained); ")
    return Cause(cause.category, cause.field, cause.a, cause.b, f"{prefix}{cause.message}", cause.kind) if prefix else cause


def _metric_only(ra: Any, rb: Any) -> str | None:
    """The first differing epoch-log key when losses per step and final weights agree, else None."""
    if ra.get("metrics") is None or rb.get("metrics") is None:
        return None
    ma, mb = ra.get("metrics") or {}, rb.get("metrics") or {}
    model_a, model_b = ra.get("model") or {}, rb.get("model") or {}
    weights = model_a.get("final_weights_sha256")
    if weights is None or weights != model_b.get("final_weights_sha256") or ma.get("steps") != mb.get("steps"):
        return None
    for la, lb in zip(ma.get("epochs") or [], mb.get("epochs") or [], strict=False):
        if isinstance(la, Mapping) and isinstance(lb, Mapping):
            for key in la:
                if repr(la.get(key)) != repr(lb.get(key)):
                    return str(key)
    return None
