"""tf.distribute under keras_repro: reruns are bit-identical, negative controls differ, refusals refuse.

Every training claim runs in fresh processes (tests/programs/dist_child.py; dist_cluster.py launches a
MultiWorkerMirroredStrategy job of 2 worker processes on 127.0.0.1). Module fixtures start them once, two
processes (or two jobs) at a time: 2 cores, ~9 s of TensorFlow import each. A MirroredStrategy child fits
several times with its strategy; what is fixed per process (the mode) gets its own pair of children.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import REPO, ChildSpec, describe_child, json_lines, run_children_concurrently

from keras_repro.distribution import check_strategy, cluster_layout, worker_seed
from keras_repro.errors import ReproducibilityError

PROGRAMS = REPO / "tests" / "programs"
CHILD = PROGRAMS / "dist_child.py"
CLUSTER = PROGRAMS / "dist_cluster.py"
CLEAN_ENV = {"TF_CONFIG": None, "KERAS_REPRO_RECORDS_FILE": None}


# Fresh processes -------------------------------------------------------------------------------------

def _mirrored(tmp: Path, name: str, process: list[str], *scenarios: str) -> ChildSpec:
    args = [sys.executable, str(CHILD), "--strategy", "mirrored", "--devices", "2", *process]
    for scenario in scenarios:
        args += ["--scenario", f"{scenario} --run-dir {tmp / name / scenario.split()[1]}"]
    return ChildSpec(args, env=CLEAN_ENV)


_LATE_PROGRAM = """
import tensorflow as tf, keras_repro
tf.distribute.MirroredStrategy()
try:
    keras_repro.configure(seed=1, mode="deterministic")
except keras_repro.TooLateError as e:
    print("TooLateError:", e)
