"""keras_repro.autolog, in-process and fast: argument binding, the re-entrancy guard, idempotence,
disable, the tf_keras refusal, the import hook, the launch environment and the bootstrap (children that
never import TensorFlow). What needs TensorFlow is in tests/test_autolog_e2e.py.

The patching is tested on a stand-in for `keras.Model` whose `fit` has Keras 3.15's signature
(tests/test_autolog_e2e.py checks the real one), so no test here imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from helpers import PYTHON, REPO, make_record, run_child

import keras_repro
from keras_repro import import_hooks
from keras_repro.autolog import bind_fit_arguments, keras_fit
from keras_repro.cli import main
from keras_repro.launcher import BOOTSTRAP_DIR, autolog_environment

autolog_module = sys.modules["keras_repro.autolog"]  # `keras_repro.autolog` is the function

KERAS_FIT_PARAMETERS = (
    "x", "y", "batch_size", "epochs", "verbose", "callbacks", "validation_split", "validation_data", "shuffle",
    "class_weight", "sample_weight", "initial_epoch", "steps_per_epoch", "validation_steps",
    "validation_batch_size", "validation_freq",
)


class Trainer:
    """Stands in for Keras's TensorFlowTrainer: `fit` with Keras's signature, counting its calls."""

    calls: list = []

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
        given = {k: v for k, v in locals().items() if k != "self"}
        Trainer.calls.append((self, given))
        return "history"


class Model(Trainer):
    pass


class Overriding(Model):
    """A user's subclass whose fit adds to the call and then calls super().fit."""

    override_calls = 0

    def fit(self, *args, **kwargs):
        Overriding.override_calls += 1
        return super().fit(*args, **kwargs)


@pytest.fixture
def fake_keras(monkeypatch):
    """`keras` in sys.modules is a stand-in module whose Model is `Model`; keras_repro.fit is recorded."""
    Trainer.calls = []
    Overriding.override_calls = 0
    module = types.ModuleType("keras")
    module.Model = Model
    monkeypatch.setitem(sys.modules, "keras", module)
    routed = []

    def repro_fit(model, x=None, y=None, **kwargs):  # what keras_repro.fit does with the call
        routed.append((model, x, y, kwargs))
        call_kwargs = {k: v for k, v in kwargs.items() if k not in ("run_dir", "seed", "mode", "threads")}
        return keras_fit(model)(x, y, **call_kwargs)

    import keras_repro.training

    monkeypatch.setattr(keras_repro.training, "fit", repro_fit)
    yield routed
    keras_repro.autolog(disable=True)


def test_binding_names_positional_arguments_by_keras_signature_and_adds_no_defaults():
    args = ([1], [2], 16, 3, 0, ["cb"], 0.25)
    bound = bind_fit_arguments(Trainer.fit, object(), args, {"shuffle": "batch"})
    assert bound == {"x": [1], "y": [2], "batch_size": 16, "epochs": 3, "verbose": 0, "callbacks": ["cb"],
                     "validation_split": 0.25, "shuffle": "batch"}
    assert bind_fit_arguments(Trainer.fit, object(), (), {}) == {}
    with pytest.raises(TypeError):
        bind_fit_arguments(Trainer.fit, object(), (), {"epoch": 3})  # a typo: Keras's own TypeError follows


def test_patched_fit_routes_through_keras_repro_fit_and_reaches_keras_once(fake_keras):
    keras_repro.autolog(mode="off")
    model = Model()
    assert Model.fit is not Trainer.fit and Model.fit.__wrapped__ is Trainer.fit
    assert model.fit([1], [2], 8, validation_split=0.5) == "history"
    assert len(fake_keras) == 1 and fake_keras[0][1:3] == ([1], [2])
    assert fake_keras[0][3]["batch_size"] == 8 and fake_keras[0][3]["mode"] == "off"
    assert len(Trainer.calls) == 1  # the inner call went straight to Keras, not back through keras_repro.fit
    assert Trainer.calls[0][1]["batch_size"] == 8 and Trainer.calls[0][1]["validation_split"] == 0.5


def test_an_overriding_subclass_runs_its_fit_once(fake_keras):
    keras_repro.autolog(mode="off")
    Overriding().fit([1], epochs=2)
    assert Overriding.override_calls == 1 and len(fake_keras) == 1 and len(Trainer.calls) == 1


