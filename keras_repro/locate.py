"""`keras-repro check --locate`: where two runs of the same command first compute differently.

`run_locate` reruns the command in two fresh processes with `$KERAS_REPRO_LOCATE` set; in each, the
record's `ReproCallback` instruments the first diverging step (`keras_repro.locate_capture`) and writes
a digest of every item of that step. `compare_captures` walks the two captures in the order the step
computes them and reports the FIRST item that differs:

    weights before the step -> each input (x, y, sample_weight) -> each layer's output, in the order
    the layers complete -> the loss -> each gradient -> the weights after -> each metric

and what to do about it. TensorFlow-free: only the reruns train.

Example:
    >>> finding = run_locate(["python", "train.py"], step=0)          # doctest: +SKIP
    >>> print("\\n".join(finding.lines()))                            # doctest: +SKIP
    locate: first difference at step 0: the output of layer 'noisy' (ClockNoise)
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["ENV_LOCATE", "Finding", "run_locate", "compare_captures", "locate_step", "locate_pairing"]

ENV_LOCATE = "KERAS_REPRO_LOCATE"


@dataclasses.dataclass(frozen=True)
class Finding:
    """The first differing item of a located step.

    Attributes:
        step: the global step instrumented.
        item: "weights_before", "input", "layer", "loss", "gradient", "weights_after", "metric", "none",
            or "failed" (a rerun wrote no capture).
        name: the variable, input, layer path or metric name that differs first (None when none does).
        lines: the report, one finding a line.
    """

    step: int
    item: str
    name: str | None
    report: tuple[str, ...]

    def lines(self) -> list[str]:
        return list(self.report)


def locate_step(comparison: Any, steps_a: Sequence[Any], steps_per_epoch: Any, input_step: int | None) -> int:
    """The global step to instrument: the first where losses or inputs differ; for a metric that
    differs in an epoch log while every step's loss agrees, the first step of that epoch; for final
    weights alone, the last step."""
    candidates = [s for s in (input_step,) if s is not None]
    div = comparison.first_divergence
    if div is not None and div.global_step is not None:
        candidates.append(div.global_step)
    elif div is not None and div.epoch is not None and isinstance(steps_per_epoch, list):
        candidates.append(sum(int(c) for c in steps_per_epoch[: div.epoch]))
    if not candidates:
        candidates.append(max(0, len(steps_a) - 1))
    return min(candidates)


def run_locate(command: Sequence[str], steps: Mapping[int, int], *, environ: Mapping[str, str] | None = None,
               cwd: str | os.PathLike[str] | None = None, timeout: float | None = None) -> dict[int, Finding]:
    """Reruns `command` twice with step `steps[r]` of each record `r` (1-based) instrumented, and compares.

    Returns one `Finding` per record. Where the weights before the step already differ, the step before
    is located instead (its update computed differently although its loss agreed), once, in one more
    pair of reruns for all such records.

    Example:
        >>> run_locate(["python", "train.py"], {1: 0})[1].item     # doctest: +SKIP
        'layer'
    """
    findings = _locate_once(command, dict(steps), environ, cwd, timeout)
    again = {r: steps[r] - 1 for r, f in findings.items() if f.item == "weights_before" and steps[r] > 0}
    if again:
        findings.update({r: f for r, f in _locate_once(command, again, environ, cwd, timeout).items() if f.item != "failed"})
    return findings


def _locate_once(command: Sequence[str], steps: dict[int, int], environ: Mapping[str, str] | None, cwd: Any,
                 timeout: float | None) -> dict[int, Finding]:
    captures = _capture_pair(command, steps, environ, cwd, timeout)
    findings = {}
    for record, step in steps.items():
        pair = captures.get(record)
        if isinstance(pair, str) or pair is None:
            findings[record] = Finding(step, "failed", None, (f"locate: {pair}",))
        else:
            findings[record] = compare_captures(*pair)
    return findings


def _capture_pair(command: Sequence[str], steps: Mapping[int, int], environ: Mapping[str, str] | None,
                  cwd: Any, timeout: float | None) -> dict[int, Any]:
    """{record: (capture a, capture b)}, or {record: reason} when a rerun wrote no capture of it."""
    loaded: dict[int, list[Any]] = {r: [] for r in steps}
    with tempfile.TemporaryDirectory(prefix="keras-repro-locate-") as tmp:
        for which in ("a", "b"):
            targets = [{"record": r, "step": k, "out": str(Path(tmp) / f"{which}-{r}.json")} for r, k in steps.items()]
            env = dict(os.environ if environ is None else environ)
            env[ENV_LOCATE] = json.dumps({"targets": targets})
            env.pop("KERAS_REPRO_RECORDS_FILE", None)
            try:
                proc = subprocess.run(list(command), env=env, cwd=cwd, timeout=timeout, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, errors="replace")
                tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:]) or "(empty)"
                code: Any = proc.returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                tail, code = str(e), "none"
            for target in targets:
                path = Path(target["out"])
                record, step = target["record"], target["step"]
                if path.exists():
                    loaded[record].append(json.loads(path.read_text(encoding="utf-8")))
                else:
                    loaded[record].append(f"the instrumented rerun (exit {code}) wrote no capture of step {step}; "
                                          f"its stderr ends with: {tail}")
    return {r: next((c for c in pair if isinstance(c, str)), tuple(pair)) for r, pair in loaded.items()}


def compare_captures(a: Mapping[str, Any], b: Mapping[str, Any]) -> Finding:
    """The first item that differs between two captures of the same step, with its explanation.

    Example:
        >>> base = {"step": 0, "weights_before": [["d/kernel", "1"]], "inputs": {"x": "2"}, "layers": [],
        ...         "loss": "0x1p+0", "gradients": [], "weights_after": [], "metrics": {}}
        >>> compare_captures(base, dict(base, inputs={"x": "3"})).item
        'input'
    """
    step = int(a.get("step", 0))
    head = f"locate: reran the command twice up to step {step} with instrumentation"
    first = _first_pair(a.get("weights_before"), b.get("weights_before"))
    if first is not None:
        return Finding(step, "weights_before", first, (
            head, f"locate: first difference: the weights before step {step} ({first}): an earlier step updated "
                  f"them differently although its loss agreed"))
    lines = [head, f"locate: identical: the weights before the step ({len(a.get('weights_before') or [])} variables)"]
    inputs_a, inputs_b = a.get("inputs") or {}, b.get("inputs") or {}
    differing = [k for k in inputs_a if inputs_a.get(k) != inputs_b.get(k)]
    if differing:
        return Finding(step, "input", differing[0], tuple(lines + _input_lines(a, b, differing, inputs_a)))
    lines.append(f"locate: identical: the inputs ({', '.join(inputs_a) or 'none'})")
    layer = _layer_finding(a, b, lines)
    if layer is not None:
        return Finding(step, "layer", layer, tuple(lines))
    if a.get("loss") != b.get("loss"):
        lines.append(f"locate: first difference: the loss ({a.get('loss')} vs {b.get('loss')}) while every layer "
                     "output agrees: the loss function or a loss added by a layer (add_loss) computed differently")
        return Finding(step, "loss", "loss", tuple(lines))
    lines.append("locate: identical: the loss")
    for item, label in (("gradients", "gradient of"), ("weights_after", "weight after the step:")):
        first = _first_pair(a.get(item), b.get(item))
        if first is not None:
            lines.append(f"locate: first difference: the {label} {first}: a nondeterministic op in the backward "
                         "pass or the optimizer (e.g. a scatter/segment reduction with several threads)")
            return Finding(step, item.rstrip("s") if item == "gradients" else item, first, tuple(lines))
        lines.append(f"locate: identical: the {item.replace('_', ' ')}")
    return _metric_finding(step, a, b, lines)


def _first_pair(a: Any, b: Any) -> str | None:
    """The name of the first [name, digest] entry that differs (or the count, when lengths differ)."""
    a, b = a or [], b or []
    for (name, da), (_, db) in zip(a, b, strict=False):
        if da != db:
            return str(name)
    if len(a) != len(b):
        return f"(the runs have {len(a)} vs {len(b)} entries)"
    return None


def _input_lines(a: Mapping[str, Any], b: Mapping[str, Any], differing: list[str], inputs: Mapping[str, Any]) -> list[str]:
    same = [k for k in inputs if k not in differing]
    what = ", ".join(differing) + (f"; {', '.join(same)} identical" if same else "")
    source = a.get("source") or "the input arrays"
    lines = [f"locate: first difference: the inputs of step {a.get('step')} differ ({what}): the data pipeline is "
             f"the source, no layer is blamed",
             f"locate: data source: {source}"]
    rngs_b = {attr: digest for attr, _, digest in (b.get("source_rngs") or [])}
    held = [(attr, kind) for attr, kind, digest in (a.get("source_rngs") or []) if rngs_b.get(attr) != digest]
    for attr, kind in held:
        lines.append(f"locate: {_source_name(source)} holds a {kind} (attribute {attr!r}) whose state differs between "
                     "the runs: it was created without a seed")
    name = _source_name(a.get("source"))
    lines.append(f"locate: fix: seed every random source in {name}: pass it a seeded generator, "
                 f"np.random.default_rng(seed) with the seed you give keras_repro, instead of np.random.default_rng() "
                 f"(global seeds never reach a Generator created without one)")
    return lines


def _source_name(source: Any) -> str:
    """'Batches' from 'Batches (keras.utils.PyDataset)', 'noisy_batches()' from 'generator function noisy_batches() (...)'."""
    if not source:
        return "the data preparation"
    text = str(source)
    if text.startswith("generator function "):
        return text.split(" ")[2]
    if text.startswith("tf.data "):
        return "the tf.data pipeline"
    return text.split(" ")[0]


def _layer_finding(a: Mapping[str, Any], b: Mapping[str, Any], lines: list[str]) -> str | None:
    layers_a, layers_b = a.get("layers") or [], b.get("layers") or []
    same = []
    for la, lb in zip(layers_a, layers_b, strict=False):
        if la.get("path") != lb.get("path"):
            lines.append(f"locate: the runs called different layers ({la.get('path')} vs {lb.get('path')})")
            return str(la.get("path"))
        if la.get("output") == lb.get("output"):
            same.append(f"{la.get('name')} ({la.get('class')})")
            continue
        if same:
            noun = "layer" if len(same) == 1 else "layers"
            lines.append(f"locate: identical: the outputs of the {len(same)} {noun} before it: {', '.join(same)}")
        lines += _layer_lines(la, a, b)
        return str(la.get("path"))
    if same:
        lines.append(f"locate: identical: the outputs of all {len(same)} layer calls")
    return None


def _layer_lines(layer: Mapping[str, Any], a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    name, cls = layer.get("name"), layer.get("class")
    lines = [f"locate: first difference: the output of layer {name!r} ({cls}, path {layer.get('path')}): the model "
             f"computed differently from identical inputs and weights"]
    ops = layer.get("random_ops")
    if ops:
        lines.append(f"locate: random/stateful ops inside {name!r}: {', '.join(ops)}")
    elif ops is not None:
        lines.append(f"locate: no random or stateful op inside {name!r}: a nondeterministic kernel or threads")
    states_b = {(p, attr): d for p, attr, _, d in (b.get("rng_states") or [])}
    differed = [(attr, kind) for p, attr, kind, d in (a.get("rng_states") or [])
                if p == layer.get("path") and states_b.get((p, attr)) != d]
    for attr, kind in differed:
        lines.append(f"locate: {name!r} holds a {kind} (attribute {attr!r}) whose state differed before the step")
    lines.append("locate: fix: " + _layer_fix(name, ops or [], [k for _, k in differed] or [k for _, k in layer.get("holds") or []]))
    return lines


def _layer_fix(name: Any, ops: Sequence[str], kinds: Sequence[str]) -> str:
    if "tf.random.Generator" in kinds or any(op.startswith("Rng") or op.startswith("Stateful") for op in ops):
        return (f"seed the tf.random.Generator of {name!r} from keras_repro's seed: "
                f"tf.random.Generator.from_seed(seed) with the seed you give keras_repro.configure/fit, not from "
                f"the clock or from_non_deterministic_state(); or use keras.random ops with a keras.random.SeedGenerator(seed)")
    if any("PyFunc" in op for op in ops) or any(k.startswith("np.") or k.startswith("random.") for k in kinds):
        return (f"{name!r} runs Python code (tf.py_function / numpy_function) whose randomness no global seed "
                f"reaches: give it a seeded np.random.default_rng(seed), or use keras.random ops with a SeedGenerator")
    if ops:
        return f"give the random ops in {name!r} a seed (keras.random.* with seed=..., or a keras.random.SeedGenerator)"
    return ("run with mode 'bitwise' and one thread (keras-repro run --mode bitwise --threads 1); if it persists, "
            "report the layer and the op types it uses")


def _metric_finding(step: int, a: Mapping[str, Any], b: Mapping[str, Any], lines: list[str]) -> Finding:
    ma, mb = a.get("metrics") or {}, b.get("metrics") or {}
    for name, entry in ma.items():
        other = mb.get(name) or {}
        if entry.get("value") == other.get("value"):
            continue
        cls = entry.get("class") or "metric"
        ops = entry.get("random_ops")
        lines.append(f"locate: first difference: metric {name!r} ({cls}) while the weights are identical: a "
                     f"nondeterministic metric op (it changes the reported metric, not the training)")
        if ops:
            lines.append(f"locate: random/stateful ops in {cls}.update_state: {', '.join(ops)}")
        lines.append(f"locate: fix: make {cls} deterministic (seed its randomness, or do not use time or unseeded "
                     f"generators in it)")
        return Finding(step, "metric", name, tuple(lines))
    lines.append(f"locate: the two instrumented reruns agree on every item of step {step}: the difference did not "
                 f"recur (timing-dependent), or it comes from state the capture cannot see (see docs/locate.md)")
    return Finding(step, "none", None, tuple(lines))


def locate_pairing(command: Sequence[str], records: Sequence[Sequence[str]], pairings: Sequence[Any],
                   locate: bool | None, *, environ: Mapping[str, str] | None = None, cwd: Any = None,
                   timeout: float | None = None, progress: Any = None) -> list[str]:
    """The `check --locate` report: every differing record of run 1 vs run 2, located in one pair of reruns.

    `locate` None locates only differences no recorded cause explains (leftover nondeterminism, or
    inputs that differ with nothing recorded saying why); False never; True every difference.
    """
    if locate is False:
        return []
    chosen = [p for p in pairings if p.other == 2 and not p.comparison.identical and (locate or _unexplained(p))]
    if not chosen:
        return ["locate: nothing to locate: the runs are identical"] if locate and all(
            p.comparison.identical for p in pairings) else []
    from keras_repro.record import load_run

    steps = {}
    for pairing in chosen:
        rec_a = load_run(records[0][pairing.record - 1])
        causes = pairing.comparison.causes
        input_step = next((int(c.field.split(".")[2]) for c in causes if c.field.startswith("data.steps.")), None)
        steps[pairing.record] = locate_step(pairing.comparison, rec_a.steps, rec_a.metrics.get("steps_per_epoch"), input_step)
    if progress is not None:
        where = ", ".join(f"record {r}: step {k}" for r, k in steps.items())
        progress(f"locate: rerunning twice with instrumentation ({where}): {' '.join(command)}")
    findings = run_locate(command, steps, environ=environ, cwd=cwd, timeout=timeout)
    lines = []
    for pairing in chosen:
        prefix = f"record {pairing.record} of {pairing.of}: " if pairing.of > 1 else ""
        lines += [line.replace("locate: ", f"locate: {prefix}", 1) for line in findings[pairing.record].lines()]
    return lines


def _unexplained(pairing: Any) -> bool:
    return all(c.category == "nondeterminism" or c.field.startswith("data.steps.") for c in pairing.comparison.causes)
