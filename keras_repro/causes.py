"""The causes `compare` finds, one finder per category, most likely first; and what leftover
nondeterminism each mode still allows.

TensorFlow-free. `keras_repro.comparison.compare` calls `find_causes`; this module holds the rules.

Example:
    >>> leftover_message("seeded").startswith("mode 'seeded' seeds the RNGs")
    True
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from keras_repro.record import RunRecord

__all__ = ["CATEGORIES", "Cause", "find_causes", "leftover_message", "relative_gap", "format_value"]

# Most likely first. `nondeterminism` is only ever the single cause, when nothing recorded differs.
CATEGORIES = (
    "data",
    "hyperparameters",
    "fit",
    "code",
    "model",
    "policy",
    "initialisation",
    "versions",
    "hardware",
    "environment",
    "nondeterminism",
)

_VERSION_KEYS = ("python", "tensorflow", "keras", "numpy")
_POLICY_KEYS = ("seed", "mode", "threads", "isa")
# Where records go is not a cause; --repro_seed/mode/threads feed the policy, which is compared itself.
_IGNORED_FLAGS = frozenset({"repro_dir", "repro_seed", "repro_mode", "repro_threads", "repro_isa"})
_MISSING = object()
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclasses.dataclass(frozen=True)
class Cause:
    """One recorded difference that may explain why two runs differ.

    Attributes:
        category: one of `CATEGORIES`, e.g. "hyperparameters".
        field: dotted path in run.json, e.g. "hyperparameters.learning_rate".
        a: the value in the first run (None when absent).
        b: the value in the second run.
        message: one line for people, e.g. "hyperparameter learning_rate: 0.001 -> 0.003".
        kind: what changed; for data one of "samples", "shape", "dtype", "content", "order", "kind",
            "presence"; elsewhere "changed".

    Example:
        >>> Cause("fit", "fit.epochs", 3, 5, "fit argument epochs: 3 -> 5").message
        'fit argument epochs: 3 -> 5'
    """

    category: str
    field: str
    a: Any
    b: Any
    message: str
    kind: str = "changed"

    def __str__(self) -> str:
        return self.message



def find_causes(ra: RunRecord, rb: RunRecord, notes: list[str]) -> list[Cause]:
    """Every recorded difference between two runs, as causes in `CATEGORIES` order; notes go to `notes`."""
    causes: list[Cause] = []
    causes += _data_causes(ra, rb, notes)
    causes += _input_step_causes(ra, rb, already_explained=bool(causes))
    causes += _section_causes(ra, rb, "hyperparameters", "hyperparameters", "hyperparameter", notes)
    causes += _section_causes(ra, rb, "fit", "fit", "fit argument", notes)
    causes += _code_causes(ra, rb, notes)
    causes += _model_causes(ra, rb)
    causes += _policy_causes(ra, rb, notes)
    causes += _init_causes(ra, rb, causes)
    causes += _distribution_causes(ra, rb)
    causes += _environment_causes(ra, rb, notes)
    return causes


def _input_step_causes(ra: RunRecord, rb: RunRecord, already_explained: bool) -> list[Cause]:
    """The first step whose input digests (data.steps) differ (keras_repro/explain_inputs.py).

    Inputs that differ because the data itself or its order differs, or because the seed does (the sample
    order and seeded augmentation follow from it), are said to follow from that, not blamed on the pipeline.
    """
    from keras_repro.explain_inputs import input_step_causes

    seed_a, seed_b = ((r.get("applied") or {}).get("seed") for r in (ra, rb))
    if already_explained:
        because = "follows from the data difference above"
    elif seed_a is None or seed_b is None:
        because = "follows from the missing seed: nothing fixed the sample order or the augmentation"
    elif seed_a != seed_b:
        because = f"follows from the seed ({seed_a} -> {seed_b}): the sample order and seeded augmentation depend on it"
    else:
        because = None
    return input_step_causes(ra, rb, because=because)


# --- values ---------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Exact equality, NaN equal to NaN, recursively; `{"__repr__"}` values without memory addresses."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) == {"__repr__"} == set(b):
            return _ADDRESS.sub("", str(a["__repr__"])) == _ADDRESS.sub("", str(b["__repr__"]))
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b) and (isinstance(a, bool) or isinstance(b, bool)):
        return False  # True == 1 in Python, but not in a record
    return a is b or a == b


def relative_gap(a: Any, b: Any) -> float:
    """|a - b| / max(|a|, |b|); 0 for equal values, inf when one is NaN/inf or not a number.

    Example:
        >>> relative_gap(2.0, 1.0)
        0.5
    """
    if _same(a, b):
        return 0.0
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return math.inf
    if not (math.isfinite(fa) and math.isfinite(fb)):
        return math.inf
    scale = max(abs(fa), abs(fb))
    return abs(fa - fb) / scale if scale else 0.0


def format_value(value: Any) -> str:
    """A value as short, readable text: hashes shortened, None as "none", long reprs cut.

    Example:
        >>> format_value(None), format_value(0.001), format_value(True)
        ('none', '0.001', 'true')
    """
    if value is _MISSING:
        return "(absent)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if re.fullmatch(r"[0-9a-f]{40,64}", value):
            return value[:12]
        return value if value and len(value) <= 80 and value.strip() == value else repr(value)[:80]
    if isinstance(value, dict) and set(value) == {"__repr__"}:
        return _ADDRESS.sub("", str(value["__repr__"]))[:80]
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fmt_gap(gap: float) -> str:
    return "inf" if math.isinf(gap) else f"{gap:.1e}"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to {"a.b.c": leaf}; lists and `{"__repr__"}` values are leaves."""
    if isinstance(value, dict) and value and set(value) != {"__repr__"}:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> Iterable[tuple[str, Any, Any]]:
    """(key, value_a, value_b) for every flattened key whose values differ, in a's order then b's."""
    fa, fb = _flatten(dict(a)), _flatten(dict(b))
    for key in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
        if not _same(va, vb):
            yield key, va, vb


