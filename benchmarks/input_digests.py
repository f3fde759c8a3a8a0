"""Cost of the per-step input digests (data.steps): keras_repro.fit with and without them, side by side.

Both configurations run in one process on the bench model of benchmarks/_child.py (MLP 128-512-512-4,
batch 128) and alternate within every repetition, so that load from elsewhere hits them alike; "without"
replaces `StepInputs.install` by a stub. Prints one JSON line with the medians of wall and CPU time (CPU
time is the steadier measure on a shared machine) and the two per-step costs timed alone.

    .venv/bin/python benchmarks/input_digests.py --reps 5 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--mode", default="deterministic")
    args = parser.parse_args()
    import keras_repro
    from keras_repro import input_digest

    keras_repro.configure(seed=1234, mode=args.mode)
    import keras
    from _child import _build, _data

    x, y = _data()
    real_install = input_digest.StepInputs.install

    class _Off:
        reason = "disabled for the benchmark"

    times: dict[str, list[float]] = {"with": [], "without": []}
    cpu: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as run_dir:
        for rep in range(args.reps + 1):  # the first repetition warms up and is dropped
            for config in (("with", "without") if rep % 2 else ("without", "with")):
                input_digest.StepInputs.install = real_install if config == "with" else classmethod(lambda cls, m: _Off())
                start, start_cpu = time.perf_counter(), time.process_time()
                history = keras_repro.fit(lambda: _build(keras), x, y, epochs=args.epochs, batch_size=128, verbose=0,
                                          run_dir=run_dir)
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
                if rep:
                    times[config].append(seconds)
                    cpu[config].append(cpu_seconds)
                steps = history.run["data"].get("steps")
                assert (steps is not None) == (config == "with"), config
    with_s, without_s = statistics.median(times["with"]), statistics.median(times["without"])
    steps = len(history.run.steps)
    print(json.dumps({"steps_per_fit": steps, "with_s": with_s, "without_s": without_s,
                      "overhead_median": with_s / without_s - 1,
                      "overhead_min": min(times["with"]) / min(times["without"]) - 1,
                      "cpu_with_s": statistics.median(cpu["with"]), "cpu_without_s": statistics.median(cpu["without"]),
                      "cpu_overhead_median": statistics.median(cpu["with"]) / statistics.median(cpu["without"]) - 1,
                      "cpu_raw": cpu,
                      "per_step_parts_us": _parts(x[:128], y[:128]),
                      "step_us_without_min": 1e6 * min(times["without"]) / steps, "raw": times}))


def _parts(xb, yb, n=2000):
    """The two costs a step adds, timed alone (min of 5 rounds of n): the in-graph digest of one batch, and
    reading the digest variable after the step."""
    import tensorflow as tf

    from keras_repro.input_digest import digest_structure

    variable = tf.Variable(tf.zeros([3], tf.int64))

    @tf.function
    def with_digest(a, b):
        variable.assign(tf.stack([digest_structure(tf, a), digest_structure(tf, b), tf.constant(0, tf.int64)]))
        return a

    @tf.function
    def without(a, b):
        return a

    a, b = tf.constant(xb), tf.constant(yb)
    out = {}
    for name, fn in (("graph_call_with_digest", with_digest), ("graph_call_without", without),
                     ("variable_read", lambda a, b: variable.numpy())):
        fn(a, b)
        best = float("inf")
        for _ in range(5):
            start = time.process_time()  # CPU time: steadier than wall time on a loaded machine
            for _ in range(n):
                fn(a, b)
            best = min(best, (time.process_time() - start) / n)
        out[name] = best * 1e6
    out["digest_us"] = out["graph_call_with_digest"] - out["graph_call_without"]
    return out


if __name__ == "__main__":
    main()
