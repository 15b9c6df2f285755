"""torchrun / DistributedDataParallel support: process-group setup and small collectives.

Under ``torchrun --nproc_per_node=N`` the environment carries ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`setup` then joins the process group (gloo on CPU, nccl on CUDA). Without
them everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    """Whether :func:`setup` created the process group in this call."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(use_cuda: bool) -> DistInfo:
    """Join the process group if launched by torchrun; return this process's rank information."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    world = env_world_size()
    if world <= 1 or not dist.is_available():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, initialized_here=True)


def shutdown() -> None:
    """Destroy the default process group if there is one (call once, at the end of the process).

    ``fit`` leaves the group it joined alive so a script can call ``fit`` again: re-creating the
    default group in the same process is not reliable under torchrun's rendezvous store.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (a one-element list without a process group)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def worst_verdict(
    verdict: str | None, kinds: tuple[str, ...], info: DistInfo, device: torch.device
) -> str | None:
    """The most severe of every rank's ``verdict`` (``kinds`` ordered mildest first)."""
    if not info.enabled:
        return verdict
    code = torch.tensor([0 if verdict is None else kinds.index(verdict) + 1], device=device)
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    worst = int(code.item())
    return None if worst == 0 else kinds[worst - 1]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def reduce_counts(stats: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    """Guard statistics combined over ranks: the maximum of each count (and per-epoch list).

    With DDP every rank sees the same all-reduced gradients, so the counts agree; taking the
    maximum keeps the report honest if they ever do not (a rank-local failure still shows).
    """
    if not info.enabled:
        return stats
    gathered = all_gather_object(stats, info)
    merged = dict(stats)
    for key, value in stats.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = max(g[key] for g in gathered)
        elif isinstance(value, list):
            length = max(len(g[key]) for g in gathered)
            merged[key] = [
                max((g[key][i] if i < len(g[key]) else 0) for g in gathered) for i in range(length)
            ]
    return merged
