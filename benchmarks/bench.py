"""keras_repro benchmarks: wrapper overhead, cost of each mode, fingerprint throughput, `diff` speed.

Every measurement runs in a fresh subprocess (thread counts and op determinism are process-wide), the
configurations of a comparison alternate within each repetition so that load from elsewhere hits them
alike, and the table reports medians over the repetitions and ratios to the baseline.

    .venv/bin/python benchmarks/bench.py                 # everything, 5 repetitions (about 20 minutes)
    .venv/bin/python benchmarks/bench.py --only diff,fingerprint --reps 3

The raw results go to bench-out/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "_child.py"
SECTIONS = ("overhead", "modes", "fingerprint", "diff")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for key in ("KERAS_REPRO_SEED", "KERAS_REPRO_MODE", "KERAS_REPRO_THREADS", "TF_ENABLE_ONEDNN_OPTS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "TF_DETERMINISTIC_OPS"):
        env.pop(key, None)
    env.update(extra)
    return env


def child(args: Sequence[str], prefix: Sequence[str] = ()) -> dict[str, Any]:
    cmd = [*prefix, sys.executable, str(CHILD), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(cmd)}\nexit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf, keras, numpy; print(tf.__version__, keras.__version__, numpy.__version__)"],
        capture_output=True, text=True, env=_env()).stdout.split()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "tensorflow": versions[0] if versions else None, "keras": versions[1] if len(versions) > 1 else None,
            "numpy": versions[2] if len(versions) > 2 else None, "load_at_start": load}


def alternate(configs: Sequence[str], reps: int, run_dir: str, log: Any) -> dict[str, list[dict[str, Any]]]:
    """Runs each fit configuration `reps` times, rotating the order every repetition."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for rep in range(reps):
        order = list(configs[rep % len(configs):]) + list(configs[: rep % len(configs)])
        for config in order:
            r = child(["fit", "--config", config, "--run-dir", run_dir])
            results[config].append(r)
            log(f"  rep {rep + 1}/{reps} {config:14s} {r['seconds']:7.2f} s  {r['weights_sha256'][:12]}")
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio_row(name: str, runs: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["seconds"] for r in runs]
    base_secs = [r["seconds"] for r in base]
    paired = [a / b for a, b in zip(secs, base_secs, strict=True)]  # same repetition: same background load
    return {"name": name, "median_s": median(secs), "ratio_of_medians": median(secs) / median(base_secs),
            "median_paired_ratio": median(paired), "min_ratio": min(paired), "max_ratio": max(paired),
            "rss_mb": median([r["max_rss_mb"] for r in runs]),
            "distinct_weights": len({r["weights_sha256"] for r in runs})}


def bench_fit(reps: int, sections: set[str], log: Any) -> dict[str, Any]:
    configs: list[str] = []
    if "overhead" in sections:
        configs += ["manual", "wrapper"]
    if "modes" in sections:
        configs += ["plain", "seeded", "deterministic", "bitwise", "bitwise-t2"]
    configs = list(dict.fromkeys(configs))
    with tempfile.TemporaryDirectory(prefix="keras-repro-bench-") as run_dir:
        results = alternate(configs, reps, run_dir, log)
    out: dict[str, Any] = {"raw": results, "rows": []}
    if "overhead" in sections:
        out["rows"].append(ratio_row("keras_repro.fit vs model.fit (same settings by hand)", results["wrapper"], results["manual"]))
    if "modes" in sections:
        base = results["plain"]
        out["rows"].append(ratio_row("plain model.fit (no seed, default threads)", base, base))
        for mode, label in (("seeded", "mode seeded"), ("deterministic", "mode deterministic (threads=cores)"),
                            ("bitwise", "mode bitwise (threads=1)"), ("bitwise-t2", "mode bitwise, threads=2")):
            out["rows"].append(ratio_row(label, results[mode], base))
        # Portability of a 2-thread bitwise run: same bits when only one core is usable?
        if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 1:
            one_core = [child(["fit", "--config", "bitwise-t2", "--run-dir", tempfile.mkdtemp(prefix="kr-bench-")],
                              prefix=["taskset", "-c", "0"]) for _ in range(2)]
            out["bitwise_t2_one_core"] = one_core
    return out