def _both_sections(ra: RunRecord, rb: RunRecord, name: str, notes: list[str]) -> bool:
    """False (with a note) when a section is missing from one record: an older or partial record."""
    has_a, has_b = isinstance(ra.get(name), dict), isinstance(rb.get(name), dict)
    if has_a and has_b:
        return True
    if has_a or has_b:
        missing = "A" if not has_a else "B"
        notes.append(f"run {missing} has no '{name}' section (older or partial record): not compared")
    return False


def _cause(category: str, field: str, a: Any, b: Any, message: str, kind: str = "changed") -> Cause:
    return Cause(category, field, None if a is _MISSING else a, None if b is _MISSING else b, message, kind)


# --- causes by category ---------------------------------------------------------------------------


def _data_causes(ra: RunRecord, rb: RunRecord, notes: list[str]) -> list[Cause]:
    if not _both_sections(ra, rb, "data", notes):
        return []
    da, db = ra.section("data"), rb.section("data")
    causes: list[Cause] = []
    for name in ("x", "y", "sample_weight"):
        causes += _fingerprint_causes(f"data.{name}", name, da.get(name), db.get(name))
    va, vb = da.get("validation"), db.get("validation")
    if isinstance(va, dict) and isinstance(vb, dict):
        for name in sorted(set(va) | set(vb), key=lambda k: (k not in ("x", "y"), k)):
            causes += _fingerprint_causes(f"data.validation.{name}", f"validation {name}", va.get(name), vb.get(name))
    elif (va is None) != (vb is None):
        causes.append(_presence_cause("data.validation", "validation data", va, vb))
    causes += _order_causes(da.get("order"), db.get("order"))
    return causes


def _presence_cause(field: str, label: str, a: Any, b: Any) -> Cause:
    where = "only in run B" if a is None else "only in run A"
    return _cause("data", field, a, b, f"data {label}: given {where}", "presence")


# (key, words, Cause.kind) of the fingerprint fields compared before the content hash.
_FINGERPRINT_FIELDS = (
    ("samples", "sample count", "samples"),
    ("cardinality", "cardinality", "samples"),
    ("shape", "shape", "shape"),
    ("element_spec", "element spec", "shape"),
    ("dtype", "dtype", "dtype"),
)