def test_keras_repro_fit_called_by_the_script_is_not_routed_twice(fake_keras):
    import keras_repro.training

    keras_repro.autolog(mode="off")
    keras_repro.training.fit(Overriding(), [1], [2], epochs=1)  # the script's own keras_repro.fit
    assert len(fake_keras) == 1 and len(Trainer.calls) == 1 and Overriding.override_calls == 1


def test_a_fit_with_the_users_own_repro_callback_goes_straight_to_keras(fake_keras, monkeypatch):
    stub = types.ModuleType("keras_repro.callback")

    class ReproCallback:
        pass

    stub.ReproCallback = ReproCallback
    monkeypatch.setitem(sys.modules, "keras_repro.callback", stub)
    keras_repro.autolog(mode="off")
    Model().fit([1], callbacks=[ReproCallback()])
    assert fake_keras == [] and len(Trainer.calls) == 1


def test_bad_arguments_reach_keras_unchanged(fake_keras):
    keras_repro.autolog(mode="off")
    with pytest.raises(TypeError, match="epoch"):
        Model().fit([1], epoch=3)
    assert fake_keras == []


def test_disable_restores_the_original_and_the_guard_is_per_model(fake_keras):
    keras_repro.autolog(mode="off")
    keras_repro.autolog(disable=True)
    assert "fit" not in Model.__dict__ and Model.fit is Trainer.fit
    Model().fit([1])
    assert fake_keras == [] and autolog_module.active_policy() is None
    keras_repro.autolog(disable=True)  # twice: still fine


def test_second_autolog_is_a_no_op_and_another_policy_a_conflict(fake_keras, tmp_path):
    keras_repro.autolog(seed=1, mode="off", run_dir=tmp_path)
    wrapper = Model.fit
    keras_repro.autolog(seed=1, mode="off", run_dir=tmp_path)
    keras_repro.autolog()  # asks nothing else
    assert Model.fit is wrapper
    for kwargs in ({"seed": 2, "mode": "off"}, {"mode": "seeded"}, {"mode": "off", "run_dir": tmp_path / "other"}):
        with pytest.raises(keras_repro.PolicyConflictError, match="already active.*Fix: .*disable=True"):
            keras_repro.autolog(**kwargs)
    with pytest.raises(keras_repro.InvalidPolicyError):
        keras_repro.autolog(seed=-1)


def test_a_tf_keras_model_is_refused_in_one_line(fake_keras, monkeypatch):
    legacy = types.ModuleType("tf_keras")
    legacy.Model = type("Model", (Trainer,), {"__module__": "tf_keras.src.engine.training"})
    LegacyModel = type("Sequential", (legacy.Model,), {"__module__": "tf_keras.src.engine.sequential"})
    monkeypatch.setitem(sys.modules, "tf_keras", legacy)
    keras_repro.autolog(mode="off")
    with pytest.raises(keras_repro.ReproducibilityError, match="Keras 3 model.*tf_keras.*Fix") as info:
        LegacyModel().fit([1])
    assert "\n" not in str(info.value) and Trainer.calls == []
    keras_repro.autolog(disable=True)
    assert "fit" not in legacy.Model.__dict__