def bench_fingerprint(reps: int, log: Any) -> dict[str, Any]:
    out = {}
    for label, shape in (("1 GiB float32 (1048576, 256)", "1048576,256"), ("1 GiB float32 (268435456,) 1-D", "268435456")):
        r = child(["fingerprint", "--shape", shape, "--reps", str(reps)])
        out[label] = r
        log(f"  {label}: {median([x['fingerprint_gbps'] for x in r['reps']]):.2f} GB/s")
    r = child(["dataset", "--reps", str(reps)])
    out["tf.data"] = r
    log(f"  tf.data: plain {median([x['plain_gbps'] for x in r['reps']]):.2f} GB/s, "
        f"tapped {median([x['tapped_all_gbps'] for x in r['reps']]):.2f} GB/s")
    return out


def _make_records(directory: Path, steps: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import record_dict, write_record  # the hand-made records of the test suite

    per_epoch = 100
    epochs = steps // per_epoch
    losses = [2.0 / (1 + i / 1000) for i in range(steps)]
    common = dict(metrics__steps_per_epoch=[per_epoch] * epochs, fit__epochs=epochs,
                  metrics__epochs=[{"loss": losses[(e + 1) * per_epoch - 1], "accuracy": 0.5 + e / (2 * epochs)}
                                   for e in range(epochs)])
    a = record_dict("20261127-101500-aaaaaa", metrics__steps=losses, **common)
    diverged = losses[: steps // 2] + [v * (1 + 1e-7) for v in losses[steps // 2:]]
    b = record_dict("20261127-101600-bbbbbb", metrics__steps=diverged, applied__intra_op_threads=2, **common)
    b["model"]["final_weights_sha256"] = "cd" * 32
    return write_record(directory, a), write_record(directory, b)


def bench_diff(reps: int, log: Any) -> dict[str, Any]:
    if not (REPO / "keras_repro" / "cli.py").exists():
        return {"todo": "keras_repro/cli.py does not exist yet: measure `python -m keras_repro diff A B` once it does"}
    with tempfile.TemporaryDirectory(prefix="keras-repro-bench-diff-") as tmp:
        a, b = _make_records(Path(tmp), 10_000)
        cmd = [sys.executable, "-m", "keras_repro", "diff", str(a.parent), str(b.parent)]
        times, codes = [], []
        for _ in range(reps):
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO)
            times.append(time.perf_counter() - start)
            codes.append(proc.returncode)
        check = subprocess.run(
            [sys.executable, "-c",
             "import sys; from keras_repro.cli import main; code = main(sys.argv[1:]); "
             "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', file=sys.stderr)",
             "diff", str(a.parent), str(b.parent)],
            capture_output=True, text=True, env=_env(), cwd=REPO)
        baseline = []
        for _ in range(reps):  # the interpreter alone, for scale
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], env=_env())
            baseline.append(time.perf_counter() - start)
        size = a.stat().st_size
    result = {"seconds": times, "exit_codes": codes, "record_bytes": size, "python_startup_s": baseline,
              "tensorflow_imported": "TF_IMPORTED" in check.stderr, "first_lines": proc.stdout.splitlines()[:3]}
    log(f"  diff: {median(times):.3f} s (exit {codes[0]}), python startup {median(baseline):.3f} s")
    return result


