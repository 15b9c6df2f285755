"""Training tests use tiny models: one CPU thread is fastest and avoids oversubscribing CI cores."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _single_threaded_children(monkeypatch: pytest.MonkeyPatch) -> None:
    # Child processes (CLI, torchrun) inherit this and start with one OpenMP thread.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("RNNGUARD_TEST_THREADS", "1"))
