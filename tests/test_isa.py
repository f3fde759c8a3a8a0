"""The CPU instruction-set pin (keras_repro.isa), cpu_flags and packages in the record, `diff` naming
them, `keras-repro env`.

In-process tests for parsing, validation, merging, diff and the env command; one batch of fresh
processes (started together) for the claims. Other CPUs are emulated with caps: a lower cap is a CPU
with fewer features (docs/portability.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from importlib import metadata

import pytest

from helpers import PYTHON, REPO, make_record, record_dict, run_child

from keras_repro import cli, isa
from keras_repro.comparison import compare
from keras_repro.environment import installed_packages
from keras_repro.errors import InvalidPolicyError, ReproducibilityError
from keras_repro.launcher import launch_environment
from keras_repro.policy import Policy, resolve

AVX2_CPU = ["avx", "avx2", "fma", "pni", "sse", "sse2", "sse4_1", "sse4_2", "ssse3"]
AVX512_CPU = sorted(AVX2_CPU + ["avx512_bf16", "avx512_vnni", "avx512bw", "avx512dq", "avx512f", "avx512vl"])
CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx aes avx2 avx512f\n"


# --- validation -----------------------------------------------------------------------------------


def test_valid_levels_are_canonicalised_and_native_means_no_pin():
    assert isa.validate_isa("avx2") == "AVX2" and isa.validate_isa(" AVX512_core ") == "AVX512_CORE"
    assert isa.validate_isa("Native") == "native" and isa.validate_isa(None) is None
    assert Policy.create(isa="avx").isa == "AVX"


@pytest.mark.parametrize("value", ["AVX3", "avx-2", "", 2, True, "DEFAULT"])
def test_levels_that_do_not_exist_are_refused_naming_the_valid_ones(value):
    for call in (lambda: isa.validate_isa(value), lambda: Policy(isa=value), lambda: Policy.create(isa=value)):
        with pytest.raises(InvalidPolicyError) as e:
            call()
        assert "SSE41, AVX, AVX2, AVX512_CORE" in str(e.value) and "Fix:" in str(e.value)


def test_env_and_flag_values_are_validated_under_their_own_names():
    with pytest.raises(InvalidPolicyError, match="KERAS_REPRO_ISA"):
        resolve(environ={"KERAS_REPRO_ISA": "avx9"})
    with pytest.raises(InvalidPolicyError, match="--repro_isa"):
        resolve(flag_values={"isa": "avx9"}, environ={})
    policy, sources = resolve(flag_values={"isa": "avx"}, environ={"KERAS_REPRO_ISA": "SSE41"})
    assert policy.isa == "AVX" and sources["isa"] == "flag"
    policy, sources = resolve(isa="AVX2", environ={"KERAS_REPRO_ISA": "SSE41"})
    assert policy.isa == "AVX2" and sources["isa"] == "explicit"


def test_isa_appears_in_the_asked_policy_only_when_asked():
    assert Policy.create(seed=1).as_dict() == {"seed": 1, "mode": "deterministic", "threads": None}
    assert Policy.create(seed=1, isa="AVX").as_dict()["isa"] == "AVX"
    assert "isa" not in resolve(environ={})[1]


def test_repro_isa_flag_feeds_the_policy():
    from absl import flags

    from keras_repro.flags import define_flags, parsed_policy_values

    fv = flags.FlagValues()
    define_flags(fv)
    fv(["prog", "--repro_isa=avx512_core", "--repro_mode=bitwise"])
    policy, _ = resolve(flag_values=parsed_policy_values(fv), environ={})
    assert policy.isa == "AVX512_CORE" and policy.mode == "bitwise"


# --- CPU flags and the pin ------------------------------------------------------------------------


def test_cpu_flags_are_the_isa_extensions_sorted_as_cpuinfo_spells_them():
    assert isa.read_cpu_flags(CPUINFO) == ["avx", "avx2", "avx512f", "fma", "pni", "sse", "sse2", "sse4_1", "sse4_2", "ssse3"]
    assert isa.read_cpu_flags("processor : 0\n") is None
    assert isa.read_cpu_flags("Features\t: fp asimd sve\n") == []  # aarch64 spells it "Features"
    here = isa.read_cpu_flags()
    if isa.is_x86():
        assert here and "sse2" in here and here == sorted(here)


def test_the_pin_sets_both_caps_and_keeps_the_users_xla_flags():
    pin = isa.pin_environment("AVX2", {"XLA_FLAGS": "--xla_dump_to=/tmp/d"}, cpu_flags=AVX2_CPU, machine="x86_64")
    assert pin.level == "AVX2"
    assert pin.changes == {"ONEDNN_MAX_CPU_ISA": "AVX2", "XLA_FLAGS": "--xla_dump_to=/tmp/d --xla_cpu_max_isa=AVX2"}
    same = {"ONEDNN_MAX_CPU_ISA": "avx2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}
    assert isa.pin_environment("AVX2", same, cpu_flags=AVX2_CPU, machine="x86_64").changes == {}
    assert isa.merge_xla_flags(None, "SSE41") == "--xla_cpu_max_isa=SSE4_2"


@pytest.mark.parametrize("environ,variable", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX"}, "ONEDNN_MAX_CPU_ISA=AVX"),
    ({"DNNL_MAX_CPU_ISA": "SSE41"}, "DNNL_MAX_CPU_ISA=SSE41"),
    ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX512 --xla_dump_to=/x"}, "--xla_cpu_max_isa=AVX512"),
])
def test_a_user_cap_that_conflicts_is_refused_naming_the_variable_and_the_fix(environ, variable):
    with pytest.raises(ReproducibilityError) as e:
        isa.pin_environment("AVX2", environ, cpu_flags=AVX2_CPU, machine="x86_64")
    assert variable in str(e.value) and "Fix:" in str(e.value) and "\n" not in str(e.value)


def test_a_cpu_without_the_level_is_refused_never_downgraded():
    with pytest.raises(ReproducibilityError) as e:
        isa.pin_environment("AVX512_CORE", {}, cpu_flags=AVX2_CPU, machine="x86_64")
    message = str(e.value)
    assert "lacks avx512f avx512bw avx512vl avx512dq" in message and "isa='AVX2'" in message and "Fix:" in message
    assert isa.pin_environment("AVX512_CORE", {}, cpu_flags=AVX512_CPU, machine="x86_64").level == "AVX512_CORE"


def test_non_x86_cpus_record_that_bits_are_per_architecture():
    pin = isa.pin_environment("AVX2", {}, cpu_flags=[], machine="aarch64", explicit=False)
    assert pin.level is None and pin.changes == {} and "per CPU architecture" in (pin.warning or "")
    with pytest.raises(ReproducibilityError, match="aarch64"):
        isa.pin_environment("AVX2", {}, cpu_flags=[], machine="aarch64", explicit=True)
    assert isa.pin_environment("native", {"ONEDNN_MAX_CPU_ISA": "AVX"}).changes == {}


def test_the_launcher_pins_bitwise_and_explicit_levels_and_refuses_a_conflicting_cap():
    bitwise = launch_environment(Policy.create(seed=1, mode="bitwise"), environ={})
    if not isa.is_x86() or isa.missing_features("AVX2", isa.read_cpu_flags() or []):
        pytest.skip("this CPU has no AVX2")
    assert bitwise["ONEDNN_MAX_CPU_ISA"] == "AVX2" and bitwise["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2"
    deterministic = launch_environment(Policy.create(seed=1, mode="deterministic"), environ={})
    assert "ONEDNN_MAX_CPU_ISA" not in deterministic
    explicit = launch_environment(Policy.create(seed=1, mode="deterministic", isa="AVX"), environ={})
    assert explicit["ONEDNN_MAX_CPU_ISA"] == "AVX" and explicit["KERAS_REPRO_ISA"] == "AVX"
    off = launch_environment(Policy.create(mode="off", isa="AVX"), environ={})
    assert "ONEDNN_MAX_CPU_ISA" not in off
    with pytest.raises(ReproducibilityError, match="ONEDNN_MAX_CPU_ISA=SSE41"):
        launch_environment(Policy.create(seed=1, mode="bitwise"), environ={"ONEDNN_MAX_CPU_ISA": "SSE41"})


# --- packages -------------------------------------------------------------------------------------


def test_packages_are_every_distribution_with_its_version_fast():
    best = min(_timed(installed_packages) for _ in range(3))
    packages = installed_packages()
    assert best < 0.1, f"installed_packages took {best * 1000:.0f} ms"
    assert packages["numpy"] == metadata.version("numpy") and packages["pytest"] == metadata.version("pytest")
    expected = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
    assert expected <= set(packages), expected - set(packages)
    assert any(name.startswith(("tensorflow", "tf-nightly")) for name in packages)  # its own name (tensorflow-cpu)


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- diff -----------------------------------------------------------------------------------------


def test_diff_names_another_cpu_feature_set_as_a_recorded_difference_when_results_agree():
    a = record_dict("a", environment__cpu_flags=AVX2_CPU, applied__isa="AVX2")
    b = record_dict("b", environment__cpu_flags=AVX512_CPU, applied__isa="AVX2")
    d = compare(a, b)
    assert d.identical
    line = next(line for line in d.lines() if "CPU instruction set" in line)
    assert line.startswith("recorded difference (the results are identical): CPU instruction set: ")
    assert "avx avx2 fma -> sse4_1 sse4_2 avx avx2 fma avx512f" in line and "only in run B: avx512_bf16" in line
    assert "both runs pinned AVX2" in line


def test_diff_names_the_cpu_and_an_unpinned_run_as_causes_when_results_differ():
    a = record_dict("a", environment__cpu_flags=AVX2_CPU, applied__isa="AVX2")
    b = record_dict("b", environment__cpu_flags=AVX512_CPU, applied__isa="native",
                    metrics__steps=[2.5, 2.25, 2.125, 2.0, 1.5, 1.25, 1.125, 1.0, 0.75, 0.625, 0.5, 0.4375000001])
    d = compare(a, b)
    messages = [c.message for c in d.causes]
    assert not d.identical and "isa: AVX2 -> native" in messages
    cpu = next(c for c in d.causes if c.field == "environment.cpu_flags")
    assert cpu.category == "hardware" and "run B did not pin" in cpu.message


def test_diff_names_every_changed_package_frameworks_first():
    pa = {"absl-py": "2.1.0", "h5py": "3.10.0", "ml-dtypes": "0.5.0", "numpy": "2.4.6", "protobuf": "7.36.2", "tensorflow-cpu": "2.21.0"}
    pb = {**pa, "absl-py": "2.2.0", "ml-dtypes": "0.6.0", "protobuf": "7.37.0", "jax": "0.7.0"}
    del pb["h5py"]
    d = compare(record_dict("a", environment__packages=pa), record_dict("b", environment__packages=pb))
    assert [c.message for c in d.causes] == [
        "package ml-dtypes: 0.5.0 -> 0.6.0",
        "package protobuf: 7.36.2 -> 7.37.0",
        "package jax: not installed -> 0.7.0",
        "package absl-py: 2.1.0 -> 2.2.0",
        "package h5py: 3.10.0 -> not installed",
    ]
    assert {c.category for c in d.causes} == {"versions"}


def test_a_framework_version_is_said_once():
    pa, pb = {"tensorflow-cpu": "2.21.0"}, {"tensorflow-cpu": "2.22.0"}
    d = compare(record_dict("a", environment__packages=pa),
                record_dict("b", environment__packages=pb, environment__tensorflow="2.22.0"))
    assert [c.message for c in d.causes] == ["version tensorflow: 2.21.0 -> 2.22.0"]


# --- keras-repro env ------------------------------------------------------------------------------


def test_env_prints_the_recorded_packages_as_pip_requirements(tmp_path, capsys):
    path = make_record(tmp_path, environment__packages={"tensorflow-cpu": "2.21.0", "numpy": "2.4.6", "keras": "3.15.1"})
    assert cli.main(["env", str(path.parent)]) == 0
    assert capsys.readouterr().out.splitlines() == ["keras==3.15.1", "numpy==2.4.6", "tensorflow-cpu==2.21.0"]


@pytest.mark.parametrize("kind", ["missing", "not-json", "no-packages", "bad-version"])
def test_env_on_a_missing_or_malformed_record_exits_2_with_one_line(tmp_path, capsys, kind):
    if kind == "missing":
        target = tmp_path / "nope"
    elif kind == "not-json":
        target = tmp_path / "run.json"
        target.write_text("{not json", encoding="utf-8")
    elif kind == "no-packages":
        target = make_record(tmp_path)
    else:
        target = make_record(tmp_path, environment__packages={"numpy": None})
    assert cli.main(["env", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-repro: error: ") and err.count("\n") == 1, err


def test_env_does_not_import_tensorflow(tmp_path):
    path = make_record(tmp_path, environment__packages={"numpy": "2.4.6"})
    code = ("import sys; from keras_repro.cli import main; rc = main(['env', sys.argv[1]]); "
            "assert 'tensorflow' not in sys.modules, 'imported TF'; sys.exit(rc)")
    proc = run_child([PYTHON, "-c", code, str(path)])
    assert proc.stdout == "numpy==2.4.6\n"


# --- fresh processes: the claims ------------------------------------------------------------------

CHILD = str(REPO / "tests" / "programs" / "isa_child.py")
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}
AVX_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX", "XLA_FLAGS": "--xla_cpu_max_isa=AVX"}


def _needs_avx2() -> None:
    flags = isa.read_cpu_flags() or []
    if not isa.is_x86() or isa.missing_features("AVX2", flags):
        pytest.skip("the claims are measured on x86-64 CPUs with AVX2")


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Five fresh processes, started together: the pin by configure, by the launcher (fit alone), by fit
    alone, and two unpinned runs under caps the user exported (AVX2: the same cap; AVX: a CPU with fewer
    features, the negative control)."""
    _needs_avx2()
    root = tmp_path_factory.mktemp("isa")
    clean = {"ONEDNN_MAX_CPU_ISA": None, "DNNL_MAX_CPU_ISA": None, "XLA_FLAGS": None, "KERAS_REPRO_ISA": None,
             "KERAS_REPRO_MODE": None, "KERAS_REPRO_SEED": None, "KERAS_REPRO_THREADS": None,
             "TF_ENABLE_ONEDNN_OPTS": None, "TF_CPP_MIN_LOG_LEVEL": "2"}
    specs = {
        "configure": ([PYTHON, CHILD, "configure"], {}),
        "launcher": ([PYTHON, "-m", "keras_repro", "run", "--seed", "42", "--mode", "bitwise", "--",
                      PYTHON, CHILD, "fit-alone"], {}),
        "fit_alone": ([PYTHON, CHILD, "fit-alone"], {}),
        "same_cap": ([PYTHON, CHILD, "native"], AVX2_CAPS),
        "lower_cap": ([PYTHON, CHILD, "native"], AVX_CAPS),
    }
    started = {}
    for name, (cmd, extra) in specs.items():
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        for key, value in {**clean, **extra}.items():
            env.pop(key, None) if value is None else env.__setitem__(key, value)
        started[name] = subprocess.Popen([*cmd, str(root / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=env)
    results = {}
    for name, proc in started.items():
        out, err = proc.communicate(timeout=300)
        lines = out.strip().splitlines()
        results[name] = {"code": proc.returncode, "stderr": err[-3000:],
                         **(json.loads(lines[-1]) if proc.returncode == 0 and lines else {})}
    return results


def _ok(result):
    assert result["code"] == 0, result["stderr"]
    return result


@pytest.mark.slow
def test_configure_pins_before_tensorflow_is_imported_and_the_probe_verifies_it(children):
    run = _ok(children["configure"])
    assert run["at_tf_import"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "--xla_cpu_max_isa=AVX2" in run["at_tf_import"]["XLA_FLAGS"]
    assert run["isa"] == "AVX2"
    assert run["probe"]["pinned"] == "AVX2" and run["probe"]["level"] == "AVX2" and run["probe"]["verified"] is True


@pytest.mark.slow
def test_the_pin_gives_the_bits_of_the_same_cap_exported_and_a_lower_cap_differs(children):
    pinned, same, lower = _ok(children["configure"]), _ok(children["same_cap"]), _ok(children["lower_cap"])
    assert same["isa"] == "native" and same["probe"]["level"] == "AVX2"
    assert (same["weights"], same["steps"], same["xla"]) == (pinned["weights"], pinned["steps"], pinned["xla"])
    # Negative control: a CPU with fewer features (AVX, no FMA) gives other bits, in Keras and in XLA.
    assert lower["weights"] != pinned["weights"] and lower["xla"] != pinned["xla"]


@pytest.mark.slow
def test_a_run_under_a_lower_cap_is_refused_and_diff_names_it(children, capsys):
    pinned, lower = _ok(children["configure"]), _ok(children["lower_cap"])
    assert lower["refused"].startswith("ReproducibilityError: ONEDNN_MAX_CPU_ISA=AVX is set")
    assert "Fix:" in lower["refused"]
    assert cli.main(["diff", pinned["path"], lower["path"]]) == 1
    out = capsys.readouterr().out
    assert "cause: isa: AVX2 -> native" in out
    assert "cause: environment variable ONEDNN_MAX_CPU_ISA: 'AVX2' -> 'AVX'" in out
    assert "cause: CPU kernels that ran (probe): AVX2 -> AVX" in out


@pytest.mark.slow
def test_the_launcher_pins_before_python_starts_and_fit_alone_gets_the_same_bits(children):
    pinned, launched = _ok(children["configure"]), _ok(children["launcher"])
    assert launched["at_tf_import"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and launched["probe"]["verified"] is True
    assert (launched["weights"], launched["steps"], launched["xla"]) == (pinned["weights"], pinned["steps"], pinned["xla"])


@pytest.mark.slow
def test_fit_alone_pins_before_tensorflow_is_imported(children):
    pinned, alone = _ok(children["configure"]), _ok(children["fit_alone"])
    assert alone["at_tf_import"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert (alone["weights"], alone["steps"], alone["xla"]) == (pinned["weights"], pinned["steps"], pinned["xla"])


def test_run_refuses_a_bad_isa_or_a_conflicting_cap_with_one_line(monkeypatch, capsys):
    assert cli.main(["run", "--isa", "avx3", "--", "true"]) == 2
    assert "Expected `isa` to be one of" in capsys.readouterr().err
    if not isa.is_x86() or isa.missing_features("AVX2", isa.read_cpu_flags() or []):
        pytest.skip("this CPU has no AVX2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert cli.main(["run", "--mode", "bitwise", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "ONEDNN_MAX_CPU_ISA=SSE41 is set" in err and err.count("\n") == 1


def test_a_pin_after_the_runtime_started_is_too_late_unless_already_in_place(monkeypatch):
    from keras_repro import runtime
    from keras_repro.errors import TooLateError

    if not isa.is_x86() or isa.missing_features("AVX2", isa.read_cpu_flags() or []):
        pytest.skip("this CPU has no AVX2")
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "runtime_started", lambda: True)
    with pytest.raises(TooLateError) as e:
        runtime._pin_isa(Policy.create(seed=1, mode="bitwise"), [])
    assert "already started" in str(e.value) and "ONEDNN_MAX_CPU_ISA='AVX2'" in str(e.value) and "Fix:" in str(e.value)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    assert runtime._pin_isa(Policy.create(seed=1, mode="bitwise"), []) == ("AVX2", "ONEDNN_MAX_CPU_ISA=AVX2 --xla_cpu_max_isa=AVX2")


def test_a_second_configure_before_the_runtime_starts_undoes_the_first_pin(monkeypatch):
    from keras_repro import runtime

    if not isa.is_x86() or isa.missing_features("AVX2", isa.read_cpu_flags() or []):
        pytest.skip("this CPU has no AVX2")
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/d")
    monkeypatch.setattr(runtime, "runtime_started", lambda: False)
    monkeypatch.setattr(runtime, "_STATE", runtime._ProcessState())
    assert runtime._pin_isa(Policy.create(mode="bitwise"), [])[0] == "AVX2"
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/d --xla_cpu_max_isa=AVX2"
    assert runtime._pin_isa(Policy.create(mode="bitwise", isa="AVX"), [])[0] == "AVX"  # not refused as the user's cap
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX"
    assert runtime._pin_isa(Policy.create(mode="seeded"), [])[0] == "native"
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ and os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/d"
