"""`keras-repro check`: run a training command several times and say whether it reproduces.

Each run is a fresh process whose environment names, in `KERAS_REPRO_RECORDS_FILE`, an empty temporary
file; every `keras_repro.fit` in the child appends the absolute path of its run record to it. `check`
never changes where the script writes its records. Every child gets `keras_repro.autolog` before its
own code (keras_repro/_bootstrap), so an unmodified script's `model.fit` is recorded too: under the
policy given (`policy=`), or, with none, in mode "off" (nothing applied, recorded only). Run 1 is then
compared with every other run, record by record, and each difference is turned into its likely source
and fix; unseeded runs get the command line that fixes them.

TensorFlow-free: only the children train.

Example:
    >>> result = run_check([sys.executable, "train.py"], runs=2)   # doctest: +SKIP
    >>> result.exit_code, result.lines()[-1]                       # doctest: +SKIP
    (0, 'reproducible')
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from keras_repro.comparison import Comparison, compare, leftover_message
from keras_repro.errors import ReproducibilityError
from keras_repro.policy import ENV_RECORDS_FILE, Policy
from keras_repro.record import RunRecord, load_run

__all__ = ["ChildRun", "Pairing", "CheckResult", "run_check", "likely_sources"]

_TAIL_LINES = 8


@dataclasses.dataclass(frozen=True)
class ChildRun:
    """One run of the command: its exit code, the records it reported, the end of its stderr."""

    index: int  # 1-based
    returncode: int
    records: tuple[str, ...]
    stderr_tail: str
    seconds: float

    def summary(self) -> str:
        count = len(self.records)
        noun = "record" if count == 1 else "records"
        return f"run {self.index}: exit {self.returncode}, {count} {noun} ({self.seconds:.1f} s)"


@dataclasses.dataclass(frozen=True)
class Pairing:
    """Run 1's record number `record` compared with the same record of run `other`."""

    other: int
    record: int  # 1-based
    of: int
    comparison: Comparison
    records: tuple[RunRecord, RunRecord] | None = None  # (run 1's, run `other`'s)

    def label(self) -> str:
        which = f", record {self.record} of {self.of}" if self.of > 1 else ""
        return f"run 1 vs run {self.other}{which}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of `run_check`.

    Attributes:
        runs: one `ChildRun` per run of the command.
        problems: runs that failed, wrote no record, a different number of records, or an unreadable one.
        pairings: the comparisons made (none when there are problems).
        exit_code: 0 reproducible, 1 different, 2 a run could not be checked.
    """

    runs: tuple[ChildRun, ...]
    problems: tuple[str, ...]
    pairings: tuple[Pairing, ...]
    command: tuple[str, ...] = ()
    policy: Policy | None = None  # as given to check; None: none (mode off, record only)
    located: tuple[str, ...] = ()  # issue 12: the `--locate` report (keras_repro/locate.py)

    @property
    def reproducible(self) -> bool:
        return not self.problems and all(p.comparison.identical for p in self.pairings)

    @property
    def exit_code(self) -> int:
        if self.problems:
            return 2
        return 0 if self.reproducible else 1

    def lines(self) -> list[str]:
        """The report, one line per finding; the last line is the verdict."""
        out = [run.summary() for run in self.runs]
        out += self.problems
        for pairing in self.pairings:
            c = pairing.comparison
            if c.identical:
                out.append(f"{pairing.label()}: identical ({c.steps_compared} steps, {c.epochs_compared} epochs)")
                continue
            out.append(f"{pairing.label()}: differ")
            out += [f"  {line}" for line in c.lines()]
            out += [f"  likely source: {hint}" for hint in likely_sources(c, pairing.records)]
        out += list(self.located)
        fix = self.fix()
        if fix:
            out.append(f"fix: {fix}")
        if self.problems:
            out.append("cannot check: see the problems above")
        else:
            out.append("reproducible" if self.reproducible else "not reproducible")
        return out


    def fix(self) -> str | None:
        """The command line that makes unseeded runs repeat, when that is what differs."""
        unseeded = [p for p in self.pairings if not p.comparison.identical and p.records and _unseeded(*p.records)]
        if not unseeded or not self.command:
            return None
        seed = self.policy.seed if self.policy is not None and self.policy.seed is not None else 42
        cmd = shlex.join(self.command)
        return (f"keras-repro run --seed {seed} --mode deterministic -- {cmd}   "
                f"(to confirm: keras-repro check --seed {seed} --mode deterministic -- {cmd})")


def run_check(
    command: Sequence[str],
    runs: int = 2,
    *,
    policy: Policy | None = None,
    autolog: bool = True,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
    locate: bool | None = None,
) -> CheckResult:
    """Runs `command` `runs` times in fresh processes and compares the records they write.

    Args:
        command: the program and its arguments, e.g. `["python", "train.py"]`.
        runs: how many times to run it (at least 2).
        policy: the policy every run is launched under (as `keras-repro run` does); None applies
            nothing and records only (autolog in mode "off").
        autolog: give every child `keras_repro.autolog` before its code, so that plain `model.fit`
            calls are recorded (False: only `keras_repro.fit` calls in the script are).
        environ: the base environment for the children (default `os.environ`).
        cwd: the children's working directory.
        timeout: seconds each run may take (None: no limit).
        progress: called with a line before each run starts (the CLI prints it on stderr).
        locate: rerun the command twice more with the first diverging step of each differing record of
            runs 1 and 2 instrumented, to find where that step first computes differently
            (keras_repro/locate.py); None (default): only for differences no recorded cause explains;
            False: never.

    Raises:
        ReproducibilityError: no command, fewer than 2 runs, a policy the environment contradicts, or
            the command cannot be started.

    Example:
        >>> run_check(["python", "train.py"], runs=3).exit_code   # doctest: +SKIP
        0
    """
    if not command:
        raise ReproducibilityError("No command given. Usage: keras-repro check [--runs N] -- CMD ...")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 2:
        raise ReproducibilityError(f"Expected --runs to be an integer >= 2 (run 1 is compared with the others). Received: {runs!r}.")
    env = _child_environment(policy, autolog, environ)
    children = []
    with tempfile.TemporaryDirectory(prefix="keras-repro-check-") as tmp:
        for index in range(1, runs + 1):
            if progress is not None:
                progress(f"run {index} of {runs}: {' '.join(command)}")
            children.append(_run_child(command, index, Path(tmp) / f"run-{index}.records", env, cwd, timeout))
    done = functools.partial(CheckResult, tuple(children), command=tuple(command), policy=policy)
    problems = _problems(children)
    if problems:
        return done(tuple(problems), ())
    pairings, load_problems = _compare_runs(children)
    if load_problems:
        return done(tuple(load_problems), ())
    located = _locate(command, children, pairings, locate, env, cwd, timeout, progress)
    return done((), tuple(pairings), located=tuple(located))


def _child_environment(policy: Policy | None, autolog: bool, environ: Mapping[str, str] | None) -> dict[str, str]:
    from keras_repro.launcher import autolog_environment, launch_environment

    env = dict(os.environ if environ is None else environ)
    if policy is not None:
        env = launch_environment(policy, env)  # raises on a contradiction (TF_ENABLE_ONEDNN_OPTS=1 under bitwise)
    return autolog_environment(env, record_only=policy is None) if autolog else env


def _locate(command: Sequence[str], children: Sequence[ChildRun], pairings: Sequence[Pairing], locate: bool | None,
            environ: Mapping[str, str] | None,
            cwd: str | os.PathLike[str] | None, timeout: float | None, progress: Callable[[str], None] | None) -> list[str]:
    """issue 12: the `--locate` report for the differing records of runs 1 and 2 (automatic when unexplained)."""
    from keras_repro.locate import locate_pairing

    records = [child.records for child in children]
    return locate_pairing(command, records, pairings, locate, environ=environ, cwd=cwd, timeout=timeout, progress=progress)


def _run_child(command: Sequence[str], index: int, records_file: Path, environ: Mapping[str, str] | None,
               cwd: str | os.PathLike[str] | None, timeout: float | None) -> ChildRun:
    records_file.write_text("")
    env = dict(os.environ if environ is None else environ)
    env[ENV_RECORDS_FILE] = str(records_file.resolve())
    start = time.monotonic()
    try:
        proc = subprocess.run(list(command), env=env, cwd=cwd, timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
        code, stderr = proc.returncode, proc.stderr or ""
    except FileNotFoundError:
        raise ReproducibilityError(f"Command not found: {command[0]!r}.") from None
    except PermissionError:
        raise ReproducibilityError(f"Command not executable: {command[0]!r}.") from None
    except subprocess.TimeoutExpired as e:
        code, stderr = -9, (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or "")
        stderr += f"\n(killed after the {timeout} s timeout)"
    seconds = time.monotonic() - start
    base = Path(cwd) if cwd is not None else Path.cwd()
    records = tuple(str(base / line.strip()) for line in records_file.read_text().splitlines() if line.strip())
    tail = "\n".join(stderr.rstrip().splitlines()[-_TAIL_LINES:])
    return ChildRun(index, code if code >= 0 else 128 - code, records, tail, seconds)


def _problems(children: Sequence[ChildRun]) -> list[str]:
    problems = []
    for child in children:
        if child.returncode != 0:
            kept = f" after writing {len(child.records)} record(s), kept: {', '.join(child.records)}" if child.records else ""
            problems.append(f"run {child.index}: the command failed with exit code {child.returncode}{kept}; its stderr ends with:")
            problems += [f"  | {line}" for line in (child.stderr_tail or "(empty)").splitlines()]
        elif not child.records:
            problems.append(
                f"run {child.index}: wrote no run record. Expected a Keras fit to run in the command (each appends "
                f"its record's path to ${ENV_RECORDS_FILE}); does the command call keras_repro.fit? or model.fit? "
                "(with autolog, which check gives every Python child, any model.fit is recorded, and a custom "
                "training loop writes a record saying so)"
            )
    if problems:
        return problems
    counts = [len(c.records) for c in children]
    if len(set(counts)) > 1:
        listed = ", ".join(f"run {c.index}: {len(c.records)}" for c in children)
        problems.append(f"the runs wrote different numbers of records ({listed}), so they cannot be paired")
    return problems


def _compare_runs(children: Sequence[ChildRun]) -> tuple[list[Pairing], list[str]]:
    problems: list[str] = []
    loaded = []
    for child in children:
        recs = []
        for path in child.records:
            try:
                recs.append(load_run(path))
            except ReproducibilityError as e:
                problems.append(f"run {child.index}: {e}")
        loaded.append(recs)
    problems += _no_fit_problems(children, loaded)
    if problems:
        return [], problems
    first = loaded[0]
    pairings = []
    for child, recs in zip(children[1:], loaded[1:], strict=True):
        for k, (ra, rb) in enumerate(zip(first, recs, strict=False), start=1):  # a record count that differs is reported apart
            pairings.append(Pairing(child.index, k, len(first), compare(ra, rb), (ra, rb)))
    return pairings, []


def _no_fit_problems(children: Sequence[ChildRun], loaded: Sequence[Sequence[RunRecord]]) -> list[str]:
    """Records of processes that ran no fit (custom training loops): nothing in them to compare."""
    problems = []
    for child, recs in zip(children, loaded, strict=True):
        for rec in recs:
            if rec.get("no_fit"):
                policy = rec.applied or rec.policy
                problems.append(
                    f"run {child.index}: {rec.get('no_fit')} (policy applied: mode {policy.get('mode')}, seed "
                    f"{policy.get('seed')}). keras_repro compares what Keras's fit records. Fix: train with "
                    "model.fit / keras_repro.fit, or compare the script's own outputs across runs"
                )
    return problems


def likely_sources(comparison: Comparison, records: tuple[RunRecord, RunRecord] | None = None) -> list[str]:
    """The likely sources of a difference between two runs of the same command, each with its fix.

    Args:
        comparison: `compare(run_a, run_b)`.
        records: the two records, when at hand: unseeded runs (mode off) are then explained from what
            they hold (initial weights, the shuffle, the model's random layers).

    Example:
        >>> likely_sources(compare("runs/a", "runs/b"))     # doctest: +SKIP
        ['the training data differs between the runs: unseeded randomness in data loading ...']
    """
    causes = comparison.causes
    hints: list[str] = []
    unseeded = records is not None and _unseeded(*records)
    # In unseeded runs, step inputs that differ while the data itself does not follow from the sample order
    # (named below); only a difference of the data itself means the data is drawn at random.
    data = [c for c in causes if c.category == "data" and not (unseeded and c.field.startswith("data.steps."))]
    if unseeded and any(c.kind != "order" for c in data):
        hints.append(
            "the training data differs between the runs: it is drawn at random without a seed. A seed "
            "(keras-repro run --seed S) fixes np.random.* and random.*; np.random.default_rng() or "
            "random.Random() without a seed must also be seeded in the code"
        )
    elif any(c.kind != "order" for c in data) or any(c.kind == "order" and ".sha256" in c.field for c in data):
        hints.append(
            "the training data differs between the runs: unseeded randomness in data loading or preparation "
            "(np.random.default_rng() without a seed, or random.Random(), is ignored by every global seed). "
            "Fix: seed it explicitly, e.g. np.random.default_rng(42)"
        )
    if unseeded:
        assert records is not None
        return hints + unseeded_sources(comparison, *records)
    if any(c.field.endswith(".first_elements") for c in data):
        hints.append(
            "the dataset yields its elements in another order: the tf.data pipeline was built (and shuffled) "
            "before keras_repro.configure(). Fix: call keras_repro.configure(seed=...) before building the "
            "dataset, or give shuffle() a seed"
        )
    seed = next((c for c in causes if c.category == "policy" and c.field.endswith(".seed")), None)
    if seed is not None:
        hints.append(
            "the runs used different seeds (no seed given, so each run drew one). Fix: pass seed= to "
            "keras_repro.fit/configure, or launch through `keras-repro run --seed 42 -- CMD`"
        )
    if any(c.field.startswith("data.order") for c in data) and seed is None:
        mode = comparison.mode_a or "mode not recorded"
        hints.append(
            f"keras_repro.fit fed the samples in another order with the same seed ({mode}): its shuffle is "
            f"seeded only when the mode is 'seeded' or stricter. Fix: pass seed= and mode='deterministic' or "
            f"'bitwise'; if the mode already is, please report it with both run.json files"
        )
    if any(c.category == "initialisation" for c in causes) and seed is None:
        hints.append(
            "the initial weights differ with the same seed: the model was built before seeding, or outside "
            "keras_repro.fit's builder. Fix: pass a builder, keras_repro.fit(lambda: build_model(), x, y, ...), "
            "or call keras_repro.configure(...) before building the model"
        )
    if any(c.category == "nondeterminism" for c in causes):
        hints.append(
            f"everything recorded is the same, but later steps differ: nondeterministic ops or threads. "
            f"{leftover_message(comparison.mode_a)}"
        )
    if not hints and causes:
        hints.append(
            f"{causes[0].message}: a setting differs between runs of the same command, so the script reads "
            f"it from something that changes (time, randomness, the environment). Fix: make it fixed"
        )
    return hints


def _unseeded(ra: RunRecord, rb: RunRecord) -> bool:
    """Both runs seeded nothing (mode off, as `keras-repro check` without a policy records them)."""
    def seedless(rec: RunRecord) -> bool:
        applied = rec.applied or rec.policy
        return applied.get("mode") == "off" or applied.get("seed") is None
    return seedless(ra) and seedless(rb)


def unseeded_sources(comparison: Comparison, ra: RunRecord, rb: RunRecord) -> list[str]:
    """What draws other random numbers in each of two unseeded runs, named from their records.

    Example:
        >>> unseeded_sources(compare(a, b), a, b)[0]   # doctest: +SKIP
        "no seed: the runs seeded nothing (mode 'off'), so every random draw differs between them"
    """
    mode = (ra.applied or ra.policy).get("mode")
    sources = [f"no seed: the runs seeded nothing (mode {mode!r}), so every random draw differs between them"]
    init = next((c for c in comparison.causes if c.category == "initialisation"), None)
    if init is not None:
        sources.append(f"initial weights differ ({_short(init.a)} -> {_short(init.b)}): Keras initialised them "
                       "from an unseeded random state")
    fit = ra.section("fit")
    x_kind = (ra.section("data").get("x") or {}).get("kind") if isinstance(ra.section("data").get("x"), dict) else None
    if fit.get("shuffle", True) not in (False, None) and x_kind not in (None, "dataset", "other"):
        sources.append(f"another sample order: fit(shuffle={fit.get('shuffle', True)!r}) shuffles the training "
                       "arrays with an unseeded order in every run")
    elif x_kind == "dataset":
        sources.append("another sample order, if the tf.data pipeline shuffles or maps at random: it is not seeded")
    layers = ra.section("model").get("random_layers")
    if layers:
        sources.append(f"layers that draw random numbers at every step: {', '.join(layers)} (Dropout and "
                       "augmentation layers take their seeds from the unseeded global state)")
    return sources


def _short(value: object) -> str:
    return value[:12] if isinstance(value, str) else str(value)
