"""One benchmark measurement in a fresh process; prints one JSON line. Run by benchmarks/bench.py.

Each configuration runs in its own process because thread counts, op determinism and oneDNN are
process-wide and fixed when TensorFlow starts.

    python benchmarks/_child.py fit --config plain
    python benchmarks/_child.py fingerprint --shape 1048576,256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time

FIT_CONFIGS = ("plain", "manual", "wrapper", "seeded", "deterministic", "bitwise", "bitwise-t2")
SEED = 1234


def _data():
    import numpy as np

    rng = np.random.default_rng(7)  # fixed data: only training randomness may differ
    x = rng.standard_normal((32768, 128), dtype=np.float32)
    y = (x[:, :16].sum(axis=1) > 0).astype("int32") + 2 * (x[:, 16:32].sum(axis=1) > 0).astype("int32")
    return x, y


def _build(keras):
    model = keras.Sequential([
        keras.Input((128,)),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dense(4, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_fit(config: str, epochs: int, run_dir: str) -> dict:
    """Times one `fit` call (TF import, data and model building excluded)."""
    out: dict = {"config": config}
    if config == "plain" or config == "manual":
        import keras
        import tensorflow as tf

        if config == "manual":
            # What keras_repro's "deterministic" mode applies, by hand.
            from keras_repro.launcher import usable_cores

            threads = usable_cores()
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
            tf.config.experimental.enable_op_determinism()
            keras.utils.set_random_seed(SEED)
        x, y = _data()
        start = time.perf_counter()  # building counts on both sides: keras_repro.fit calls the builder
        model = _build(keras)
        model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
        out["seconds"] = time.perf_counter() - start
        out["weights_sha256"] = _weights_sha256(model)
    else:
        import keras_repro

        mode = {"wrapper": "deterministic", "bitwise-t2": "bitwise"}.get(config, config)
        threads = 2 if config == "bitwise-t2" else None
        keras_repro.configure(seed=SEED, mode=mode, threads=threads)
        import keras

        x, y = _data()
        start = time.perf_counter()
        history = keras_repro.fit(lambda: _build(keras), x, y, epochs=epochs, batch_size=128, verbose=0,
                                  run_dir=run_dir)
        out["seconds"] = time.perf_counter() - start
        out["weights_sha256"] = history.run.final_weights_sha256
        out["applied_threads"] = history.run.applied.get("intra_op_threads")
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _weights_sha256(model) -> str:
    import numpy as np

    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def run_fingerprint(shape: tuple[int, ...], reps: int) -> dict:
    """GB/s and peak extra memory (tracemalloc) of data.fingerprint, beside plain hashlib.sha256."""
    import tracemalloc

    import numpy as np

    from keras_repro.data import fingerprint

    a = np.ones(shape, np.float32)
    a.reshape(-1)[:: 4097] = np.arange(a.size // 4097 + 1, dtype=np.float32)[: a.reshape(-1)[::4097].size]
    gb = a.nbytes / 1e9
    rows = []
    for _ in range(reps):
        start = time.perf_counter()
        hashlib.sha256(memoryview(a.reshape(-1).view(np.uint8)))
        sha_s = time.perf_counter() - start
        tracemalloc.start()
        start = time.perf_counter()
        cpu = time.process_time()
        fingerprint(a)
        fp_s = time.perf_counter() - start
        fp_cpu = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"sha256_gbps": gb / sha_s, "fingerprint_gbps": gb / fp_s, "fingerprint_cpu_s": fp_cpu,
                     "peak_extra_mb": peak / 2**20})
    return {"shape": list(shape), "gb": gb, "reps": rows}


def run_dataset(reps: int) -> dict:
    """Throughput of a tf.data pipeline with and without keras_repro's DatasetTap (per-sample digests)."""
    import numpy as np
    import tensorflow as tf

    from keras_repro.data import fingerprint
    from keras_repro.dataset_tap import DatasetTap

    x = np.ones((65536, 1024), np.float32)  # 256 MiB
    y = np.zeros((65536,), np.int32)
    gb = (x.nbytes + y.nbytes) / 1e9

    def pipeline():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(256).prefetch(2)

    def consume(ds):
        start = time.perf_counter()
        for _ in ds:
            pass
        return time.perf_counter() - start

    consume(pipeline())  # warm up
    rows = []
    for _ in range(reps):
        plain_s = consume(pipeline())
        ds = pipeline()
        start = time.perf_counter()
        fp = fingerprint(ds)
        spec_s = time.perf_counter() - start
        tap = DatasetTap(limit=len(x))  # fingerprint every sample, the worst case (keras_repro taps 32)
        tapped_s = consume(tap.wrap(pipeline()))
        rows.append({"plain_gbps": gb / plain_s, "tapped_all_gbps": gb / tapped_s, "spec_seconds": spec_s,
                     "samples_seen": tap.count(), "kind": fp["kind"]})
        tap.close()
    return {"gb": gb, "reps": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("fit")
    p.add_argument("--config", choices=FIT_CONFIGS, required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--run-dir", default=os.path.join("bench-out", "runs"))
    p = sub.add_parser("fingerprint")
    p.add_argument("--shape", required=True)
    p.add_argument("--reps", type=int, default=5)
    p = sub.add_parser("dataset")
    p.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if args.what == "fit":
        result = run_fit(args.config, args.epochs, args.run_dir)
    elif args.what == "fingerprint":
        result = run_fingerprint(tuple(int(d) for d in args.shape.split(",")), args.reps)
    else:
        result = run_dataset(args.reps)
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    print(json.dumps(result))


if __name__ == "__main__":
    main()