def test_import_hook_fires_after_the_outermost_watched_import(tmp_path, monkeypatch):
    # outer imports inner: inner's callback must see outer fully imported.
    (tmp_path / "kr_outer.py").write_text("import kr_inner\nDONE = True\n")
    (tmp_path / "kr_inner.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    import_hooks.when_imported("kr_inner", lambda m: seen.append(("inner", getattr(sys.modules["kr_outer"], "DONE", None))))
    import_hooks.when_imported("kr_outer", lambda m: seen.append(("outer", m.DONE)))
    import kr_outer  # noqa: F401

    assert seen == [("inner", True), ("outer", True)]
    import_hooks.when_imported("kr_outer", lambda m: seen.append("now"))  # already imported: at once
    assert seen[-1] == "now"
    assert not any(type(f).__name__ == "_Watcher" for f in sys.meta_path)  # gone once nothing waits
    for name in ("kr_outer", "kr_inner"):
        sys.modules.pop(name, None)


def test_autolog_environment_prepends_the_bootstrap_and_keeps_pythonpath():
    env = autolog_environment({"PYTHONPATH": os.pathsep.join(["/mine", BOOTSTRAP_DIR])})
    assert env["PYTHONPATH"].split(os.pathsep) == [BOOTSTRAP_DIR, "/mine"]  # once, first
    assert env["KERAS_REPRO_AUTOLOG"] == "1"
    assert autolog_environment({}, record_only=True)["KERAS_REPRO_AUTOLOG"] == "off"
    assert os.path.isfile(os.path.join(BOOTSTRAP_DIR, "sitecustomize.py"))


PROBE = ("import json, os, sys; print(json.dumps({'autolog': 'keras_repro.autolog' in sys.modules, "
         "'heavy': sorted(m for m in sys.modules if "
         "m.split('.')[0] in ('tensorflow', 'keras', 'numpy')), 'env': os.environ.get('KERAS_REPRO_AUTOLOG'), "
         "'user_site': os.environ.get('USER_SITE_RAN'), 'path_clean': not any(p.endswith('_bootstrap') for p in sys.path)}))")


def test_bootstrap_runs_chains_to_an_existing_sitecustomize_and_imports_no_tensorflow(tmp_path, capfd):
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import os\nos.environ['USER_SITE_RAN'] = 'yes'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(user)]))
    from keras_repro.launcher import run_command
    from keras_repro.policy import Policy

    code = run_command([PYTHON, "-c", PROBE], Policy.create(seed=3, mode="bitwise"), environ=env)
    out = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert out == {"autolog": False, "heavy": [], "env": "1", "user_site": "yes", "path_clean": True}
    code = run_command([PYTHON, "-c", PROBE], Policy.create(seed=3), environ=env, autolog=False)
    out = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert out["autolog"] is False and out["env"] is None and out["user_site"] == "yes"
    probe = "import random, numpy, sys, json; print(json.dumps(['keras_repro.autolog' in sys.modules, random.random()]))"
    console_script = tmp_path / "train-console"  # what pip writes for an entry point: a shebang script
    console_script.write_text(f"#!{PYTHON}\n{probe}\n")
    console_script.chmod(0o755)
    draws = []
    for command in ([PYTHON, "-c", probe], [str(console_script)]):
        run_command(command, Policy.create(seed=3, mode="bitwise"), environ=env)
        draws.append(json.loads(capfd.readouterr().out.strip().splitlines()[-1]))
    assert draws[0] == draws[1] and draws[0][0] is True  # autolog started at `import numpy`; random seeded


