"""tf.distribute under keras_repro: reruns are bit-identical, negative controls differ, refusals refuse.

Every training claim runs in fresh processes (tests/programs/dist_child.py; dist_cluster.py launches a
MultiWorkerMirroredStrategy job of 2 worker processes on 127.0.0.1). Runs that are compared start
together: 2 cores, ~9 s of TensorFlow import each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import REPO, describe_child

from keras_repro.distribution import check_strategy, cluster_layout, worker_seed
from keras_repro.errors import ReproducibilityError

PROGRAMS = REPO / "tests" / "programs"
CHILD = PROGRAMS / "dist_child.py"
CLUSTER = PROGRAMS / "dist_cluster.py"


# Fresh processes -------------------------------------------------------------------------------------

def _start(cmd: list[str], records_file: Path | None = None, env_extra: dict | None = None,
           ) -> tuple[list[str], subprocess.Popen]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("TF_CONFIG", None)
    env.pop("KERAS_REPRO_RECORDS_FILE", None)
    if records_file is not None:  # as `keras-repro check` sets it
        env["KERAS_REPRO_RECORDS_FILE"] = str(records_file)
    env.update(env_extra or {})
    return cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(started: list[tuple[list[str], subprocess.Popen]], expect: int = 0) -> list[dict]:
    results = []
    for cmd, proc in started:
        out, err = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        assert proc.returncode == expect, describe_child(done, f"expected exit code {expect}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def mirrored(tmp_path: Path, *runs: list[str]) -> list[dict]:
    """Runs dist_child.py once per argument list, all at once; returns their JSON results."""
    return _finish([
        _start([sys.executable, str(CHILD), "--strategy", "mirrored", "--run-dir", str(tmp_path / f"run{i}"), *args])
        for i, args in enumerate(runs)
    ])


def multiworker(tmp_path: Path, *runs: list[str]) -> list[list[dict]]:
    """Runs one 2-worker job per argument list, all at once; returns each job's per-worker results.

    Job i's workers announce their records to tmp_path/records-<i>.txt, as under `keras-repro check`.
    """
    jobs = _finish([
        _start([sys.executable, str(CLUSTER), "--workers", "2", "--run-dir", str(tmp_path / f"job{i}"), *args],
               records_file=tmp_path / f"records-{i}.txt")
        for i, args in enumerate(runs)
    ])
    return [job["workers"] for job in jobs]


def assert_same_bits(a: dict, b: dict, what: str = "reruns") -> None:
    assert a["initial"] == b["initial"], f"{what}: initial weights differ"
    assert a["steps"] == b["steps"], f"{what}: per-step losses differ"
    assert a["epochs"] == b["epochs"], f"{what}: epoch metrics differ"
    assert a["final"] == b["final"], f"{what}: final weights differ"


def assert_different_bits(a: dict, b: dict) -> None:
    assert a["final"] != b["final"] and a["steps"] != b["steps"], "runs that should differ are identical"


# MirroredStrategy over 2 logical CPUs of one process ------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode, how_a, how_b", [
    ("bitwise", "scope", "kwarg"),      # fit inside strategy.scope(), and fit(strategy=...): the same run
    ("deterministic", "built", "built"),  # a model built under the scope, then fit
])
def test_mirrored_reruns_are_bit_identical(tmp_path, mode, how_a, how_b):
    common = ["--mode", mode, "--seed", "7", "--devices", "2"]
    a, b = mirrored(tmp_path, [*common, "--how", how_a], [*common, "--how", how_b])
    assert_same_bits(a, b)
    assert len(a["steps"]) == 2 * 8  # 256 samples / global batch 32, 2 epochs
    dist = a["distribution"]
    assert dist["strategy"] == "MirroredStrategy"
    assert dist["replicas"] == 2 and dist["local_devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert dist["num_workers"] == 1 and dist["worker_index"] == 0 and dist["is_chief"] is True
    assert dist["worker_seed"] == worker_seed(7, 0)


@pytest.mark.slow
def test_mirrored_tf_data_input_inside_the_scope_is_bit_identical(tmp_path):
    args = ["--mode", "bitwise", "--seed", "5", "--input", "dataset", "--how", "scope"]
    a, b = mirrored(tmp_path, args, args)
    assert_same_bits(a, b)


@pytest.mark.slow
def test_mirrored_negative_control_mode_off_without_seed_differs(tmp_path):
    a, b = mirrored(tmp_path, ["--mode", "off", "--how", "scope"], ["--mode", "off", "--how", "scope"])
    assert a["initial"] != b["initial"], "mode off without a seed must not seed the weights"
    assert_different_bits(a, b)


# MultiWorkerMirroredStrategy: 2 worker processes on 127.0.0.1 ---------------------------------------

def _check_job(workers: list[dict], tmp_dir: Path) -> None:
    chief, other = workers
    assert_same_bits(chief, other, "the two workers of one synchronous job")
    assert Path(chief["path"]).parent.parent == tmp_dir, "the chief's record goes to run_dir"
    assert Path(other["path"]).parent.parent == tmp_dir / "workers" / "worker-1"
    for index, worker in enumerate(workers):
        dist = worker["distribution"]
        assert dist["strategy"] == "MultiWorkerMirroredStrategy"
        assert dist["strategy_class"].endswith(".CollectiveAllReduceStrategy")  # the class TF exports under that name
        assert dist["replicas"] == 2 and dist["local_replicas"] == 1
        assert dist["num_workers"] == 2 and dist["worker_index"] == index and dist["is_chief"] is (index == 0)
        assert dist["task_type"] == "worker" and dist["task_index"] == index
        assert dist["cluster"] == {"worker": 2}
        assert "127.0.0.1" not in json.dumps(dist), "no addresses or ports in the distribution section"
        assert len(dist["workarounds"]) == 2  # Keras 3.15's two multi-worker fit failures


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bitwise", "deterministic"])
def test_multiworker_reruns_are_bit_identical(tmp_path, mode):
    args = ["--mode", mode, "--seed", "7"]
    job_a, job_b = multiworker(tmp_path, args, args)
    _check_job(job_a, tmp_path / "job0")
    _check_job(job_b, tmp_path / "job1")
    for a, b in zip(job_a, job_b, strict=True):
        assert_same_bits(a, b)
    assert job_a[0]["distribution"]["worker_seed"] != job_a[1]["distribution"]["worker_seed"]
    announced = (tmp_path / "records-0.txt").read_text().splitlines()
    assert announced == [str(Path(job_a[0]["path"]).resolve())], "only the chief announces its record to `check`"

    import keras_repro

    assert keras_repro.compare(job_a[0]["path"], job_b[0]["path"]).identical


@pytest.mark.slow
def test_multiworker_negative_control_mode_off_without_seed_differs(tmp_path):
    job_a, job_b = multiworker(tmp_path, ["--mode", "off"], ["--mode", "off"])
    # The chief broadcasts initial values, so the workers of one job agree even unseeded...
    assert job_a[0]["initial"] == job_a[1]["initial"]
    # ...but two unseeded jobs do not.
    assert job_a[0]["initial"] != job_b[0]["initial"]
    assert_different_bits(job_a[0], job_b[0])


_ORDER_PROGRAM = """
import keras_repro, tensorflow as tf
from keras_repro import runtime
keras_repro.configure(seed=1, mode="bitwise")
assert not runtime.runtime_started(), "configure() started TensorFlow's runtime"
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
assert tf.distribute.MirroredStrategy().num_replicas_in_sync == 2
"""

_LATE_PROGRAM = """
import tensorflow as tf, keras_repro
tf.distribute.MirroredStrategy()
try:
    keras_repro.configure(seed=1, mode="deterministic")
