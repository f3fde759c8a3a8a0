"""show, diff and plot only read records: they must never import TensorFlow or Keras."""

from __future__ import annotations

import textwrap

from helpers import PYTHON, REPO, make_record, run_child

CHILD = textwrap.dedent("""
    import sys
    import keras_repro
    from keras_repro.cli import main
    a, b, png = sys.argv[1:4]
    codes = [main(["show", a]), main(["diff", a, b]), main(["diff", "--json", a, b])]
    try:
        import matplotlib
    except ImportError:
        pass
    if "matplotlib" in sys.modules and png != "-":
        codes.append(main(["plot", a, b, "-o", png]))
    keras_repro.compare(a, b)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "jax", "torch"))
    print("CODES", codes)
    print("HEAVY", heavy)
""")


def test_show_diff_plot_do_not_import_tensorflow(tmp_path):
    a = make_record(tmp_path, "a")
    b = make_record(tmp_path, "b", fit__epochs=4, model__final_weights_sha256="cd" * 32)
    proc = run_child([PYTHON, "-c", CHILD, str(a), str(b), str(tmp_path / "c.png")])
    assert "HEAVY []" in proc.stdout, proc.stdout
    assert "CODES [0, 1, 1" in proc.stdout, proc.stdout


def test_control_detection_sees_an_imported_tensorflow(tmp_path):
    # Negative control, so the test above can fail: with a (stub) TensorFlow imported by the child,
    # the same detection reports it. A stub keeps this fast; importing the real TF takes seconds.
    stub = tmp_path / "stub" / "tensorflow"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    a = make_record(tmp_path, "a")
    proc = run_child([PYTHON, "-c", "import tensorflow\n" + CHILD, str(a), str(a), "-"],
                     env={"PYTHONPATH": f"{stub.parent}:{REPO}"})
    assert "HEAVY ['tensorflow']" in proc.stdout, proc.stdout


# The modules that must work without TensorFlow (docs/architecture.md): the record/explain side, and
# everything `import keras_repro`, `configure`/`autolog` and `keras-repro run` load before TF may start.
TF_FREE_MODULES = ("record", "record_writer", "comparison", "causes", "explain_inputs", "checking", "locate",
                   "run_labels", "cli", "plot", "environment", "policy", "isa", "launcher", "errors", "no_fit",
                   "import_hooks", "autolog", "flags", "runtime", "_compat", "_bootstrap")


def test_the_tf_free_modules_import_neither_tensorflow_nor_keras():
    program = ("import importlib, sys\n"
               f"for name in {TF_FREE_MODULES!r}:\n"
               "    importlib.import_module('keras_repro.' + name)\n"
               "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n")
    proc = run_child([PYTHON, "-c", program])
    assert "HEAVY []" in proc.stdout, proc.stdout