def test_a_bad_launch_policy_is_refused_in_one_line_by_the_launcher_and_by_the_child(tmp_path):
    with pytest.raises(keras_repro.InvalidPolicyError, match="KERAS_REPRO_SEED"):
        autolog_environment({"KERAS_REPRO_SEED": "abc"})
    env = autolog_environment({**os.environ, "PYTHONPATH": str(REPO)})
    env["KERAS_REPRO_SEED"] = "abc"  # changed behind the launcher's back: the child refuses it
    proc = subprocess.run([PYTHON, "-c", "import numpy; print('script ran')"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "script ran" not in proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("keras-repro: error: Expected the environment")


def test_run_passes_the_exit_code_and_output_through_untouched(tmp_path):
    script = "import sys; sys.stdout.write('out\\n'); sys.stderr.write('err\\n'); sys.exit(7)"
    proc = run_child([PYTHON, "-m", "keras_repro", "run", "--seed", "3", "--", PYTHON, "-c", script], expect=7)
    assert proc.stdout == "out\n" and proc.stderr == "err\n"


@pytest.mark.parametrize("argv, expected", [
    (["run", "--sed", "3", "--", "python", "x.py"], "unrecognized arguments: --sed"),
    (["check", "--mode", "bitwise"], "No command given"),
    (["run", "--seed", "3"], "No command given"),
    (["run", "--mode", "strict", "--", "python", "x.py"], "Expected `mode`"),
    (["check", "--runs", "x", "--", "python", "x.py"], "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(argv, expected):
    proc = run_child([PYTHON, "-m", "keras_repro", *argv], expect=2)
    assert expected in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_a_policy_the_environment_contradicts_is_one_line_and_exit_2():
    for verb in ("run", "check"):
        proc = run_child([PYTHON, "-m", "keras_repro", verb, "--seed", "3", "--mode", "bitwise", "--", PYTHON, "-c", "1"],
                         env={"TF_ENABLE_ONEDNN_OPTS": "1"}, expect=2)
        assert "TF_ENABLE_ONEDNN_OPTS=1" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


CHECK_CHILD = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{tests!r}, {repo!r}]
    from helpers import make_record
    from keras_repro.no_fit import NO_FIT_MESSAGE
    path = make_record({out!r}, run_id="r" + str(os.getpid()), no_fit=NO_FIT_MESSAGE, fit=None, model=None,
                       metrics={{"epochs": [], "steps": [], "steps_per_epoch": []}})
    with open(os.environ["KERAS_REPRO_RECORDS_FILE"], "a") as f:
        f.write(str(path) + "\\n")
    {tail}
""")


def test_check_on_a_custom_loop_says_it_can_compare_nothing_and_keeps_a_failing_runs_records(tmp_path, capsys):
    script = tmp_path / "loop.py"
    script.write_text(CHECK_CHILD.format(tests=str(REPO / "tests"), repo=str(REPO), out=str(tmp_path / "runs"), tail=""))
    code = main(["check", "--", PYTHON, str(script)])
    out = capsys.readouterr().out
    assert code == 2 and "no keras Model.fit ran in this process" in out and "nothing to compare" in out, out
    assert out.splitlines()[-1] == "cannot check: see the problems above"
    script.write_text(CHECK_CHILD.format(tests=str(REPO / "tests"), repo=str(REPO), out=str(tmp_path / "runs"), tail="sys.exit(5)"))
    code = main(["check", "--", PYTHON, str(script)])
    out = capsys.readouterr().out
    assert code == 2 and "failed with exit code 5 after writing 1 record(s), kept: " in out, out


def test_check_names_the_unseeded_sources_and_the_fix_from_two_mode_off_records(tmp_path):
    from keras_repro.checking import CheckResult, Pairing
    from keras_repro.comparison import compare
    from keras_repro.record import load_run

    common = dict(policy={"seed": None, "mode": "off", "threads": None},
                  applied={"seed": None, "mode": "off", "threads": None, "warnings": []},
                  model__random_layers=["Dropout", "RandomFlip"])
    a = load_run(make_record(tmp_path, "a", **common))
    b = load_run(make_record(tmp_path, "b", **common, model__initial_weights_sha256="ab" * 32,
                             model__final_weights_sha256="cd" * 32))
    result = CheckResult((), (), (Pairing(2, 1, 1, compare(a, b), (a, b)),), command=("python", "train.py"))
    text = "\n".join(result.lines())
    assert "likely source: no seed" in text and "initial weights differ" in text, text
    assert "another sample order: fit(shuffle=True)" in text and "Dropout, RandomFlip" in text, text
    assert "fix: keras-repro run --seed 42 --mode deterministic -- python train.py" in text, text
    assert result.exit_code == 1 and text.splitlines()[-1] == "not reproducible"
    seeded = CheckResult((), (), (Pairing(2, 1, 1, compare(load_run(make_record(tmp_path, "c")), b)),), command=("x",))
    assert seeded.fix() is None  # a seeded run gets no "add a seed" fix


def test_a_no_fit_record_is_never_identical_in_diff(tmp_path):
    from keras_repro.comparison import compare

    empty = {"epochs": [], "steps": [], "steps_per_epoch": []}
    a = make_record(tmp_path, "a", no_fit="no keras Model.fit ran", metrics=empty, model=None)
    b = make_record(tmp_path, "b", no_fit="no keras Model.fit ran", metrics=empty, model=None)
    result = compare(a, b)
    assert not result.identical and any("ran no fit" in n for n in result.notes)


def test_unseeded_step_inputs_are_put_down_to_the_order_not_to_random_data(tmp_path):
    # `keras-repro check` without a policy on a script with fixed data: the step inputs differ only because
    # the sample order does; "the data is drawn at random" would send the user after the wrong thing.
    from helpers import make_record

    from keras_repro.checking import likely_sources
    from keras_repro.comparison import compare
    from keras_repro.record import load_run

    unseeded = {"applied__mode": "off", "applied__seed": None, "policy__seed": None, "policy__mode": "off"}
    a = load_run(make_record(tmp_path, "a", data__steps=[{"x": "1", "y": "2"}], **unseeded))
    b = load_run(make_record(tmp_path, "b", data__steps=[{"x": "3", "y": "4"}], **unseeded))
    hints = likely_sources(compare(a, b), (a, b))
    assert not any("drawn at random" in h for h in hints), hints
    c = load_run(make_record(tmp_path, "c", data__steps=[{"x": "3", "y": "4"}], data__x__sha256="ab" * 32,
                             data__x__rows_sha256="cd" * 32, **unseeded))
    assert any("drawn at random" in h for h in likely_sources(compare(a, c), (a, c)))  # the data itself differs
