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
