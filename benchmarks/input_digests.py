"""Cost of the per-step input digests (data.steps): keras_repro.fit with and without them, side by side.

Both configurations run in one process on the bench model of benchmarks/_child.py (MLP 128-512-512-4,
batch 128) and alternate within every repetition, so that load from elsewhere hits them alike; "without"
replaces `StepInputs.install` by a stub. Prints one JSON line with the medians.

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
    with tempfile.TemporaryDirectory() as run_dir:
        for rep in range(args.reps + 1):  # the first repetition warms up and is dropped
            for config in (("with", "without") if rep % 2 else ("without", "with")):
                input_digest.StepInputs.install = real_install if config == "with" else classmethod(lambda cls, m: _Off())
                start = time.perf_counter()
                history = keras_repro.fit(lambda: _build(keras), x, y, epochs=args.epochs, batch_size=128, verbose=0,
                                          run_dir=run_dir)
                seconds = time.perf_counter() - start
                if rep:
                    times[config].append(seconds)
                steps = history.run["data"].get("steps")
                assert (steps is not None) == (config == "with"), config
    with_s, without_s = statistics.median(times["with"]), statistics.median(times["without"])
    print(json.dumps({"steps_per_fit": len(history.run.steps), "with_s": with_s, "without_s": without_s,
                      "overhead": with_s / without_s - 1, "raw": times}))


if __name__ == "__main__":
    main()