def _fingerprint_causes(field: str, label: str, a: Any, b: Any) -> list[Cause]:
    """What changed between two data fingerprints: presence, kind, samples, shape, dtype, content, order."""
    if _same(a, b):
        return []
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [_presence_cause(field, label, a, b)]
    if a.get("kind") != b.get("kind"):
        return [_cause("data", f"{field}.kind", a.get("kind"), b.get("kind"),
                       f"data {label}: kind {format_value(a.get('kind'))} -> {format_value(b.get('kind'))}", "kind")]
    kind = a.get("kind")
    causes = []
    for key, what, how in _FINGERPRINT_FIELDS:
        if not _same(a.get(key, _MISSING), b.get(key, _MISSING)):
            causes.append(_cause("data", f"{field}.{key}", a.get(key), b.get(key),
                                 f"data {label}: {what} {format_value(a.get(key))} -> {format_value(b.get(key))}", how))
    if kind in ("list", "tuple", "dict") and isinstance(a.get("items"), (dict, list)) and isinstance(b.get("items"), (dict, list)):
        ia, ib = a["items"], b["items"]
        keys = list(ia) if isinstance(ia, dict) else list(range(len(ia)))
        if isinstance(ia, type(ib)) and (len(ia) == len(ib)):
            for k in keys:
                causes += _fingerprint_causes(f"{field}.items.{k}", f"{label}[{k!r}]", ia[k], ib[k])
            return causes
    if kind == "dataset":
        fa, fb = a.get("first_elements"), b.get("first_elements")
        if isinstance(fa, list) and isinstance(fb, list) and not _same(fa, fb):
            same_set = sorted(map(str, fa)) == sorted(map(str, fb))
            index = next((i for i, (x, y) in enumerate(zip(fa, fb, strict=False)) if x != y), min(len(fa), len(fb)))
            how = "the same elements in another order" if same_set else "other elements or another order"
            causes.append(_cause("data", f"{field}.first_elements", fa, fb,
                                 f"data {label}: dataset fed {how} (first difference at element {index})", "order"))
        return causes
    if causes or _same(a.get("sha256", _MISSING), b.get("sha256", _MISSING)):
        return causes
    sa, sb = a.get("sha256"), b.get("sha256")
    if a.get("rows_sha256") is not None and _same(a.get("rows_sha256"), b.get("rows_sha256")):
        msg = f"data {label}: same samples in another order (sha256 {format_value(sa)} -> {format_value(sb)}, rows_sha256 equal)"
        return [_cause("data", f"{field}.sha256", sa, sb, msg, "order")]
    if kind == "other":
        msg = f"data {label}: cannot be fingerprinted ({format_value(a.get('type'))}); its content may differ"
        return [_cause("data", f"{field}.type", a.get("type"), b.get("type"), msg, "content")] if a.get("type") != b.get("type") else []
    msg = f"data {label}: content changed (sha256 {format_value(sa)} -> {format_value(sb)}), same shape and dtype"
    return [_cause("data", f"{field}.sha256", sa, sb, msg, "content")]


def _order_causes(a: Any, b: Any) -> list[Cause]:
    """The sample order `fit` used per epoch (`data.order`), compared over the epochs both runs reached."""
    if not isinstance(a, list) or not isinstance(b, list):
        return []
    for i, (ea, eb) in enumerate(zip(a, b, strict=False)):  # the epochs both runs reached
        if not isinstance(ea, dict) or not isinstance(eb, dict):
            continue
        if not _same(ea.get("sha256"), eb.get("sha256")):
            epoch = ea.get("epoch", i)
            msg = (f"data order: the samples were fed in another order from epoch {epoch} "
                   f"(first indices {format_value(ea.get('head'))} -> {format_value(eb.get('head'))})")
            return [_cause("data", f"data.order.{i}", ea.get("head"), eb.get("head"), msg, "order")]
    return []


def _section_causes(ra: RunRecord, rb: RunRecord, section: str, category: str, label: str,
                    notes: list[str]) -> list[Cause]:
    if not _both_sections(ra, rb, section, notes):
        return []
    a, b = ra.section(section), rb.section(section)
    diffs = list(_diff_keys(a, b))
    top = {k: (va, vb) for k, va, vb in diffs if "." not in k}
    causes = []
    for key, va, vb in diffs:
        head, _, leaf = key.rpartition(".")
        if head == "optimizer_config" and leaf in top and _same(top[leaf], (va, vb)):
            continue  # learning_rate is also at the top level: say it once
        causes.append(_cause(category, f"{section}.{key}", va, vb, f"{label} {key}: {format_value(va)} -> {format_value(vb)}"))
    return causes


