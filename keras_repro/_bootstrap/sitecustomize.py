"""keras_repro's start-up hook for `keras-repro run` / `check` children (see keras_repro/launcher.py).

Python imports the first `sitecustomize` on sys.path when it starts; `keras-repro run` puts this
directory first on PYTHONPATH, so this runs before the script's code. It must cost next to nothing in
a process that never trains (a shell helper, `python -c ...`, pip), so it imports nothing heavy itself:
1. it takes this directory off sys.path again (PYTHONPATH keeps it: child processes inherit the hook);
2. it puts a finder first on sys.meta_path that waits for the first import of NumPy, TensorFlow or
   Keras. Right before that import starts, it imports keras_repro and calls `keras_repro.autolog()`
   with the policy the launcher passed in KERAS_REPRO_* variables (`KERAS_REPRO_AUTOLOG=off`: record
   only), which applies the policy when TensorFlow has been imported, before any op or model, and
   patches `keras.Model.fit`. Python's `random` is seeded when it is imported, if a seed was given;
3. it runs the `sitecustomize` it shadows (the next one on sys.path), so an environment's own start-up
   hook keeps working.

If the script calls `keras_repro.autolog(...)` itself first, its arguments win (explicit arguments win
over the environment). A policy the child cannot apply ends the process with one line on stderr and
exit code 2, never a script running without the policy it was launched with.
"""


class _Trampoline:
    """A meta path finder: on the first import of a watched module, starts autolog and hands over."""

    watched = ("numpy", "tensorflow", "keras", "tf_keras", "random")

    def __init__(self, here, record_only):
        self.here = here
        self.record_only = record_only
        self.started = False

    def find_spec(self, name, path=None, target=None):
        if name not in self.watched or self.started:
            return None
        if name == "random":
            return self._seeding_random(path, target)
        self.started = True  # before importing keras_repro, which imports more modules
        self._start_autolog()
        from keras_repro import import_hooks

        return import_hooks.find_spec(name, path, target)

    def _start_autolog(self):
        import os
        import sys

        package_parent = os.path.dirname(os.path.dirname(self.here))
        sys.path.insert(0, package_parent)  # the keras_repro that launched this process, not another one
        try:
            import keras_repro
            from keras_repro.errors import ReproducibilityError
        finally:
            sys.path.remove(package_parent)
        try:
            if sys.modules["keras_repro.autolog"].active_policy() is None:  # the script's own call wins
                keras_repro.autolog(mode="off") if self.record_only else keras_repro.autolog()
        except ReproducibilityError as e:
            sys.stderr.write("keras-repro: error: " + " ".join(str(e).split()) + "\n")
            sys.stderr.flush()
            os._exit(2)

    def _seeding_random(self, path, target):
        """`random`'s spec, with a loader that seeds it after it loads (data shuffled before NumPy)."""
        import sys

        seed = _launch_seed(self.record_only)
        if seed is None:
            return None
        for finder in sys.meta_path:
            spec = finder.find_spec("random", path, target) if finder is not self and hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                original = spec.loader.exec_module

                def exec_module(module, original=original):
                    original(module)
                    module.seed(seed)

                spec.loader.exec_module = exec_module
                return spec
        return None


def _launch_seed(record_only):
    """The seed `keras-repro run --seed S` passed, when the policy seeds anything; else None."""
    import os

    seed = os.environ.get("KERAS_REPRO_SEED", "").strip()
    if record_only or not seed.isdigit() or os.environ.get("KERAS_REPRO_MODE") == "off":
        return None
    return int(seed)


def _keras_repro_bootstrap():
    import os
    import sys

    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    mode = os.environ.get("KERAS_REPRO_AUTOLOG")
    if mode:
        trampoline = _Trampoline(here, record_only=mode == "off")
        seed = _launch_seed(trampoline.record_only)
        if "random" in sys.modules and seed is not None:  # (CPython 3.10-3.13 does not import it at start-up)
            sys.modules["random"].seed(seed)
        sys.meta_path.insert(0, trampoline)
    _chain()


def _chain():
    """Imports the `sitecustomize` this one shadows, as Python would have."""
    import importlib.machinery
    import sys

    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)  # this directory is off it
    if spec is None or spec.loader is None:
        return
    import importlib.util

    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":  # Python's start-up import; not `keras_repro._bootstrap.sitecustomize` (doctests)
    _keras_repro_bootstrap()
