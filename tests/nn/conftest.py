"""Fixtures for the layer tests (the fused-backend fixtures live in the root conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a module's tiny-tensor tests on one intra-op thread.

    Their ops are far too small to gain from threads, and on a busy 2-core machine a second thread
    makes them an order of magnitude slower (threads wait on each other).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
