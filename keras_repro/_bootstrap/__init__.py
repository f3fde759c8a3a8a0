"""The directory `keras-repro run` and `check` put first on a child's PYTHONPATH.

It holds one module, `sitecustomize.py`, which Python imports at start-up before the script's code
(the mechanism coverage.py uses to measure subprocesses). It calls `keras_repro.autolog` with the
launch policy, then runs the `sitecustomize` it shadows, if any. This `__init__` only makes the
directory part of the installed package; nothing imports it.
"""
