"""CPU floating-point mode for training steps: denormal numbers flushed to zero.

A backward pass through a long sequence whose gradients vanish drives them into the denormal
range (below about 1.2e-38 in float32), where x86 CPUs compute many times slower: an LSTM's
forward+backward on the adding problem at T=1000 (batch 50, width 128, loss on the last step)
takes several times longer with denormals than with them flushed. Values that small change no
parameter update (Adam's epsilon alone is 1e-8), so training steps flush them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["flush_denormals"]


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, denormal floats read and compute as zero on this CPU thread.

    Yields whether that is in effect (False when ``enabled`` is False or the CPU cannot). On exit
    denormals are normal numbers again, torch's default. The setting belongs to the calling
    thread: with several intra-op threads only the work done on the calling one gains.
    """
    if not enabled:
        yield False
        return
    active = torch.set_flush_denormal(True)
    try:
        yield active
    finally:
        if active:
            torch.set_flush_denormal(False)
