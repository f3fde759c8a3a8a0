"""What the run ran on and what it ran: versions, hardware, determinism-relevant environment, code.

Example:
    >>> info = capture_environment()
    >>> sorted(info)[:3]
    ['cpu_count', 'cpu_flags', 'cpu_model']
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import subprocess
import sys
from typing import Any

from keras_repro.isa import read_cpu_flags

__all__ = [
    "DETERMINISM_ENV_VARS",
    "capture_environment",
    "capture_code",
    "file_sha256",
    "installed_packages",
    "requirements",
]

logger = logging.getLogger("keras_repro")

# Every environment variable known to change numbers, devices or threads of a TF/Keras run.
DETERMINISM_ENV_VARS = (
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "TF_XLA_FLAGS",
    "XLA_FLAGS",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_USE_LEGACY_KERAS",
    "KERAS_BACKEND",
    "TF_CONFIG",
    "KERAS_REPRO_SEED",
    "KERAS_REPRO_MODE",
    "KERAS_REPRO_THREADS",
    "KERAS_REPRO_ISA",
)


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        from importlib import metadata

        for dist in {"tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly", "tf-nightly-cpu")}.get(
            module_name, (module_name,)
        ):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    except Exception:  # pragma: no cover
        pass
    return None


def _tensorflow_distribution() -> str | None:
    from importlib import metadata

    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tf-nightly-cpu", "tensorflow-intel", "tensorflow-macos"):
        try:
            metadata.version(dist)
            return dist
        except metadata.PackageNotFoundError:
            continue
    return None


def capture_environment(*, devices: bool = True) -> dict[str, Any]:
    """Versions, platform, CPU (model, ISA flags), packages, devices and determinism-relevant variables.

    Lists logical devices (and probes which CPU kernels run, `keras_repro.isa.probe`) only when
    TensorFlow is already imported and `devices` is true (listing them starts TF's runtime; the probe
    runs only once it has started). docs/portability.md describes `cpu_flags`, `packages`, `isa_probe`.
    """
    from keras_repro.launcher import usable_cores

    cores = usable_cores()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "tensorflow_distribution": _tensorflow_distribution(),
        "keras": _version("keras"),
        "numpy": _version("numpy"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": cores,
        "devices": None,
        "cpu_flags": read_cpu_flags(),
        "packages": installed_packages(),
        "isa_probe": None,
        "env": {name: _env_value(name) for name in DETERMINISM_ENV_VARS},
    }
    if devices and "tensorflow" in sys.modules:
        try:
            import tensorflow as tf

            info["devices"] = [d.name for d in tf.config.list_logical_devices()]
        except Exception as e:  # pragma: no cover
            info["devices"] = [f"<unavailable: {e}>"]
        info["isa_probe"] = _isa_probe()
    return info


def installed_packages() -> dict[str, str]:
    """Every installed distribution as {name: version}, names normalised (PEP 503), sorted.

    Read from the `*.dist-info`/`*.egg-info` directory names on `sys.path` (first one wins, as for
    imports): under 1 ms for 55 packages, where `importlib.metadata.distributions()` takes ~120 ms
    because it parses every METADATA file. A directory name without a version falls back to that.

    Example:
        >>> installed_packages()["numpy"]          # doctest: +SKIP
        '2.4.6'
    """
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            listing = os.scandir(entry or ".")
        except OSError:
            continue
        with listing:
            for item in listing:
                if item.name.endswith((".dist-info", ".egg-info")):
                    _add_distribution(found, item)
    return dict(sorted(found.items()))


def requirements(rec: Any) -> list[str]:
    """A run record's `environment.packages` as pip requirements, `name==version` one a line.

    Raises:
        RecordError: the record holds no package list (written by an older keras_repro) or a bad one.

    Example:
        >>> requirements({"environment": {"packages": {"numpy": "2.4.6", "tensorflow-cpu": "2.21.0"}}})
        ['numpy==2.4.6', 'tensorflow-cpu==2.21.0']
    """
    from keras_repro.errors import RecordError

    where = getattr(rec, "path", None) or "the record"
    environment = rec.get("environment") if hasattr(rec, "get") else None
    packages = environment.get("packages") if isinstance(environment, dict) else None
    if not isinstance(packages, dict) or not packages:
        raise RecordError(
            f"Expected {where} to hold environment.packages (every installed distribution and its version). "
            "Received: none (a record written before keras_repro recorded packages, or a partial one). "
            "Fix: rerun the training with this keras_repro to record them."
        )
    bad = [f"{k!r}: {v!r}" for k, v in packages.items() if not isinstance(v, str) or not v or " " in str(k) or not k]
    if bad:
        raise RecordError(f"Expected environment.packages in {where} to map names to versions. Received: {', '.join(bad[:3])}. "
                          "Fix: the record was edited or damaged; rerun the training.")
    return [f"{name}=={version}" for name, version in sorted(packages.items())]


def _add_distribution(found: dict[str, str], item: os.DirEntry[str]) -> None:
    parts = item.name.rsplit(".", 1)[0].split("-")
    name = re.sub(r"[-_.]+", "-", parts[0]).lower()
    if name in found:
        return
    if len(parts) >= 2 and parts[1]:
        found[name] = parts[1]
        return
    try:  # an egg-info without a version in its name
        from importlib import metadata

        version = metadata.Distribution.at(item.path).version
        if version:
            found[name] = version
    except Exception:  # pragma: no cover - a broken metadata directory is not ours to judge
        pass


def _isa_probe() -> dict[str, Any] | None:
    """Which CPU instruction set the matmuls ran (keras_repro.isa.probe), next to the pin applied.

    Only once TensorFlow's runtime has started (the probe runs an op); `verified` is True when the
    probe's bits are those of the pinned level, False when they are another level's (logged), None
    when nothing was pinned or no reference bits exist for this TensorFlow version.
    """
    runtime = sys.modules.get("keras_repro.runtime")
    if runtime is None or not runtime.runtime_started():
        return None
    from keras_repro import isa

    try:
        result = isa.probe()
    except Exception as e:  # pragma: no cover - the record must still be written
        return {"level": None, "error": f"{type(e).__name__}: {e}", "pinned": None, "verified": None}
    applied = runtime.configured_applied() or {}
    pinned = applied.get("isa") if applied.get("isa") in isa.LEVELS else None
    result["pinned"] = pinned
    result["verified"] = None if pinned is None or result["level"] is None else isa.gemm_level(pinned) == result["level"]
    if result["verified"] is False:
        logger.warning(
            "keras_repro: the CPU instruction set was pinned to %s, but this process's matmuls run %s kernels "
            "(probe); the pin did not take effect. Fix: export ONEDNN_MAX_CPU_ISA=%s before starting Python, "
            "or launch with `keras-repro run`.", pinned, result["level"], pinned,
        )
    return result


def _env_value(name: str) -> str | None:
    value = os.environ.get(name)
    return _tf_config_layout(value) if name == "TF_CONFIG" and value else value


def _tf_config_layout(value: str) -> str:
    """TF_CONFIG without addresses: ports change every launch and are never a cause; the layout is.

    Example:
        >>> _tf_config_layout('{"cluster": {"worker": ["127.0.0.1:5001", "127.0.0.1:5002"]}, "task": {"type": "worker", "index": 1}}')
        '{"cluster": {"worker": 2}, "task": {"index": 1, "type": "worker"}}'
    """
    import json

    try:
        config = json.loads(value)
        cluster = {k: len(v) if isinstance(v, (list, dict)) else 1 for k, v in sorted((config.get("cluster") or {}).items())}
        return json.dumps({"cluster": cluster, "task": config.get("task")}, sort_keys=True)
    except Exception:
        return "<TF_CONFIG: not JSON>"


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _entry_script() -> str | None:
    main = sys.modules.get("__main__")
    candidate = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else None)
    if candidate and os.path.isfile(candidate):
        return os.path.abspath(candidate)
    return None


def _git(directory: str, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", directory, *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def capture_code(flag_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """argv, the entry script's path and SHA-256, the git commit and dirty state, absl flag values."""
    script = _entry_script()
    code: dict[str, Any] = {
        "argv": list(sys.argv),
        "script": script,
        "script_sha256": file_sha256(script) if script else None,
        "git": None,
        "flags": flag_values,
    }
    directory = os.path.dirname(script) if script else os.getcwd()
    commit = _git(directory, "rev-parse", "HEAD")
    if commit:
        status = _git(directory, "status", "--porcelain", "--untracked-files=no")
        code["git"] = {"commit": commit.strip(), "dirty": bool(status.strip()) if status is not None else None}
    return code