def table(results: dict[str, Any]) -> str:
    lines = ["| measurement | median | ratio to baseline (paired median, min-max) | target | met |",
             "|---|---|---|---|---|"]
    fit = results.get("fit")
    if fit:
        for row in fit["rows"]:
            target, met = "", ""
            if row["name"].startswith("keras_repro.fit"):
                target, met = "<= 1.03x", row["median_paired_ratio"] <= 1.03
            elif "threads=1" in row["name"]:
                target, met = "<= 1.3x", row["median_paired_ratio"] <= 1.3
            lines.append(f"| {row['name']} | {row['median_s']:.2f} s | {row['median_paired_ratio']:.3f}x "
                         f"({row['min_ratio']:.2f}-{row['max_ratio']:.2f}); distinct weights: {row['distinct_weights']} "
                         f"| {target} | {'' if met == '' else ('yes' if met else 'NO')} |")
    fps = results.get("fingerprint")
    if fps:
        for label, r in fps.items():
            if label == "tf.data":
                plain = median([x["plain_gbps"] for x in r["reps"]])
                tapped = median([x["tapped_all_gbps"] for x in r["reps"]])
                spec = median([x["spec_seconds"] for x in r["reps"]])
                lines.append(f"| tf.data pipeline (256 MiB): iterate, tap every sample | {tapped:.2f} GB/s | "
                             f"{tapped / plain:.2f}x of plain iteration ({plain:.2f} GB/s); fingerprint(dataset) {spec * 1e3:.0f} ms | | |")
                continue
            gbps = median([x["fingerprint_gbps"] for x in r["reps"]])
            sha = median([x["sha256_gbps"] for x in r["reps"]])
            peak = max(x["peak_extra_mb"] for x in r["reps"])
            met = gbps >= 1.0 and peak < 64
            lines.append(f"| fingerprint {label} | {gbps:.2f} GB/s, peak +{peak:.1f} MB | {gbps / sha:.2f}x of "
                         f"hashlib.sha256 alone ({sha:.2f} GB/s) | >= 1 GB/s, < 64 MB | {'yes' if met else 'NO'} |")
    d = results.get("diff")
    if d:
        if "todo" in d:
            lines.append(f"| keras-repro diff, 10,000 steps | TODO | {d['todo']} | < 0.5 s | |")
        else:
            t = median(d["seconds"])
            lines.append(f"| `python -m keras_repro diff` on two 10,000-step records ({d['record_bytes'] // 1024} KiB) | "
                         f"{t:.3f} s | python startup alone {median(d['python_startup_s']):.3f} s; TF imported: "
                         f"{d['tensorflow_imported']} | < 0.5 s, no TF | "
                         f"{'yes' if t < 0.5 and not d['tensorflow_imported'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per configuration (default 5)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", default="bench-out/bench.json")
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results: dict[str, Any] = {"machine": machine(), "reps": args.reps, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    log(f"machine: {results['machine']}")
    if sections & {"overhead", "modes"}:
        log("fit (each configuration in a fresh process, alternating):")
        results["fit"] = bench_fit(args.reps, sections, log)
    if "fingerprint" in sections:
        log("fingerprint:")
        results["fingerprint"] = bench_fingerprint(args.reps, log)
    if "diff" in sections:
        log("diff:")
        results["diff"] = bench_diff(args.reps, log)
    results["load_at_end"] = os.getloadavg()
    out = REPO / args.out if not os.path.isabs(args.out) else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    if "fit" in results and "bitwise_t2_one_core" in results["fit"]:
        t2 = {r["weights_sha256"] for r in results["fit"]["raw"]["bitwise-t2"]}
        one = {r["weights_sha256"] for r in results["fit"]["bitwise_t2_one_core"]}
        t1 = {r["weights_sha256"] for r in results["fit"]["raw"]["bitwise"]}
        print(f"\nbitwise threads=2: {len(t2)} distinct weight hash(es) over {args.reps} processes; pinned to one core: "
              f"{'same bits' if one == t2 else 'OTHER bits'}; threads=1 vs threads=2: {'same' if t1 == t2 else 'different'} bits")
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
