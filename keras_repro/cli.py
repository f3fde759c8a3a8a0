"""The `keras-repro` command line (also `python -m keras_repro`).

Thin subcommands over library functions; the exit code is the verdict: 0 identical/reproducible,
1 different, 2 an error (one line on stderr, no traceback). `show`, `diff`, `env` and `plot` only read
records and never import TensorFlow.

Example:
    $ keras-repro diff runs/20261127-101500-3f2a9c runs/20261127-101712-9c41d0
    cause: hyperparameter learning_rate: 0.001 -> 0.003
    metrics: first divergence: loss at epoch 0, step 1 (global step 1): 2.2 vs 2.1 (relative gap 4.5e-02)
    verdict: different
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any, NoReturn, Sequence

from keras_repro.errors import ReproducibilityError

__all__ = ["main", "build_parser", "summarize"]

PROG = "keras-repro"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per verb."""
    parser = _Parser(prog=PROG, description="Reproducible Keras training: run, check, show, diff, plot.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser("show", help="print a readable summary of a run record")
    p.add_argument("run", metavar="RUN", help="a run directory or its run.json")

    p = sub.add_parser("diff", help="explain why two runs differ (exit 0 identical, 1 different, 2 error)")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")

    p = sub.add_parser("check", help="run a training command N times and say whether it reproduces")
    p.add_argument("--runs", type=int, default=2, metavar="N", help="how many runs (default 2)")
    _policy_options(p, "none given: apply nothing, record only")
    p.add_argument("--locate", action="store_true", default=None,  # issue 12 (keras_repro/locate.py)
                   help="rerun the first differing step with instrumentation and name the layer, input or metric "
                        "that differs first (automatic when no recorded cause explains a difference)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    p = sub.add_parser("run", help="launch a command under a policy: its environment, and autolog before its code")
    _policy_options(p, "mode default: deterministic")
    p.add_argument("--no-autolog", action="store_true",
                   help="set the environment only; do not patch keras.Model.fit in the child")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    p = sub.add_parser("env", help="print a run's recorded packages as pip requirements (name==version)")
    p.add_argument("run", metavar="RUN", help="a run directory or its run.json")

    p = sub.add_parser("plot", help="overlay the loss/metric curves of runs and mark where they diverge")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="where to write the image")
    p.add_argument("--label", action="append", metavar="TEXT",  # issue 12
                   help="a label for each run, in order (default: the script and the settings that differ)")
    return parser


def _policy_options(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--seed", metavar="S", help=f"seed in [0, 2**32-1] ({default})")
    p.add_argument("--mode", metavar="M", help="off, seeded, deterministic or bitwise")
    p.add_argument("--threads", metavar="T", help="intra-op thread count")
    p.add_argument("--isa", metavar="ISA", help="CPU instruction set to pin (default AVX2 in bitwise; 'native': none)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), like every other keras-repro error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {PROG} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-repro` with `argv` (default `sys.argv[1:]`) and returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ReproducibilityError as e:
        message = " ".join(str(e).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `keras-repro show RUN | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def _print_lines(lines: Sequence[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def _command_args(cmd: Sequence[str], usage: str) -> list[str]:
    cmd = list(cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ReproducibilityError(f"No command given. Usage: {PROG} {usage} -- CMD ...")
    return cmd


def _diff(args: argparse.Namespace) -> int:
    from keras_repro.comparison import compare
    from keras_repro.record import load_run

    ra, rb = load_run(args.run_a), load_run(args.run_b)
    result = compare(ra, rb)
    if args.json:
        _print_lines([json.dumps(result.to_dict(), indent=1, allow_nan=True, default=repr)])
        return 0 if result.identical else 1
    lines = [f"run A: {_label(ra)}", f"run B: {_label(rb)}"]
    lines += result.lines()
    if result.identical:
        lines.append("verdict: identical")
    elif result.causes:
        lines.append(f"verdict: different ({_count(len(result.causes), 'cause')})")
    else:
        lines.append("verdict: different (no recorded cause; see the notes)")
    _print_lines(lines)
    return 0 if result.identical else 1


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _label(rec: Any) -> str:
    policy = rec.applied or rec.policy
    return (f"{rec.run_id} ({_status(rec)}, mode {policy.get('mode')}, seed {policy.get('seed')}) "
            f"{rec.path if rec.path is not None else ''}").rstrip()


def _status(rec: Any) -> str:
    """The status, with a `running` record whose process is gone on this host shown as stale."""
    status = rec.status or "unknown"
    if status != "running":
        return status
    pid, host = rec.get("pid"), rec.get("host")
    if not isinstance(pid, int) or pid <= 0:
        return status
    if host is not None and host != socket.gethostname():
        return f"running (on host {host}; cannot tell whether process {pid} is alive)"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"interrupted (stale: process {pid} is gone)"
    except (PermissionError, OSError):
        pass
    return f"running (process {pid})"


def _show(args: argparse.Namespace) -> int:
    from keras_repro.record import load_run

    _print_lines(summarize(load_run(args.run)))
    return 0


def summarize(rec: Any) -> list[str]:
    """A readable summary of a run record, one line per fact.

    Example:
        >>> summarize(load_run("runs/20261127-101500-3f2a9c"))[1]   # doctest: +SKIP
        'status: completed (2026-11-27T10:15:00 -> 2026-11-27T10:15:09)'
    """
    from keras_repro.comparison import format_value as fv

    lines = [f"run: {rec.run_id}  {rec.path or ''}".rstrip()]
    times = f" ({rec.get('started_at')} -> {rec.get('ended_at') or '...'})" if rec.get("started_at") else ""
    lines.append(f"status: {_status(rec)}{times}" + (f": {rec.get('error')}" if rec.get("error") else ""))
    if rec.get("resumed_from"):
        lines.append(f"resumed from: {fv(rec.get('resumed_from'))}")
    lines.append("policy (asked): " + _pairs(rec.policy))
    applied = rec.applied
    lines.append("applied: " + _pairs({k: v for k, v in applied.items() if k != "warnings"}))
    lines += [f"warning: {w}" for w in applied.get("warnings") or []]
    env = rec.section("environment")
    lines.append("versions: " + _pairs({k: env[k] for k in ("python", "tensorflow", "keras", "numpy") if k in env}))
    lines.append("hardware: " + _pairs({k: env[k] for k in ("platform", "machine", "cpu_model", "cpu_count", "devices") if k in env}))
    if isinstance(env.get("cpu_flags"), list):
        lines.append("cpu instruction set: " + (" ".join(map(str, env["cpu_flags"])) or "(none)"))
    if isinstance(env.get("packages"), dict):
        lines.append(f"packages: {len(env['packages'])} recorded (`{PROG} env RUN` prints them as requirements)")
    if isinstance(env.get("env"), dict):
        lines.append("environment: " + (" ".join(f"{k}={v}" for k, v in env["env"].items() if v is not None) or "(none set)"))
    code = rec.section("code")
    if code:
        git = code.get("git") if isinstance(code.get("git"), dict) else None
        git_text = f", git {fv(git.get('commit'))}{' (dirty)' if git.get('dirty') else ''}" if git else ", not in a git repo"
        lines.append(f"code: {fv(code.get('script'))} (sha256 {fv(code.get('script_sha256'))}){git_text}")
    data = rec.section("data")
    for name in ("x", "y", "sample_weight"):
        if data.get(name) is not None:
            lines.append(f"data {name}: {_fingerprint(data[name])}")
    validation = data.get("validation")
    if isinstance(validation, dict):
        lines += [f"data validation {k}: {_fingerprint(v)}" for k, v in validation.items() if v is not None]
    lines.append("hyperparameters: " + _pairs(_flat(rec.section("hyperparameters"))))
    lines.append("fit: " + _pairs(rec.section("fit")))
    lines.append(f"metrics: {len(rec.epochs)} epochs, {len(rec.steps)} steps")
    if rec.epochs and isinstance(rec.epochs[-1], dict):
        lines.append("final metrics: " + _pairs(rec.epochs[-1]))
    model = rec.section("model")
    if model:
        lines.append(f"model: {fv(model.get('class'))}, {fv(model.get('param_count'))} parameters, "
                     f"architecture {fv(model.get('architecture_sha256'))}")
    lines.append(f"weights: initial {fv(rec.initial_weights_sha256)}, final {fv(rec.final_weights_sha256)}")
    return lines


def _flat(section: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, dict) and value and set(value) != {"__repr__"}:
            out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            out[key] = value
    return out


def _pairs(mapping: dict[str, Any]) -> str:
    from keras_repro.comparison import format_value

    return ", ".join(f"{k}={format_value(v)}" for k, v in mapping.items()) or "(not recorded)"


def _fingerprint(fp: Any) -> str:
    from keras_repro.comparison import format_value

    if not isinstance(fp, dict):
        return format_value(fp)
    parts = [str(fp.get("kind"))]
    for key in ("shape", "dtype", "element_spec", "cardinality", "samples", "sha256"):
        if fp.get(key) is not None:
            parts.append(f"{key} {format_value(fp[key])}")
    if fp.get("first_elements"):
        parts.append(f"first {len(fp['first_elements'])} elements seen")
    return ", ".join(parts)


def _check(args: argparse.Namespace) -> int:
    from keras_repro.checking import run_check

    command = _command_args(args.cmd, "check [--runs N] [--seed S] [--mode M] [--threads T] [--locate]")
    result = run_check(command, runs=args.runs, policy=_policy(args),
                       progress=lambda line: print(f"{PROG}: {line}", file=sys.stderr, flush=True),
                       locate=args.locate)
    _print_lines(result.lines())
    return result.exit_code


def _policy(args: argparse.Namespace) -> Any:
    """The policy given by --seed/--mode/--threads; None when none of them is."""
    from keras_repro.policy import Policy

    if args.seed is None and args.mode is None and args.threads is None and args.isa is None:
        return None
    return Policy.create(seed=_int_or_text(args.seed), mode=args.mode, threads=_int_or_text(args.threads),
                         isa=args.isa)


def _run(args: argparse.Namespace) -> int:
    from keras_repro.launcher import run_command
    from keras_repro.policy import Policy

    policy = _policy(args) or Policy.create()
    command = _command_args(args.cmd, "run [--seed S] [--mode M] [--threads T] [--isa ISA] [--no-autolog]")
    return run_command(command, policy, autolog=not args.no_autolog)


def _env(args: argparse.Namespace) -> int:
    from keras_repro.environment import requirements
    from keras_repro.record import load_run

    _print_lines(requirements(load_run(args.run)))
    return 0


def _int_or_text(text: str | None) -> Any:
    """'42' -> 42; anything else is passed on as text, for `Policy.create` to refuse with its message."""
    if text is None:
        return None
    try:
        return int(text, 10)
    except ValueError:
        return text


def _plot(args: argparse.Namespace) -> int:
    from keras_repro.plot import plot_runs

    path = plot_runs(args.runs, args.output, labels=args.label)
    print(f"wrote {path}")
    return 0


_COMMANDS = {"show": _show, "diff": _diff, "check": _check, "run": _run, "env": _env, "plot": _plot}