def _code_causes(ra: RunRecord, rb: RunRecord, notes: list[str]) -> list[Cause]:
    if not _both_sections(ra, rb, "code", notes):
        return []
    a, b = ra.section("code"), rb.section("code")
    causes = []
    if not _same(a.get("script_sha256"), b.get("script_sha256")):
        msg = f"code: the training script changed (script_sha256 {format_value(a.get('script_sha256'))} -> {format_value(b.get('script_sha256'))})"
        causes.append(_cause("code", "code.script_sha256", a.get("script_sha256"), b.get("script_sha256"), msg))
    ga, gb = a.get("git"), b.get("git")
    ga, gb = (ga if isinstance(ga, dict) else {}), (gb if isinstance(gb, dict) else {})
    for key in ("commit", "dirty"):
        if not _same(ga.get(key), gb.get(key)):
            causes.append(_cause("code", f"code.git.{key}", ga.get(key), gb.get(key),
                                 f"code git {key}: {format_value(ga.get(key))} -> {format_value(gb.get(key))}"))
    fa, fb = a.get("flags"), b.get("flags")
    if isinstance(fa, dict) and isinstance(fb, dict):
        for key, va, vb in _diff_keys(fa, fb):
            if key not in _IGNORED_FLAGS:
                causes.append(_cause("code", f"code.flags.{key}", va, vb, f"flag --{key}: {format_value(va)} -> {format_value(vb)}"))
    return causes


def _model_causes(ra: RunRecord, rb: RunRecord) -> list[Cause]:
    a, b = ra.section("model"), rb.section("model")
    causes = []
    for key, what in (("class", "class"), ("architecture_sha256", "architecture"), ("param_count", "parameter count")):
        if key in a and key in b and not _same(a[key], b[key]):
            causes.append(_cause("model", f"model.{key}", a[key], b[key], f"model {what}: {format_value(a[key])} -> {format_value(b[key])}"))
    return causes


def _policy_causes(ra: RunRecord, rb: RunRecord, notes: list[str]) -> list[Cause]:
    """seed/mode/threads as applied (naming what was asked when that differs too), then applied details."""
    if not _both_sections(ra, rb, "policy", notes):
        return []
    pa, pb, aa, ab = ra.policy, rb.policy, ra.applied, rb.applied
    causes = []
    for key in _POLICY_KEYS:
        asked_differs = not _same(pa.get(key, _MISSING), pb.get(key, _MISSING))
        if aa and ab and not _same(aa.get(key, _MISSING), ab.get(key, _MISSING)):
            va, vb = aa.get(key, _MISSING), ab.get(key, _MISSING)
            asked_other = not (_same(pa.get(key), va) and _same(pb.get(key), vb))
            extra = f" (asked {format_value(pa.get(key))} -> {format_value(pb.get(key))})" if asked_differs and asked_other else ""
            if key == "seed" and not asked_differs and pa.get("seed") is None:
                extra = " (no seed given: each run drew its own)"
            causes.append(_cause("policy", f"applied.{key}", va, vb, f"{key}: {format_value(va)} -> {format_value(vb)}{extra}"))
        elif asked_differs:
            va, vb = pa.get(key, _MISSING), pb.get(key, _MISSING)
            causes.append(_cause("policy", f"policy.{key}", va, vb, f"{key} asked: {format_value(va)} -> {format_value(vb)}"))
    if aa and ab:
        details = {k: v for k, v in aa.items() if k not in _POLICY_KEYS and k not in ("warnings", "isa_pin")}
        others = {k: v for k, v in ab.items() if k not in _POLICY_KEYS and k not in ("warnings", "isa_pin")}
        differing = list(_diff_keys(details, others))
        if differing and not _same(aa.get("mode"), ab.get("mode")):
            # A mode change changes what is applied; one line says so instead of one per detail.
            keys = sorted({key.split(".")[0] for key, _, _ in differing})
            causes.append(_cause("policy", "applied", None, None,
                                 f"applied settings that follow from the mode differ too: {', '.join(keys)}", kind="derived"))
        else:
            for key, va, vb in differing:
                causes.append(_cause("policy", f"applied.{key}", va, vb, f"applied {key}: {format_value(va)} -> {format_value(vb)}"))
    elif aa or ab:
        notes.append(f"run {'A' if not aa else 'B'} has no 'applied' section (older or partial record): compared what was asked only")
    return causes


def _init_causes(ra: RunRecord, rb: RunRecord, earlier: Sequence[Cause]) -> list[Cause]:
    ia, ib = ra.initial_weights_sha256, rb.initial_weights_sha256
    if ia is None or ib is None or ia == ib:
        return []
    if any(c.category == "policy" and c.field.endswith(".seed") for c in earlier):
        why = "expected with a different seed"
    elif any(c.category in ("model", "code") for c in earlier):
        why = "the model or code differs"
    elif ra.applied.get("seed", ra.policy.get("seed")) is None and rb.applied.get("seed", rb.policy.get("seed")) is None:
        why = "no seed: nothing was seeded"
    else:
        why = "same seed, so the model was built before seeding or outside keras_repro.fit's builder"
    msg = f"initial weights differ ({format_value(ia)} -> {format_value(ib)}): the model was initialised differently ({why})"
    return [_cause("initialisation", "model.initial_weights_sha256", ia, ib, msg)]


