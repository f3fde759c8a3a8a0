"""`keras-repro run`: the environment that must be set before Python or TensorFlow start.

Some settings cannot be changed once a process runs: `PYTHONHASHSEED` is read when the interpreter
starts, `TF_ENABLE_ONEDNN_OPTS` and the device list when TensorFlow loads, the CPU instruction-set caps
(`ONEDNN_MAX_CPU_ISA`, `XLA_FLAGS`) at TensorFlow's first op. `launch_environment` computes them for a
policy; `run_command` starts a command with them and passes the policy on through
`KERAS_REPRO_SEED/MODE/THREADS/ISA`, which `configure()` in the child picks up.

Unless told not to, the child also gets `keras_repro.autolog` before its own code runs:
`autolog_environment` puts keras_repro's bootstrap directory (`keras_repro/_bootstrap`, holding a
`sitecustomize.py`) first on PYTHONPATH and sets `KERAS_REPRO_AUTOLOG`, so an unmodified script is
seeded, made deterministic and recorded, and so are the Python processes it starts (they inherit both).

Example:
    >>> env = launch_environment(Policy.create(seed=7, mode="bitwise"), environ={})
    >>> env["PYTHONHASHSEED"], env["TF_ENABLE_ONEDNN_OPTS"], env["KERAS_REPRO_MODE"], env["ONEDNN_MAX_CPU_ISA"]
    ('7', '0', 'bitwise', 'AVX2')
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping, Sequence

from keras_repro.errors import ReproducibilityError
from keras_repro.policy import ENV_AUTOLOG, ENV_ISA, ENV_MODE, ENV_SEED, ENV_THREADS, Policy, resolve

__all__ = ["BOOTSTRAP_DIR", "default_threads", "launch_environment", "autolog_environment", "run_command"]

# Holds the sitecustomize.py a child imports at start-up (keras_repro/_bootstrap/sitecustomize.py).
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")


def usable_cores() -> int:
    """The number of cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(policy: Policy) -> int | None:
    """The intra-op thread count a mode fixes when the policy names none.

    `bitwise` fixes 1: the intra-op count changes the bits (docs/tf-notes.md), so a count tied to the machine's
    cores would make records from a laptop and a server differ. `deterministic` fixes the usable cores of
    this machine (repeatable here, recorded). `seeded` and `off` leave TensorFlow's default.
    """
    if policy.threads is not None:
        return policy.threads
    if policy.mode == "bitwise":
        return 1
    if policy.mode == "deterministic":
        return usable_cores()
    return None


def launch_environment(policy: Policy, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child environment for `policy`: `environ` (default `os.environ`) plus what must precede start-up."""
    env = dict(os.environ if environ is None else environ)
    env[ENV_MODE] = policy.mode
    if policy.seed is not None:
        env[ENV_SEED] = str(policy.seed)
    if policy.threads is not None:
        env[ENV_THREADS] = str(policy.threads)
    if policy.isa is not None:
        env[ENV_ISA] = policy.isa
    if policy.mode == "off":
        return env
    env.update(_isa_pin(policy, env))
    # String hashing (set iteration order) is fixed per process only through this variable.
    env["PYTHONHASHSEED"] = str(policy.seed if policy.seed is not None else 0)
    threads = default_threads(policy)
    if policy.mode in ("deterministic", "bitwise"):
        env["TF_DETERMINISTIC_OPS"] = "1"
        if threads is not None:
            env["TF_NUM_INTRAOP_THREADS"] = str(threads)
            env["TF_NUM_INTEROP_THREADS"] = str(threads)
            env["OMP_NUM_THREADS"] = str(threads)
    if policy.mode == "bitwise":
        if env.get("TF_ENABLE_ONEDNN_OPTS", "0") not in ("0", ""):
            raise ReproducibilityError(
                f"TF_ENABLE_ONEDNN_OPTS={env['TF_ENABLE_ONEDNN_OPTS']} is set, but mode 'bitwise' needs oneDNN off "
                "(its kernels are chosen by CPU features, so bits differ between machines). "
                "Fix: unset TF_ENABLE_ONEDNN_OPTS, or use --mode deterministic."
            )
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def _isa_pin(policy: Policy, env: Mapping[str, str]) -> dict[str, str]:
    """ONEDNN_MAX_CPU_ISA and XLA_FLAGS (merged with the user's) for the policy's instruction set."""
    from keras_repro import isa

    level = policy.isa if policy.isa is not None else (isa.DEFAULT_LEVEL if policy.mode == "bitwise" else isa.NATIVE)
    return isa.pin_environment(level, env, explicit=policy.isa is not None).changes


def autolog_environment(env: Mapping[str, str], *, record_only: bool = False) -> dict[str, str]:
    """`env` plus what makes a Python child call `keras_repro.autolog` before its own code.

    `record_only`: autolog in mode "off" whatever KERAS_REPRO_MODE says (`keras-repro check` without
    a policy), so that a script's own `configure`/`fit(seed=...)` calls keep their meaning.

    Example:
        >>> env = autolog_environment({"PYTHONPATH": "/mine"})
        >>> env["KERAS_REPRO_AUTOLOG"], env["PYTHONPATH"].endswith(os.pathsep + "/mine")
        ('1', True)
    """
    out = dict(env)
    out[ENV_AUTOLOG] = "off" if record_only else "1"
    if not record_only:
        resolve(environ=out)  # the child's autolog() reads these: refuse a bad KERAS_REPRO_* here, in one line
    paths = [p for p in (out.get("PYTHONPATH") or "").split(os.pathsep) if p and os.path.abspath(p) != BOOTSTRAP_DIR]
    out["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *paths])
    return out


def run_command(
    command: Sequence[str], policy: Policy, environ: Mapping[str, str] | None = None, *, autolog: bool = True
) -> int:
    """Runs `command` with the launch environment of `policy`; returns its exit code.

    With `autolog` (the default) a Python child calls `keras_repro.autolog` before its own code (see
    `autolog_environment`); without, it gets only the environment, as before autolog existed.

    Raises ReproducibilityError if the command cannot be started.
    """
    if not command:
        raise ReproducibilityError("No command given. Usage: keras-repro run [--seed S] [--mode M] -- CMD ...")
    env = launch_environment(policy, environ)
    if autolog:
        env = autolog_environment(env)
    try:
        completed = subprocess.run(list(command), env=env)
    except FileNotFoundError:
        raise ReproducibilityError(f"Command not found: {command[0]!r}.") from None
    except PermissionError:
        raise ReproducibilityError(f"Command not executable: {command[0]!r}.") from None
    except KeyboardInterrupt:  # the child got the same SIGINT; report as the shell would
        return 130
    code = completed.returncode
    return code if code >= 0 else 128 - code  # killed by signal N: exit 128 + N, as a shell reports it

