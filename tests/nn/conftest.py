"""Fixtures for the layer tests."""

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


@pytest.fixture(params=["native", "torch"])
def fused_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a fused-path test on the native kernels and on the pure-PyTorch loops.

    The pure-PyTorch loops are the fallback wherever no C compiler is found, so both must match
    the reference; the native half skips (saying why) where the kernels cannot be built.
    """
    from rnnguard.nn.fused import native

    if request.param == "native":
        if not native.available():
            pytest.skip(f"native kernels unavailable: {native.build_error()}")
        yield "native"
    else:
        with native.disabled():
            yield "torch"
