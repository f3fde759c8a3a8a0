"""The CPU instruction set (ISA) that mode "bitwise" pins, so that bits hold across x86-64 machines.

TensorFlow's CPU matmuls and convolutions (Eigen contractions, even with `TF_ENABLE_ONEDNN_OPTS=0`)
call oneDNN's GEMM, which picks its kernel from the CPU's features at run time; XLA generates CPU code
for the host's features. The same script therefore gives other bits on an AVX-512 server than on an
AVX2 laptop (docs/portability.md has the measurements). Capping both at one level removes that:
`ONEDNN_MAX_CPU_ISA=<level>` and `--xla_cpu_max_isa=<level>` in `XLA_FLAGS`, set before TensorFlow
runs its first op (both are read lazily: at oneDNN's first kernel and XLA's first compile).

This module is TensorFlow-free except `probe()`, which runs one tiny matmul once the runtime started.

Example:
    >>> pin = pin_environment("AVX2", environ={}, cpu_flags=["avx", "avx2", "fma"], machine="x86_64")
    >>> pin.changes
    {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'XLA_FLAGS': '--xla_cpu_max_isa=AVX2'}
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import re
import shlex
from typing import Any, Mapping, Sequence

from keras_repro.errors import InvalidPolicyError, ReproducibilityError

__all__ = [
    "LEVELS",
    "DEFAULT_LEVEL",
    "NATIVE",
    "Pin",
    "validate_isa",
    "read_cpu_flags",
    "is_x86",
    "missing_features",
    "merge_xla_flags",
    "pin_environment",
    "probe",
    "gemm_level",
]

ONEDNN_VAR = "ONEDNN_MAX_CPU_ISA"
ONEDNN_OLD_VAR = "DNNL_MAX_CPU_ISA"  # oneDNN < 2 spelling, still honoured
XLA_VAR = "XLA_FLAGS"
XLA_FLAG = "--xla_cpu_max_isa"
NATIVE = "native"  # no pin: the CPU's own best instruction set (bits per CPU)


@dataclasses.dataclass(frozen=True)
class Level:
    """One pinnable level: its oneDNN name (keras_repro's name too), XLA's name, the CPU flags it needs."""

    name: str
    xla: str
    needs: tuple[str, ...]


# Ordered from oldest to newest. oneDNN names (ONEDNN_MAX_CPU_ISA) and XLA's (--xla_cpu_max_isa) differ.
_LEVELS = (
    Level("SSE41", "SSE4_2", ("sse4_1", "sse4_2")),
    Level("AVX", "AVX", ("avx",)),
    Level("AVX2", "AVX2", ("avx", "avx2", "fma")),
    Level("AVX512_CORE", "AVX512", ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq")),
    Level("AVX512_CORE_VNNI", "AVX512_VNNI", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni")),
    Level("AVX512_CORE_BF16", "AVX512_BF16", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16")),
)
LEVELS = {level.name: level for level in _LEVELS}
# AVX2 (+FMA): every x86-64 CPU of the last decade has it (Intel Haswell 2013, AMD Excavator 2015 / Zen),
# and on an AVX2 machine it equals the default. Measured costs and bit differences: docs/portability.md.
DEFAULT_LEVEL = "AVX2"

# ISA extensions that can change which kernels run or how floats are rounded, as /proc/cpuinfo spells them.
_ISA_FLAG = re.compile(r"^(sse\d?(_\d|a)?|ssse3|pni|avx.*|fma4?|f16c|amx.*|xop)$")
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def validate_isa(value: Any, *, source: str = "isa") -> str | None:
    """Returns the canonical level name (or "native"), None for None; raises naming the valid values.

    Example:
        >>> validate_isa("avx2")
        'AVX2'
    """
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else None
    if text and text.lower() == NATIVE:
        return NATIVE
    if text and text.upper() in LEVELS:
        return text.upper()
    raise InvalidPolicyError(
        f"Expected `{source}` to be one of {', '.join(LEVELS)} or '{NATIVE}' (no pin). "
        f"Received: {source}={value!r} (of type {type(value).__name__}). "
        f"Fix: pass e.g. {source}='{DEFAULT_LEVEL}' (mode 'bitwise' pins {DEFAULT_LEVEL} by default)."
    )


def read_cpu_flags(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's ISA feature flags (sorted, lowercase, as /proc/cpuinfo spells them); None if unknown.

    Example:
        >>> read_cpu_flags("flags\\t\\t: fpu sse2 avx2 fma avx512f aes")
        ['avx2', 'avx512f', 'fma', 'sse2']
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read(1 << 16)  # the first CPU's block is enough
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return sorted({flag for flag in value.lower().split() if _ISA_FLAG.match(flag)})
    return None


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in _X86


def missing_features(level: str, cpu_flags: Sequence[str]) -> list[str]:
    """The CPU flags `level` needs that `cpu_flags` lacks.

    Example:
        >>> missing_features("AVX512_CORE", ["avx", "avx2", "fma"])
        ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq']
    """
    have = set(cpu_flags)
    return [flag for flag in LEVELS[level].needs if flag not in have]


def merge_xla_flags(existing: str | None, level: str) -> str:
    """The user's `XLA_FLAGS` plus `--xla_cpu_max_isa=<level's XLA name>`; refuses a conflicting cap.

    Example:
        >>> merge_xla_flags("--xla_dump_to=/tmp/x", "AVX512_CORE")
        '--xla_dump_to=/tmp/x --xla_cpu_max_isa=AVX512'
    """
    wanted = LEVELS[level].xla
    existing = (existing or "").strip()
    for token in shlex.split(existing):
        name, _, value = token.partition("=")
        if name == XLA_FLAG:
            if value.upper() == wanted:
                return existing
            raise ReproducibilityError(
                f"XLA_FLAGS already holds {token}, but the policy pins the CPU instruction set {level} "
                f"(XLA: {XLA_FLAG}={wanted}); keras_repro never lowers or raises a cap silently. "
                f"Fix: remove {XLA_FLAG} from XLA_FLAGS, or pin that level with isa=... "
                "(--repro_isa / KERAS_REPRO_ISA) matching it."
            )
    return f"{existing} {XLA_FLAG}={wanted}".strip()


@dataclasses.dataclass(frozen=True)
class Pin:
    """What pinning a level means for a process: the variables to set, and the applied value.

    Attributes:
        level: the applied value for the record: a level name, "native" (not pinned) or None (not x86).
        changes: environment variables to set (empty when nothing is pinned or all are set already).
        description: one line for the record, e.g. "ONEDNN_MAX_CPU_ISA=AVX2 --xla_cpu_max_isa=AVX2".
        warning: a note for the record (a non-x86 CPU), or None.
    """

    level: str | None
    changes: dict[str, str]
    description: str
    warning: str | None = None


def pin_environment(
    level: str | None,
    environ: Mapping[str, str],
    *,
    cpu_flags: Sequence[str] | None = None,
    machine: str | None = None,
    explicit: bool = True,
) -> Pin:
    """The variables that pin `level` in `environ`; refuses a CPU without it or a conflicting user cap.

    Args:
        level: a name from `LEVELS`, "native" (no pin) or None (no pin).
        environ: the environment the pin goes into (read only; apply `Pin.changes` yourself).
        cpu_flags: the CPU's flags (default: this machine's, from /proc/cpuinfo).
        machine: the architecture (default `platform.machine()`).
        explicit: the user asked for `level` (refused on a non-x86 CPU) rather than a mode's default
            (recorded as "per architecture" there).

    Raises:
        ReproducibilityError: the CPU lacks the level, or ONEDNN_MAX_CPU_ISA/DNNL_MAX_CPU_ISA/XLA_FLAGS
            already cap another level.
    """
    if level in (None, NATIVE):
        return Pin(level, {}, "not pinned: the CPU's own instruction set")
    machine = machine or platform.machine()
    if not is_x86(machine):
        if explicit:
            raise ReproducibilityError(
                f"isa={level!r} is an x86-64 instruction set, but this CPU is {machine}. "
                "Fix: leave isa unset (bitwise bits are then per architecture) or pass isa='native'."
            )
        return Pin(None, {}, f"not pinned: {machine} is not x86-64",
                   f"bitwise bits are per CPU architecture: this is {machine}, where no instruction-set pin "
                   "exists, so records from x86-64 machines will differ from this one")
    flags = read_cpu_flags() if cpu_flags is None else list(cpu_flags)
    lacking = missing_features(level, flags or [])
    if flags is not None and lacking:
        lower = [name for name in LEVELS if not missing_features(name, flags)]
        raise ReproducibilityError(
            f"The policy pins the CPU instruction set {level}, but this CPU lacks {' '.join(lacking)} "
            f"(it supports up to {lower[-1] if lower else 'none of ' + ', '.join(LEVELS)}); keras_repro never "
            "downgrades silently, because a lower level gives other bits. Fix: run on a CPU with "
            f"{level}, or pin a level every machine of yours has (isa='{lower[-1] if lower else 'native'}', "
            "--repro_isa, KERAS_REPRO_ISA) and rerun the reference too."
        )
    changes: dict[str, str] = {}
    for name in (ONEDNN_VAR, ONEDNN_OLD_VAR):
        current = environ.get(name, "").strip()
        if current and current.upper() != level:
            raise ReproducibilityError(
                f"{name}={current} is set, but the policy pins the CPU instruction set {level} "
                f"({ONEDNN_VAR}={level}); keras_repro never lowers or raises a cap silently. "
                f"Fix: unset {name}, or pin that level with isa='{current.upper()}' (--repro_isa / "
                "KERAS_REPRO_ISA) on every machine you compare."
            )
    if environ.get(ONEDNN_VAR, "").strip().upper() != level:
        changes[ONEDNN_VAR] = level
    merged = merge_xla_flags(environ.get(XLA_VAR), level)
    if merged != (environ.get(XLA_VAR) or "").strip():
        changes[XLA_VAR] = merged
    return Pin(level, changes, f"{ONEDNN_VAR}={level} {XLA_FLAG}={LEVELS[level].xla}")


# --- the probe ------------------------------------------------------------------------------------
# A 4x256 @ 256x4 float32 matmul on fixed inputs: oneDNN's GEMM kernels of each level accumulate in
# another order, so its bits name the level that really ran (thread count 1 or 2 gives the same bits).
# SHA-256 prefixes measured per TensorFlow version (its bundled oneDNN); other versions: unverified.
_PROBE_DIGESTS = {
    "2.21": {
        "28437924b1c2": "SSE41",
        "b4ef2d36f964": "AVX",
        "8e8133ce9a21": "AVX2",
        "3b4133ce1394": "AVX512_CORE",  # also what AVX512_CORE_VNNI/_BF16 run for float32
    },
}


def gemm_level(level: str) -> str:
    """The level whose float32 GEMM kernels run under a cap (VNNI/BF16 add no float32 kernels).

    Example:
        >>> gemm_level("AVX512_CORE_BF16")
        'AVX512_CORE'
    """
    return "AVX512_CORE" if level.startswith("AVX512_CORE") else level


def _probe_inputs() -> tuple[Any, Any]:
    """Fixed inputs in [-1, 1) from a 31-bit LCG (no NumPy RNG, whose streams may change)."""
    import numpy as np

    def lcg(n: int, state: int) -> Any:
        out = np.empty(n, dtype=np.float64)
        for i in range(n):
            state = (state * 1103515245 + 12345) % 2**31
            out[i] = state
        return (out / 2**30 - 1.0).astype(np.float32)

    return lcg(4 * 256, 1).reshape(4, 256), lcg(256 * 4, 2).reshape(256, 4)


def probe(tf: Any = None) -> dict[str, Any]:
    """Which oneDNN level this process's matmuls really run, read from the bits of one tiny matmul.

    Runs an op, so call it only once TensorFlow's runtime has started (keras_repro does, when it
    writes a record). Returns {"level": name or None, "digest": ..., "reference": ...}: `level` is None
    when no digest was measured for this TensorFlow version, or the bits match no known level.

    Example:
        >>> probe()["level"]          # doctest: +SKIP
        'AVX2'
    """
    if tf is None:
        import tensorflow as tf
    version = ".".join(str(tf.__version__).split(".")[:2])
    a, b = _probe_inputs()
    with tf.device("/CPU:0"):
        out = tf.linalg.matmul(tf.constant(a), tf.constant(b)).numpy()
    digest = hashlib.sha256(out.tobytes()).hexdigest()[:12]
    table = _PROBE_DIGESTS.get(version)
    return {
        "level": (table or {}).get(digest),
        "digest": digest,
        "reference": f"TensorFlow {version}" if table else f"none for TensorFlow {version} (unverified)",
    }