"""


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory) -> dict:
    """Every MirroredStrategy child (and the two refusals), two at a time; name -> CompletedProcess."""
    tmp = tmp_path_factory.mktemp("mirrored")
    specs = {
        # fit inside strategy.scope(), and fit(strategy=...): the same run; then a tf.data input in the scope
        "bitwise-a": _mirrored(tmp, "bitwise-a", ["--mode", "bitwise", "--seed", "7"],
                               "--name s7 --how scope", "--name ds5 --how scope --input dataset --seed 5"),
        "bitwise-b": _mirrored(tmp, "bitwise-b", ["--mode", "bitwise", "--seed", "7"],
                               "--name s7 --how kwarg", "--name ds5 --how scope --input dataset --seed 5"),
        # a model built under the scope, then fit
        "deterministic-a": _mirrored(tmp, "deterministic-a", ["--mode", "deterministic", "--seed", "7"],
                                     "--name s7 --how built"),
        "deterministic-b": _mirrored(tmp, "deterministic-b", ["--mode", "deterministic", "--seed", "7"],
                                     "--name s7 --how built"),
        "off-a": _mirrored(tmp, "off-a", ["--mode", "off"], "--name off --how scope"),
        "off-b": _mirrored(tmp, "off-b", ["--mode", "off"], "--name off --how scope"),
        "ps": ChildSpec([sys.executable, str(CHILD), "--strategy", "ps", "--devices", "1", "--mode", "deterministic",
                         "--seed", "1", "--how", "scope", "--run-dir", str(tmp / "ps")], env=CLEAN_ENV, expect=3),
        "late": ChildSpec([sys.executable, "-c", _LATE_PROGRAM], env=CLEAN_ENV),
    }
    procs = run_children_concurrently(list(specs.values()), check=False)
    return {"tmp": tmp, **dict(zip(specs, procs, strict=True)), "specs": specs}


def mirrored_result(runs: dict, child: str, scenario: str) -> dict:
    proc, spec = runs[child], runs["specs"][child]
    assert proc.returncode == spec.expect, describe_child(proc, f"expected exit code {spec.expect}")
    for result in json_lines(proc):
        if result.get("name") == scenario:
            return result
    raise AssertionError(describe_child(proc, f"no result for scenario {scenario!r}"))


@pytest.fixture(scope="module")
def multiworker(tmp_path_factory) -> dict:
    """Two 2-worker jobs per mode, two jobs at a time; mode -> (tmp, [job a's workers, job b's workers]).

    Job i's workers announce their records to tmp/records-<i>.txt, as under `keras-repro check`.
    """
    jobs = {}
    for mode, extra in (("bitwise", ["--seed", "7"]), ("deterministic", ["--seed", "7"]), ("off", [])):
        tmp = tmp_path_factory.mktemp(f"multiworker-{mode}")
        for i in range(2):
            jobs[(mode, i)] = (tmp, ChildSpec(
                [sys.executable, str(CLUSTER), "--workers", "2", "--run-dir", str(tmp / f"job{i}"), "--mode", mode, *extra],
                env={**CLEAN_ENV, "KERAS_REPRO_RECORDS_FILE": str(tmp / f"records-{i}.txt")}))
    procs = dict(zip(jobs, run_children_concurrently([spec for _, spec in jobs.values()], check=False), strict=True))
    out = {}
    for mode in ("bitwise", "deterministic", "off"):
        workers = []
        for i in range(2):
            proc = procs[(mode, i)]
            workers.append(proc)
        out[mode] = (jobs[(mode, 0)][0], workers)
    return out


def job_workers(multiworker: dict, mode: str) -> tuple[Path, list[list[dict]]]:
    tmp, procs = multiworker[mode]
    jobs = []
    for proc in procs:
        assert proc.returncode == 0, describe_child(proc, "expected exit code 0")
        jobs.append(json_lines(proc)[-1]["workers"])
    return tmp, jobs


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
def test_mirrored_reruns_are_bit_identical(mirrored, mode, how_a, how_b):
    a, b = mirrored_result(mirrored, f"{mode}-a", "s7"), mirrored_result(mirrored, f"{mode}-b", "s7")
    assert f"--how {how_a}" in " ".join(mirrored["specs"][f"{mode}-a"].args)
    assert f"--how {how_b}" in " ".join(mirrored["specs"][f"{mode}-b"].args)
    assert_same_bits(a, b)
    assert len(a["steps"]) == 2 * 8  # 256 samples / global batch 32, 2 epochs
    dist = a["distribution"]
    assert dist["strategy"] == "MirroredStrategy"
    assert dist["replicas"] == 2 and dist["local_devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert dist["num_workers"] == 1 and dist["worker_index"] == 0 and dist["is_chief"] is True
    assert dist["worker_seed"] == worker_seed(7, 0)


@pytest.mark.slow
def test_mirrored_tf_data_input_inside_the_scope_is_bit_identical(mirrored):
    a, b = mirrored_result(mirrored, "bitwise-a", "ds5"), mirrored_result(mirrored, "bitwise-b", "ds5")
    assert_same_bits(a, b)


@pytest.mark.slow
def test_mirrored_negative_control_mode_off_without_seed_differs(mirrored):
    a, b = mirrored_result(mirrored, "off-a", "off"), mirrored_result(mirrored, "off-b", "off")
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
def test_multiworker_reruns_are_bit_identical(multiworker, mode):
    tmp_path, (job_a, job_b) = job_workers(multiworker, mode)
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
def test_multiworker_negative_control_mode_off_without_seed_differs(multiworker):
    _, (job_a, job_b) = job_workers(multiworker, "off")
    # The chief broadcasts initial values, so the workers of one job agree even unseeded...
    assert job_a[0]["initial"] == job_a[1]["initial"]
    # ...but two unseeded jobs do not.
    assert job_a[0]["initial"] != job_b[0]["initial"]
    assert_different_bits(job_a[0], job_b[0])


@pytest.mark.slow
def test_configure_leaves_the_runtime_unstarted_so_devices_can_be_split_and_refuses_after_a_strategy(mirrored):
    # configure -> split the CPU into 2 logical devices -> MirroredStrategy with 2 replicas: dist_child's order.
    a = mirrored_result(mirrored, "bitwise-a", "s7")
    assert a["runtime_started_by_configure"] is False, "configure() started TensorFlow's runtime"
    assert a["distribution"]["replicas"] == 2
    late = mirrored["late"]
    assert late.returncode == 0, describe_child(late)
    assert "TooLateError:" in late.stdout and "call keras_repro.configure(...) before" in late.stdout


# What keras_repro refuses ---------------------------------------------------------------------------

@pytest.mark.slow
def test_parameter_server_strategy_is_refused_in_deterministic_mode(mirrored):
    result = mirrored_result(mirrored, "ps", "fit")
    assert result["refused"].startswith("ReproducibilityError: Mode 'deterministic' cannot be kept under ParameterServerStrategy:")
    assert "MultiWorkerMirroredStrategy" in result["refused"]  # the fix is named
    assert not list((mirrored["tmp"] / "ps").rglob("run.json")), "a refused fit must not leave a record claiming a run"


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
