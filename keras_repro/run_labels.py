"""Human labels for runs: the script and the settings that differ between the runs shown together.

`plot` used to label curves by run id, which says nothing about which run is which. `human_labels` names
each run by its script and the recorded settings that differ (seed, mode, threads, hyperparameters, fit
arguments, flags, command-line arguments): the first run by its values of every setting that differs
anywhere, each other run by what differs from the first, e.g. `train.py seed=1` and `train.py seed=2`;
runs that differ in nothing recorded are numbered. TensorFlow-free.

Example:
    >>> a = {"code": {"script": "/x/train.py"}, "applied": {"seed": 1}}
    >>> b = {"code": {"script": "/x/train.py"}, "applied": {"seed": 2}}
    >>> human_labels([a, b])
    ['train.py seed=1', 'train.py seed=2']
    >>> human_labels([a, b, {"code": {"script": "/x/train.py"}, "applied": {"seed": 1, "mode": "off"}}])
    ['train.py seed=1, mode=None', 'train.py seed=2', 'train.py mode=off']
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from keras_repro.errors import ReproducibilityError

__all__ = ["human_labels"]

_MAX_SETTINGS = 3


def _get(rec: Any, key: str) -> Any:
    value = rec.get(key) if hasattr(rec, "get") else None
    return value if isinstance(value, Mapping) else {}


def _settings(rec: Any) -> dict[str, Any]:
    """The recorded settings of a run, flattened, most telling first."""
    applied, policy = _get(rec, "applied"), _get(rec, "policy")
    out: dict[str, Any] = {}
    for key in ("seed", "mode", "threads"):
        out[key] = applied.get(key, policy.get(key))
    for section in ("hyperparameters", "fit"):
        for key, value in _flat(_get(rec, section)).items():
            if key not in ("optimizer_config", "callbacks") and not key.startswith("optimizer_config."):
                out[key] = value
    code = _get(rec, "code")
    out.update({f"--{k}": v for k, v in (code.get("flags") or {}).items() if k != "repro_dir"})
    argv = code.get("argv")
    out["args"] = " ".join(map(str, argv[1:])) if isinstance(argv, list) else None
    return out


def _flat(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and set(value) != {"__repr__"}:
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _prune(keys: list[str], settings: Mapping[str, Any]) -> list[str]:
    """Drops what only repeats another key: the raw arguments when a setting is named, a flag that feeds a
    hyperparameter of the same value (`--learning_rate` beside `learning_rate`), `--repro_*` flags."""
    named = [k for k in keys if k != "args"]
    kept = []
    for key in named:
        base = key[2:] if key.startswith("--") else None
        if base is not None and (base.startswith("repro_") or repr(settings.get(base)) == repr(settings.get(key))):
            continue
        kept.append(key)
    return kept or ([k for k in keys if k == "args"] if not named else [])


def _script(rec: Any, index: int) -> str:
    code = _get(rec, "code")
    script = code.get("script") or (code.get("argv") or [None])[0]
    return os.path.basename(str(script)) if script else f"run {index + 1}"


def _text(value: Any) -> str:
    if isinstance(value, Mapping) and set(value) == {"__repr__"}:
        value = value["__repr__"]
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def human_labels(records: Sequence[Any], labels: Sequence[str] | None = None) -> list[str]:
    """One readable label per run: `labels` when given (one per run), else script + differing settings.

    Raises:
        ReproducibilityError: `labels` does not have one entry per run.
    """
    if labels:
        if len(labels) != len(records):
            raise ReproducibilityError(
                f"Expected one --label per run ({len(records)} runs). Received: {len(labels)} labels. "
                "Fix: pass --label once for each run, in the same order, or leave --label out."
            )
        return [str(label) for label in labels]
    settings = [_settings(r) for r in records]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    differing = [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]
    out = []
    for i, (rec, s) in enumerate(zip(records, settings, strict=True)):
        # The first run shows its values of what differs anywhere; the others what differs from it.
        own = differing if i == 0 else [k for k in differing if repr(s.get(k)) != repr(settings[0].get(k))]
        own = _prune(own, s)
        parts = [f"{k}={_text(s.get(k))}" for k in own[:_MAX_SETTINGS]]
        if len(own) > _MAX_SETTINGS:
            parts.append(f"+{len(own) - _MAX_SETTINGS} more")
        out.append(" ".join([_script(rec, i), ", ".join(parts)]).strip() if parts else _script(rec, i))
    if len(set(out)) < len(out):  # nothing recorded tells them apart: number them
        out = [f"{label} (run {i + 1})" for i, label in enumerate(out)]
    return out
