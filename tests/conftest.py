"""Session fixtures: training children launched once and shared by several test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def training_runs(tmp_path_factory):
    """The children of tests/training_runs.py (11 processes, 2 at a time), run on first use."""
    from training_runs import run_training_children

    return run_training_children(tmp_path_factory.mktemp("training"))