except keras_repro.TooLateError as e:
    print("TooLateError:", e)
"""


@pytest.mark.slow
def test_configure_leaves_the_runtime_unstarted_so_devices_can_be_split_and_refuses_after_a_strategy():
    # _ORDER_PROGRAM imports TF before configure(mode="bitwise"): on a CPU with AVX-512 VNNI/BF16 TF then
    # starts with oneDNN on, which bitwise refuses as too late; the subject here is devices, not oneDNN.
    no_onednn = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    started = [_start([sys.executable, "-c", _ORDER_PROGRAM], env_extra=no_onednn),
               _start([sys.executable, "-c", _LATE_PROGRAM])]
    outputs = []
    for cmd, proc in started:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, describe_child(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
        outputs.append(out)
    assert "TooLateError:" in outputs[1] and "call keras_repro.configure(...) before" in outputs[1]


# What keras_repro refuses ---------------------------------------------------------------------------

@pytest.mark.slow
def test_parameter_server_strategy_is_refused_in_deterministic_mode(tmp_path):
    cmd, proc = _start([sys.executable, str(CHILD), "--strategy", "ps", "--devices", "1", "--mode", "deterministic",
                        "--seed", "1", "--how", "scope", "--run-dir", str(tmp_path)])
    (result,) = _finish([(cmd, proc)], expect=3)
    assert result["refused"].startswith("ReproducibilityError: Mode 'deterministic' cannot be kept under ParameterServerStrategy:")
    assert "MultiWorkerMirroredStrategy" in result["refused"]  # the fix is named
    assert not list(tmp_path.rglob("run.json")), "a refused fit must not leave a record claiming a run"


def _fake_strategy(class_name: str) -> object:
    return type(class_name, (), {})()


@pytest.mark.parametrize("name", ["ParameterServerStrategyV2", "ParameterServerStrategyV1"])
@pytest.mark.parametrize("mode", ["deterministic", "bitwise"])
def test_parameter_server_strategies_are_refused(name, mode):
    with pytest.raises(ReproducibilityError, match="asynchronously"):
        check_strategy(_fake_strategy(name), mode)


def test_parameter_server_strategy_is_only_warned_about_in_seeded_mode_and_silent_when_off():
    (warning,) = check_strategy(_fake_strategy("ParameterServerStrategyV2"), "seeded")
    assert "cannot make it repeatable" in warning
    assert check_strategy(_fake_strategy("ParameterServerStrategyV2"), "off") == []


def test_tpu_strategy_is_refused_in_bitwise_and_flagged_in_deterministic():
    with pytest.raises(ReproducibilityError, match="CPU only"):
        check_strategy(_fake_strategy("TPUStrategyV2"), "bitwise")
    assert check_strategy(_fake_strategy("TPUStrategyV2"), "deterministic")


def test_synchronous_strategies_pass():
    for name in ("MirroredStrategy", "CollectiveAllReduceStrategy", "OneDeviceStrategy", "CentralStorageStrategy"):
        assert check_strategy(_fake_strategy(name), "bitwise") == []


# Seeds and layout, without TensorFlow ----------------------------------------------------------------

def test_worker_seeds_are_stable_distinct_and_spawned_from_the_run_seed():
    import numpy as np

    seeds = [worker_seed(42, i) for i in range(8)]
    assert len(set(seeds)) == 8
    assert seeds == [worker_seed(42, i) for i in range(8)]
    assert seeds[3] == int(np.random.SeedSequence(42).spawn(4)[3].generate_state(1, np.uint32)[0])
    assert worker_seed(43, 0) != seeds[0]


def _resolver(cluster: dict, task_type: str | None, task_id: int | None) -> SimpleNamespace:
    return SimpleNamespace(cluster_resolver=SimpleNamespace(
        cluster_spec=lambda: SimpleNamespace(as_dict=lambda: cluster), task_type=task_type, task_id=task_id))


def test_cluster_layout_counts_tasks_and_never_records_addresses():
    cluster = {"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222", "10.0.0.3:2222"], "ps": ["10.0.0.4:2222"]}
    chief = cluster_layout(_resolver(cluster, "chief", 0))
    worker = cluster_layout(_resolver(cluster, "worker", 1))
    assert chief == {"task_type": "chief", "task_index": 0, "worker_index": 0, "num_workers": 3, "is_chief": True,
                     "cluster": {"chief": 1, "ps": 1, "worker": 2}}
    assert worker["worker_index"] == 2 and worker["is_chief"] is False and worker["num_workers"] == 3
    assert "10.0.0" not in json.dumps([chief, worker])


def test_cluster_layout_of_a_single_process():
    layout = cluster_layout(None)
    assert layout["num_workers"] == 1 and layout["worker_index"] == 0 and layout["is_chief"] is True
    assert layout["cluster"] is None and layout["task_type"] is None
