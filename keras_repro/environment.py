"""What the run ran on and what it ran: versions, hardware, determinism-relevant environment, code.

Example:
    >>> info = capture_environment()
    >>> sorted(info)[:3]
    ['cpu_count', 'cpu_model', 'devices']
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from typing import Any

__all__ = ["DETERMINISM_ENV_VARS", "capture_environment", "capture_code", "file_sha256"]

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
    """Versions, platform, CPU, visible devices and determinism-relevant environment variables.

    Lists logical devices only when TensorFlow is already imported and `devices` is true (listing
    them starts TF's runtime).
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
        "env": {name: _env_value(name) for name in DETERMINISM_ENV_VARS},
    }
    if devices and "tensorflow" in sys.modules:
        try:
            import tensorflow as tf

            info["devices"] = [d.name for d in tf.config.list_logical_devices()]
        except Exception as e:  # pragma: no cover
            info["devices"] = [f"<unavailable: {e}>"]
    return info


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

