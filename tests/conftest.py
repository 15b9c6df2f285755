"""Shared fixtures: deterministic seeds and a small thread count for a 2-core CI machine."""

from __future__ import annotations

import pytest
import torch

# Tests use tiny tensors: one thread avoids oversubscription on small CI machines.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
