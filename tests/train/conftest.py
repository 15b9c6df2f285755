"""Training tests: child processes (CLI, torchrun) start on one CPU thread as the tests do."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _single_threaded_children(monkeypatch: pytest.MonkeyPatch) -> None:
    # Child processes (CLI, torchrun) inherit this and start with one OpenMP thread.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("RNNGUARD_TEST_THREADS", "1"))
