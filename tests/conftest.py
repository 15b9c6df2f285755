"""Shared fixtures: deterministic seeds and a small thread count for a 2-core CI machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

# Tests use tiny tensors: one thread avoids oversubscription on small CI machines.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Each test starts on one intra-op thread, and a test that changes the count (a trainer's
    # num_threads) does not leak it into the next one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
