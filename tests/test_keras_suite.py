"""A routed sample of Keras's own fit tests, in `make test`; the whole comparison is `make keras-tests`.

`tests/keras_suite/run.py` copies Keras's test files from the installed wheel and runs them with every
`model.fit` routed through `keras_repro.autolog(seed=1234, mode="deterministic")`. The whole suite takes
minutes (plain and routed: 359 passed, 20 skipped each, measured 2026-11-28), so `make test` runs the
tests that broke when features met in `fit`: Keras's `BackupAndRestore` (it must keep working under
autolog) and ragged batches (the per-step input digest must take composite tensors).
"""

from __future__ import annotations

import re

import pytest

from helpers import PYTHON, REPO, run_child

pytestmark = pytest.mark.slow

SAMPLE = "backup_and_restore or raggeds"


def test_a_sample_of_keras_own_fit_tests_passes_with_every_fit_routed_through_keras_repro():
    proc = run_child([PYTHON, str(REPO / "tests" / "keras_suite" / "run.py"), "--only", "routed", "-k", SAMPLE],
                     timeout=600)
    summary = re.search(r"routed: (\d+) passed, (\d+) failed, \d+ skipped .*; (\d+) keras_repro run records",
                        proc.stdout)
    assert summary, proc.stdout[-2000:]
    passed, failed, records = map(int, summary.groups())
    assert failed == 0 and passed >= 10, proc.stdout[-2000:]
    assert records > 0, "no fit went through keras_repro: the routing is not active"
