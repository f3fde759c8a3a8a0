"""keras_repro's start-up hook for `keras-repro run` / `check` children (see keras_repro/launcher.py).

Python imports the first `sitecustomize` on sys.path when it starts; `keras-repro run` puts this
directory first on PYTHONPATH, so this runs before the script's code. It:
1. calls `keras_repro.autolog()` with the policy the launcher passed in KERAS_REPRO_* variables
   (`KERAS_REPRO_AUTOLOG=off`: record only, whatever else is set), which costs a few milliseconds:
   TensorFlow is not imported here; the policy is applied when the script imports it;
2. runs the `sitecustomize` this one shadows (the next one on sys.path), so an environment's own
   start-up hook keeps working;
3. takes this directory off sys.path again (PYTHONPATH keeps it, so child processes inherit the hook).

A policy the child cannot apply ends the process with one line on stderr and exit code 2 (Python
would otherwise print the error and run the script without the policy).
"""


def _keras_repro_bootstrap():
    import os
    import sys

    here = os.path.dirname(os.path.realpath(__file__))
    package_parent = os.path.dirname(os.path.dirname(here))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    if os.environ.get("KERAS_REPRO_AUTOLOG"):
        sys.path.insert(0, package_parent)  # the keras_repro that launched this process, not another one
        try:
            import keras_repro
            from keras_repro.errors import ReproducibilityError
        finally:
            sys.path.remove(package_parent)
        try:
            if os.environ["KERAS_REPRO_AUTOLOG"] == "off":
                keras_repro.autolog(mode="off")
            else:
                keras_repro.autolog()
        except ReproducibilityError as e:
            sys.stderr.write("keras-repro: error: " + " ".join(str(e).split()) + "\n")
            sys.stderr.flush()
            os._exit(2)
    _chain()


def _chain():
    """Imports the `sitecustomize` this one shadows, as Python would have."""
    import importlib.machinery
    import importlib.util
    import sys

    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)  # this directory is off it
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_keras_repro_bootstrap()
