"""Memory: process-wide settings that make long training runs faster on Linux, and a check that
a training batch can fit at all before anything is allocated."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

from rnnguard.errors import ConfigError

__all__ = [
    "batch_floor_bytes",
    "check_batch_fits",
    "check_fits",
    "keep_freed_memory",
    "physical_memory",
]

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory in the process for reuse; returns what was done.

    By default glibc hands big blocks back to the kernel when they are freed (``munmap``, heap
    trimming), so every training step touches fresh pages again and pays a page fault per
    4 KiB; on virtual machines that can cost a quarter of a recurrent network's step. With the
    mmap and trim thresholds raised, freed tensors are reused warm. The price: the process keeps
    its peak memory until it exits. Lasts for the life of the process; elsewhere than glibc
    nothing changes (the returned text says so). ``rnnguard speed`` calls it for every row.
    """
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return "default (not glibc)"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return "default (no mallopt)"
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    return "glibc, freed memory kept for reuse (mallopt)" if ok else "default (mallopt refused)"


def physical_memory() -> int | None:
    """Bytes of RAM in this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def batch_floor_bytes(
    batch_size: int,
    length: int,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    token_input: bool = False,
) -> int:
    """A floor on the memory one training batch needs: its inputs plus the outputs of every layer,
    which backpropagation keeps (float32). Real use is several times higher (gates, gradients)."""
    inputs = batch_size * length * (8 if token_input else 4 * input_size)
    return inputs + 4 * batch_size * length * hidden_size * num_layers


def check_fits(nbytes: int, what: str) -> None:
    """Raise ConfigError naming ``what`` when ``nbytes`` exceed this machine's RAM.

    Called before allocating, so an impossible size is one line rather than the machine swapping
    or the process being killed; sizes that merely come close are left to the allocator.
    """
    total = physical_memory()
    if total is not None and nbytes > total:
        raise ConfigError(
            f"{what} needs at least {nbytes / 2**30:,.1f} GiB of memory, more than this machine's "
            f"{total / 2**30:,.1f} GiB"
        )


def check_batch_fits(batch_size: int, task: Any, hidden_size: int, num_layers: int = 1) -> None:
    """:func:`check_fits` for one training batch of ``task`` (a length and a ``TaskSpec``)."""
    length, spec = getattr(task, "length", None), getattr(task, "spec", None)
    if not isinstance(length, int) or spec is None:
        return  # a task without a fixed length: nothing to estimate up front
    nbytes = batch_floor_bytes(batch_size, length, int(spec.input_size), hidden_size, num_layers,
                               bool(spec.token_input))  # fmt: skip
    check_fits(
        nbytes,
        f"a training batch of batch_size={batch_size} sequences of length={length} (hidden size "
        f"{hidden_size}, {num_layers} layer(s))",
    )
