"""A tiny distributed training program the distribution tests run in fresh processes.

--strategy mirrored: MirroredStrategy over --devices logical CPUs of one process.
--strategy multiworker: MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG (see dist_cluster.py).
--strategy none: the same training without any strategy (for the worker-count comparison).
--strategy ps: an in-process ParameterServerStrategy cluster on 127.0.0.1 (must be refused).

Prints one JSON line per fit: record path, weight hashes, the hex of every step loss, the distribution
section. The order in the program is the order the docs prescribe: configure, split devices, create the
strategy, then build and fit. One process can fit several times with its strategy: each
`--scenario "--name N --how H --input I --seed S --run-dir D"` is one fit (without any, the top-level
--how/--input/--run-dir make the one fit).
"""

import argparse
import json
import shlex
import socket
import sys
import time

_T0 = time.time()


def mark(what: str) -> None:
    """Timestamps on stderr: where a slow child spends its time."""
    print(f"dist_child: {time.time() - _T0:6.2f}s {what}", file=sys.stderr, flush=True)


import numpy as np  # noqa: E402 - after mark(): the child times its own imports

import keras_repro  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--strategy", choices=["mirrored", "multiworker", "none", "ps", "central"], required=True)
parser.add_argument("--mode", default="bitwise")
parser.add_argument("--seed", type=int, default=None)
parser.add_argument("--devices", type=int, default=2, help="logical CPUs to split this process's CPU into")
parser.add_argument("--how", choices=["scope", "kwarg", "built"], default="scope",
                    help="scope: fit inside strategy.scope(); kwarg: fit(strategy=...); built: model built under the scope")
parser.add_argument("--input", choices=["numpy", "dataset"], default="numpy")
parser.add_argument("--dropout", type=float, default=0.25)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--run-dir")
parser.add_argument("--scenario", action="append", default=[], help="one fit: scenario arguments in one string")
args = parser.parse_args()

scenario_parser = argparse.ArgumentParser(prog="scenario")
scenario_parser.add_argument("--name", default="fit")
scenario_parser.add_argument("--how", choices=["scope", "kwarg", "built"], default=args.how)
scenario_parser.add_argument("--input", choices=["numpy", "dataset"], default=args.input)
scenario_parser.add_argument("--seed", type=int, default=None, help="fit(seed=...); default: the configured seed")
scenario_parser.add_argument("--run-dir", default=args.run_dir)
scenarios = [scenario_parser.parse_args(shlex.split(s)) for s in args.scenario] or [scenario_parser.parse_args([])]

keras_repro.configure(seed=args.seed, mode=args.mode)  # 1. before TensorFlow's runtime starts
from keras_repro import runtime  # noqa: E402

started_by_configure = runtime.runtime_started()  # it must not be: devices could no longer be split
mark("configured")

import tensorflow as tf  # noqa: E402

if args.devices > 1:  # 2. allowed: configure() did not start the runtime
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


strategy = None  # 3. the strategy (starts the runtime)
if args.strategy == "mirrored":
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.devices)])
elif args.strategy == "central":
    strategy = tf.distribute.experimental.CentralStorageStrategy([f"/cpu:{i}" for i in range(args.devices)])
elif args.strategy == "multiworker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
elif args.strategy == "ps":
    spec = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{_free_port()}"], "ps": [f"127.0.0.1:{_free_port()}"]})
    servers = [tf.distribute.Server(spec, job_name=job, task_index=0, protocol="grpc", start=True) for job in ("worker", "ps")]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc")
    strategy = tf.distribute.ParameterServerStrategy(resolver)

mark(f"strategy {type(strategy).__name__} ready")
import keras  # noqa: E402

data_rng = np.random.default_rng(1234)  # fixed data: only training randomness may differ
x = data_rng.normal(size=(256, 12)).astype("float32")
y = (x[:, :6].sum(axis=1) > 0).astype("int32")


def build():
    layers = [keras.Input((12,)), keras.layers.Dense(16, activation="relu")]
    if args.dropout:
        layers.append(keras.layers.Dropout(args.dropout))
    model = keras.Sequential([*layers, keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(s):
    inputs = (x, y)
    fit_kwargs = dict(epochs=args.epochs, verbose=0, run_dir=s.run_dir, batch_size=32)
    if s.seed is not None:
        fit_kwargs["seed"] = s.seed
    if s.input == "dataset":
        if s.seed is not None and args.mode != "off":
            runtime.seed_everything(s.seed)  # as configure(seed) did before the first pipeline was built
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256).batch(32)
        inputs = (ds,)
        del fit_kwargs["batch_size"]
    if strategy is None:
        return keras_repro.fit(build, *inputs, **fit_kwargs)
    if s.how == "kwarg":
        return keras_repro.fit(build, *inputs, strategy=strategy, **fit_kwargs)
    if s.how == "built":
        with strategy.scope():
            model = build()
        return keras_repro.fit(model, *inputs, **fit_kwargs)
    with strategy.scope():
        return keras_repro.fit(build, *inputs, **fit_kwargs)


for scenario in scenarios:
    try:
        history = fit(scenario)
    except keras_repro.ReproducibilityError as e:
        print(json.dumps({"name": scenario.name, "refused": f"{type(e).__name__}: {e}"}))
        sys.stdout.flush()
        sys.exit(3)
    mark(f"fit {scenario.name} done")
    run = history.run
    print(json.dumps({
        "name": scenario.name,
        "path": str(run.path),
        "initial": run.initial_weights_sha256,
        "final": run.final_weights_sha256,
        "steps": [float.hex(s) for s in run.steps],
        "epochs": [{k: float.hex(v) for k, v in e.items()} for e in run["metrics"]["epochs"]],
        "distribution": run.get("distribution"),
        "warnings": run["applied"]["warnings"],
        "runtime_started_by_configure": started_by_configure,
    }))
    sys.stdout.flush()
mark("exiting")