_TOPOLOGY_KEYS = ("strategy", "replicas", "num_workers", "cluster", "local_replicas")


def _distribution_causes(ra: RunRecord, rb: RunRecord) -> list[Cause]:
    """tf.distribute topology (a hardware cause: the replica count changes the bits), then worker identity."""
    a, b = ra.get("distribution"), rb.get("distribution")
    a, b = (a if isinstance(a, dict) else {}), (b if isinstance(b, dict) else {})
    if not a and not b:
        return []
    if not a or not b:
        one = a or b
        what = f"{one.get('strategy')} with {one.get('replicas')} replicas"
        return [_cause("hardware", "distribution", a.get("strategy"), b.get("strategy"),
                       f"distribution: {'none' if not a else what} -> {'none' if not b else what}")]
    causes = []
    for key in _TOPOLOGY_KEYS:
        if not _same(a.get(key), b.get(key)):
            causes.append(_cause("hardware", f"distribution.{key}", a.get(key), b.get(key),
                                 f"distribution {key}: {format_value(a.get(key))} -> {format_value(b.get(key))}"))
    if not _same(a.get("worker_index"), b.get("worker_index")):
        causes.append(_cause("hardware", "distribution.worker_index", a.get("worker_index"), b.get("worker_index"),
                             f"these records come from different workers ({format_value(a.get('worker_index'))} -> "
                             f"{format_value(b.get('worker_index'))}) of a distributed job", kind="identity"))
    return causes


def _environment_causes(ra: RunRecord, rb: RunRecord, notes: list[str]) -> list[Cause]:
    if not _both_sections(ra, rb, "environment", notes):
        return []
    a, b = ra.section("environment"), rb.section("environment")
    versions, hardware, env = [], [], []
    for key, va, vb in _diff_keys({k: v for k, v in a.items() if k not in _OWN_ENV_KEYS},
                                  {k: v for k, v in b.items() if k not in _OWN_ENV_KEYS}):
        top = key.split(".")[0]
        if top in _VERSION_KEYS:
            versions.append(_cause("versions", f"environment.{key}", va, vb, f"version {key}: {format_value(va)} -> {format_value(vb)}"))
        else:
            hardware.append(_cause("hardware", f"environment.{key}", va, vb, f"hardware {key}: {format_value(va)} -> {format_value(vb)}"))
    ea, eb = a.get("env"), b.get("env")
    if isinstance(ea, dict) and isinstance(eb, dict):
        for key in list(ea) + [k for k in eb if k not in ea]:
            va, vb = ea.get(key), eb.get(key)
            if not _same(va, vb):
                env.append(_cause("environment", f"environment.env.{key}", va, vb,
                                  f"environment variable {key}: {_env_fmt(va)} -> {_env_fmt(vb)}"))
    return versions + _package_causes(a, b, versions) + hardware + _isa_causes(ra, rb) + env


# --- CPU instruction set and packages (docs/portability.md) ---------------------------------------

_OWN_ENV_KEYS = ("env", "cpu_flags", "packages", "isa_probe")
# Packages whose version most often changes numbers, in this order; the others follow by name.
_FRAMEWORKS = ("tensorflow", "tensorflow-cpu", "tf-nightly", "tf-nightly-cpu", "tensorflow-intel", "keras",
               "numpy", "ml-dtypes", "protobuf", "jax", "jaxlib", "torch")
# Flags named first when a CPU feature set is summarised.
_HEADLINE_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                   "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def _package_causes(a: Mapping[str, Any], b: Mapping[str, Any], versions: Sequence[Cause]) -> list[Cause]:
    """Every package whose version differs (or that only one run had), framework packages first.

    A framework whose top-level version (`environment.tensorflow`, ...) differs is said once, there.
    """
    pa, pb = a.get("packages"), b.get("packages")
    if not isinstance(pa, dict) or not isinstance(pb, dict):
        return []
    said = {c.field.split(".")[-1] for c in versions}
    rank = {name: i for i, name in enumerate(_FRAMEWORKS)}
    causes = []
    for name in sorted(set(pa) | set(pb), key=lambda n: (rank.get(n, len(rank)), n)):
        va, vb = pa.get(name), pb.get(name)
        if _same(va, vb) or _framework_of(name) in said:
            continue
        causes.append(_cause("versions", f"environment.packages.{name}", va, vb,
                             f"package {name}: {va or 'not installed'} -> {vb or 'not installed'}"))
    return causes


