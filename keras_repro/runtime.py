"""Applying a `Policy` to this process: seeds, op determinism, threads, devices, oneDNN.

Every process-wide effect of keras_repro happens here, in one order, and `configure` returns what was
really applied (read back from TensorFlow where it can be), which the run record stores.

Order matters:
1. `TF_ENABLE_ONEDNN_OPTS=0` (bitwise) must be in the environment before TensorFlow is imported, and the
   CPU instruction-set pin (`ONEDNN_MAX_CPU_ISA`, `XLA_FLAGS`; `keras_repro.isa`) before its first op;
2. GPUs are hidden and thread counts fixed before TF's runtime starts (the first op, or building a layer);
3. op determinism can be switched on any time before the model is compiled and traced;
4. seeds last, right before models and datasets are built: Keras 3 draws each layer's default seed from
   Python's `random` when the layer is built, and tf.data ops take theirs from TF's global seed.

Example:
    >>> import keras_repro
    >>> applied = keras_repro.configure(seed=42, mode="bitwise")   # doctest: +SKIP
    >>> applied["intra_op_threads"], applied["onednn"]             # doctest: +SKIP
    (1, 'off')
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from keras_repro import _compat
from keras_repro.errors import PolicyConflictError, ReproducibilityError, TooLateError
from keras_repro.launcher import default_threads
from keras_repro.policy import Policy, draw_seed, resolve

__all__ = ["configure", "configured_policy", "runtime_started", "seed_everything", "import_tensorflow"]

logger = logging.getLogger("keras_repro")

_RUN_HINT = "launch the script with `keras-repro run --mode {mode} -- python your_script.py`"


class _ProcessState:
    """The policy this process runs under. TensorFlow's thread pools and devices are process-wide and
    fixed at start-up, so this one record of what was applied is state TF itself forces on us."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.policy: Policy | None = None  # with the seed actually used
        self.applied: dict[str, Any] | None = None
        self.isa_undo: dict[str, str | None] = {}  # variables the ISA pin set, with their values before


_STATE = _ProcessState()


def import_tensorflow() -> Any:
    """Imports TensorFlow, or says which pip command installs it."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ReproducibilityError(
            f"TensorFlow is not installed ({e}). keras_repro does not install it for you, so that an existing "
            "tensorflow / tensorflow-cpu / nightly is never doubled. Fix: pip install 'keras-repro[cpu]' "
            "(tensorflow-cpu) or 'keras-repro[tensorflow]'."
        ) from None
    return tf


def tf_imported() -> bool:
    return "tensorflow" in sys.modules


def runtime_started() -> bool:
    """True once TensorFlow's eager context exists (after the first op, device listing or layer build)."""
    if not tf_imported():
        return False
    return _compat.tf_runtime_started()


def configured_policy() -> Policy | None:
    """The policy this process was configured with (its seed as used), or None."""
    return _STATE.policy


def configured_applied() -> dict[str, Any] | None:
    return dict(_STATE.applied) if _STATE.applied is not None else None


def configure(seed: Any = None, mode: Any = None, threads: Any = None, isa: Any = None) -> dict[str, Any]:
    """Applies a reproducibility policy to this process; call it first, before building models or data.

    Arguments not given come from absl flags (`import keras_repro.flags`), then from the environment
    (`KERAS_REPRO_SEED/MODE/THREADS`, set by `keras-repro run`), then the defaults (mode
    "deterministic", a seed drawn from the OS and printed so the run can be repeated).

    Calling it again with the same policy does nothing. A different policy is applied while TensorFlow's
    runtime has not started; after that it raises `PolicyConflictError`.

    Args:
        seed: int in [0, 2**32 - 1] or None.
        mode: "off" (record only), "seeded", "deterministic" or "bitwise".
        threads: intra-op (and inter-op) thread count; None for the mode's default (bitwise: 1,
            deterministic: the usable cores).
        isa: the CPU instruction set to pin for oneDNN and XLA ("AVX2", "AVX512_CORE", ... or "native"
            for none); None for the mode's default (bitwise: "AVX2" on x86-64, docs/portability.md).

    Returns:
        What was applied: the keys `seed`, `mode`, `threads` (as applied) plus details (`op_determinism`,
        `intra_op_threads`, `inter_op_threads`, `devices`, `onednn`, `isa`, `isa_pin`, `seeded`, `seed_source`,
        `warnings`).

    Raises:
        InvalidPolicyError: a bad seed, mode, thread count or instruction set (`fit` also raises it for its own arguments).
        ReproducibilityError: the CPU lacks the instruction set to pin, or ONEDNN_MAX_CPU_ISA/XLA_FLAGS cap another.
        TooLateError: threads, devices or oneDNN can no longer be set because TensorFlow already started.
        PolicyConflictError: a different policy after TensorFlow's runtime started.

    Example:
        >>> import keras_repro
        >>> keras_repro.configure(seed=42, mode="bitwise")["threads"]   # doctest: +SKIP
        1
    """
    policy, sources = resolve(seed, mode, threads, isa=isa, flag_values=_flag_values())
    return apply_policy(policy, sources)


def _flag_values() -> dict[str, Any] | None:
    flags_module = sys.modules.get("keras_repro.flags")
    if flags_module is None:
        return None
    return flags_module.parsed_policy_values()


def apply_policy(policy: Policy, sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Applies an already validated policy (see `configure`); returns what was applied."""
    sources = dict(sources or {})
    with _STATE.lock:
        current = _STATE.policy
        if current is not None and _same_policy(current, policy):
            assert _STATE.applied is not None
            return dict(_STATE.applied)
        if current is not None and runtime_started():
            raise PolicyConflictError(
                f"This process already runs under {_describe(current)}; {_describe(policy)} was asked after "
                "TensorFlow's runtime started, when thread pools and devices can no longer change. "
                "Fix: call keras_repro.configure(...) once, first thing in the script, with the policy you want "
                f"(or pass the same values to fit), or {_RUN_HINT.format(mode=policy.mode)}."
            )
        if policy.seed is None and policy.mode != "off":
            policy = Policy(seed=draw_seed(), mode=policy.mode, threads=policy.threads, isa=policy.isa)
            sources["seed"] = "drawn"
            logger.warning(
                "keras_repro: no seed given; using seed=%d. Pass seed=%d (or --repro_seed=%d) to repeat this run.",
                policy.seed, policy.seed, policy.seed,
            )
        applied = _apply(policy)
        applied["seed_source"] = sources.get("seed", "explicit") if policy.seed is not None else "none"
        _STATE.policy = policy
        _STATE.applied = applied
        for message in applied["warnings"]:
            logger.warning("keras_repro: %s", message)
        return dict(applied)


def _same_policy(current: Policy, asked: Policy) -> bool:
    seed_ok = asked.seed is None or asked.seed == current.seed
    return seed_ok and asked.mode == current.mode and asked.threads == current.threads and asked.isa == current.isa


def _describe(policy: Policy) -> str:
    isa = f", isa={policy.isa!r}" if policy.isa is not None else ""
    return f"mode={policy.mode!r}, seed={policy.seed}, threads={policy.threads}{isa}"


def _apply(policy: Policy) -> dict[str, Any]:
    warnings: list[str] = []
    applied: dict[str, Any] = {
        "seed": None,
        "mode": policy.mode,
        "threads": None,
        "op_determinism": False,
        "intra_op_threads": None,
        "inter_op_threads": None,
        "devices": "all",
        "onednn": "default",
        "isa": None,
        "isa_pin": None,
        "seeded": [],
        "warnings": warnings,
    }
    if policy.mode == "off":  # record only: change nothing in the process
        if policy.threads is not None:
            warnings.append(f"mode 'off' changes nothing: threads={policy.threads} was recorded, not applied")
        if policy.isa is not None:
            warnings.append(f"mode 'off' changes nothing: isa={policy.isa!r} was recorded, not applied")
        return applied

    applied["isa"], applied["isa_pin"] = _pin_isa(policy, warnings)  # before TF's first op

    if policy.mode == "bitwise":
        applied["onednn"] = _disable_onednn()
        if os.environ.get("PYTHONHASHSEED") in (None, "", "random"):
            warnings.append(
                "PYTHONHASHSEED is not set: iterating a set of strings in your code may differ between "
                "processes (Keras and keras_repro do not depend on it). Fix: launch with `keras-repro run`."
            )
    tf = import_tensorflow()
    if policy.mode == "bitwise":
        applied["devices"] = _hide_gpus(tf)

    intra = default_threads(policy)
    if intra is not None:
        applied["intra_op_threads"], applied["inter_op_threads"] = _fix_threads(tf, intra, intra, policy.mode)
        applied["threads"] = applied["intra_op_threads"]

    if policy.mode in ("deterministic", "bitwise"):
        tf.config.experimental.enable_op_determinism()
        applied["op_determinism"] = True
    else:
        _disable_op_determinism(tf)

    seed_everything(policy.seed)
    applied["seed"] = policy.seed
    applied["seeded"] = ["python", "numpy", "tensorflow", "keras"]
    return applied


def seed_everything(seed: int | None) -> None:
    """Seeds Python's `random`, NumPy's global RNG, TF's global seed and Keras's global SeedGenerator.

    Equivalent to `keras.utils.set_random_seed(seed)`. Call it right before building a model: Keras 3
    layers without an explicit seed draw theirs from Python's `random` when built.
    """
    if seed is None:
        return
    import keras

    keras.utils.set_random_seed(int(seed))


def _pin_isa(policy: Policy, warnings: list[str]) -> tuple[str | None, str]:
    """Pins the CPU instruction set in this process's environment (see `keras_repro.isa`).

    oneDNN reads `ONEDNN_MAX_CPU_ISA` at its first kernel and XLA reads `XLA_FLAGS` at its first compile,
    so the pin holds if it is set before TensorFlow's first op, even after `import tensorflow`
    (measured, docs/tf-notes.md). A pin set by an earlier `configure` of this process is undone first.
    Returns the applied level and a description of the pin.
    """
    from keras_repro import isa

    level = policy.isa if policy.isa is not None else (isa.DEFAULT_LEVEL if policy.mode == "bitwise" else isa.NATIVE)
    started = runtime_started()
    if not started:
        for name, before in _STATE.isa_undo.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        _STATE.isa_undo = {}
    pin = isa.pin_environment(level, os.environ, explicit=policy.isa is not None)
    if pin.warning:
        warnings.append(pin.warning)
    if pin.changes and started:
        wanted = " ".join(f"{k}={v!r}" for k, v in pin.changes.items())
        raise TooLateError(
            f"The policy pins the CPU instruction set {level}, but TensorFlow's runtime already started, and "
            "oneDNN and XLA read their caps (ONEDNN_MAX_CPU_ISA, XLA_FLAGS) only at their first kernel. "
            f"Fix: call keras_repro.configure(...) before running any op, export {wanted} before starting "
            f"Python, or {_RUN_HINT.format(mode=policy.mode)}."
        )
    for name, value in pin.changes.items():
        _STATE.isa_undo.setdefault(name, os.environ.get(name))
        os.environ[name] = value
    return pin.level, pin.description


def _disable_onednn() -> str:
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if value not in (None, "", "0"):
        raise ReproducibilityError(
            f"TF_ENABLE_ONEDNN_OPTS={value} is set, but mode 'bitwise' needs oneDNN off: its kernels are chosen "
            "by the CPU's features, so the same script gives other bits on another machine. "
            "Fix: unset TF_ENABLE_ONEDNN_OPTS (or set it to 0), or use mode='deterministic'."
        )
    if not tf_imported():
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
        return "off"
    if _compat.onednn_enabled():
        raise TooLateError(
            "Mode 'bitwise' needs oneDNN off, but TensorFlow was imported with oneDNN on (this CPU turns it on by "
            "default), and TF reads TF_ENABLE_ONEDNN_OPTS only when it is imported. "
            "Fix: call keras_repro.configure(...) before `import tensorflow`/`import keras`, set "
            f"TF_ENABLE_ONEDNN_OPTS=0 before starting Python, or {_RUN_HINT.format(mode='bitwise')}."
        )
    return "off"


def _hide_gpus(tf: Any) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu-only"
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        raise TooLateError(
            f"Mode 'bitwise' runs on the CPU only, but TensorFlow's runtime already started with {len(gpus)} GPU(s) "
            "visible, and visible devices cannot change after that. "
            f"Fix: call keras_repro.configure(...) before building any model or running any op, or {_RUN_HINT.format(mode='bitwise')}."
        ) from None
    return "cpu-only"


def _fix_threads(tf: Any, intra: int, inter: int, mode: str) -> tuple[int, int]:
    threading_api = tf.config.threading
    for name, wanted, setter, getter, env_name in (
        ("intra-op", intra, threading_api.set_intra_op_parallelism_threads,
         threading_api.get_intra_op_parallelism_threads, "TF_NUM_INTRAOP_THREADS"),
        ("inter-op", inter, threading_api.set_inter_op_parallelism_threads,
         threading_api.get_inter_op_parallelism_threads, "TF_NUM_INTEROP_THREADS"),
    ):
        try:
            setter(wanted)
        except RuntimeError:
            current = getter()
            from_env = os.environ.get(env_name)
            if current == wanted or (current == 0 and from_env == str(wanted)):
                continue
            raise TooLateError(
                f"Mode {mode!r} fixes the {name} thread count at {wanted}, but TensorFlow's runtime already started "
                f"with {current or 'its default (all cores)'}; thread pools cannot change after that, and the "
                "intra-op count changes the numbers. "
                f"Fix: call keras_repro.configure(...) before building any model or running any op, or {_RUN_HINT.format(mode=mode)}."
            ) from None
    got_intra = threading_api.get_intra_op_parallelism_threads() or _env_int("TF_NUM_INTRAOP_THREADS")
    got_inter = threading_api.get_inter_op_parallelism_threads() or _env_int("TF_NUM_INTEROP_THREADS")
    if got_intra != intra or got_inter != inter:  # read back: prove they hold
        raise TooLateError(
            f"TensorFlow reports intra-op={got_intra}, inter-op={got_inter} threads after keras_repro set "
            f"{intra}/{inter}. Fix: {_RUN_HINT.format(mode=mode)}."
        )
    return got_intra, got_inter


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return None


def op_determinism_enabled() -> bool:
    """Whether TF op determinism is on (TF has no public getter; its own config module has one)."""
    return _compat.op_determinism_enabled()


def _disable_op_determinism(tf: Any) -> None:
    """`seeded` after `deterministic` in the same (not yet started) process: switch it off again."""
    if _compat.op_determinism_enabled():
        _compat.disable_op_determinism()


# --- autolog ---
def policy_being_applied() -> bool:
    """True while `apply_policy` runs (in this or another thread).

    `keras_repro.autolog` applies its policy when TensorFlow finishes importing; when that import
    happens inside `configure()` (which imports TensorFlow itself), the script's own policy is the one
    being applied, and autolog leaves it alone.
    """
    return _STATE.lock.locked()