def _framework_of(name: str) -> str:
    return "tensorflow" if name.startswith(("tensorflow", "tf-nightly")) else name


def _isa_causes(ra: RunRecord, rb: RunRecord) -> list[Cause]:
    """Another CPU feature set (with what the ISA pin makes of it), and other kernels seen by the probe."""
    a, b = ra.section("environment"), rb.section("environment")
    causes = []
    fa, fb = a.get("cpu_flags"), b.get("cpu_flags")
    if isinstance(fa, list) and isinstance(fb, list) and set(fa) != set(fb):
        only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
        msg = (f"CPU instruction set: {_summary(fa)} -> {_summary(fb)} (only in run A: {' '.join(only_a) or 'none'}; "
               f"only in run B: {' '.join(only_b) or 'none'}){_pin_note(ra, rb, fa, fb)}")
        causes.append(_cause("hardware", "environment.cpu_flags", fa, fb, msg))
    qa, qb = a.get("isa_probe"), b.get("isa_probe")
    if isinstance(qa, dict) and isinstance(qb, dict) and not _same(qa.get("digest"), qb.get("digest")):
        la, lb = qa.get("level") or f"unknown ({qa.get('digest')})", qb.get("level") or f"unknown ({qb.get('digest')})"
        causes.append(_cause("hardware", "environment.isa_probe.level", qa.get("level"), qb.get("level"),
                             f"CPU kernels that ran (probe): {la} -> {lb}"))
    return causes


def _summary(flags: Sequence[str]) -> str:
    have = set(flags)
    return " ".join(f for f in _HEADLINE_FLAGS if f in have) or "none of " + " ".join(_HEADLINE_FLAGS[:4])


def _pin_note(ra: RunRecord, rb: RunRecord, fa: Sequence[str], fb: Sequence[str]) -> str:
    from keras_repro.isa import LEVELS, missing_features

    ia, ib = ra.applied.get("isa"), rb.applied.get("isa")
    if ia == ib and ia in LEVELS and not missing_features(ia, fa) and not missing_features(ia, fb):
        return f"; both runs pinned {ia}, which both CPUs have, so this alone should not change the bits"
    unpinned = [label for label, level in (("A", ia), ("B", ib)) if level not in LEVELS]
    if unpinned:
        return f"; run {' and '.join(unpinned)} did not pin an instruction set, so its bits follow these features"
    return ""


def _env_fmt(value: Any) -> str:
    return "unset" if value is None else repr(value)


def _mode(rec: RunRecord) -> str | None:
    mode = rec.applied.get("mode", rec.policy.get("mode"))
    return mode if isinstance(mode, str) else None


# --- leftover nondeterminism ----------------------------------------------------------------------

_LEFTOVER = {
    "off": "mode 'off' seeds nothing, so initialisation, shuffling and dropout are random in every run. "
           "Fix: pass a seed with mode 'seeded' or stricter",
    "seeded": "mode 'seeded' seeds the RNGs but enables no op determinism and leaves thread counts unfixed, "
              "so parallel reductions may add up in another order. Fix: use mode 'deterministic' or 'bitwise'",
    "deterministic": "mode 'deterministic' enables op determinism and fixes the thread count per machine, but "
                     "does not pin oneDNN or devices. Fix: use mode 'bitwise' (keras-repro run --mode bitwise)",
    "bitwise": "mode 'bitwise' should make these runs bit-identical: an unseeded random source in user code "
               "(e.g. np.random.default_rng() without a seed, time- or hash-dependent code) or a keras_repro bug; "
               "please report it with both run.json files",
}


def leftover_message(mode: Any) -> str:
    """What a mode still allows to vary, and the fix.

    Example:
        >>> leftover_message("seeded").startswith("mode 'seeded' seeds the RNGs")
        True
    """
    if mode is None:
        return "the mode is not recorded, so nothing says which sources it fixes"
    return _LEFTOVER.get(mode, f"mode {mode!r} is unknown; nothing says which sources it fixes")


def _leftover(ra: RunRecord, rb: RunRecord) -> Cause:
    mode = _mode(ra)
    msg = f"leftover nondeterminism: nothing recorded differs, yet the results do; {leftover_message(mode)}"
    return Cause("nondeterminism", "applied.mode", mode, _mode(rb), msg)

