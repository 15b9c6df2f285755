"""Checkpoint files of a run: where they live, reading them, and the RNG states they carry."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnguard.errors import ConfigError

__all__ = [
    "CHECKPOINT_DIR",
    "checkpoint_paths",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "set_rng_state",
]

CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_file(out: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` goes in the run folder ``out``."""
    return Path(out) / CHECKPOINT_DIR / f"ckpt-{step:08d}.pt"


def checkpoint_paths(out: str | Path) -> list[Path]:
    """Checkpoints in ``out``, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (it holds RNG states, hence not weights-only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(
            f"checkpoint must be a file written by rnnguard, got unreadable {str(path)!r}: {exc}"
        ) from exc


def latest_checkpoint(out: str | Path) -> dict[str, Any] | None:
    """The newest readable checkpoint in ``out`` (None if there is none)."""
    for path in reversed(checkpoint_paths(out)):
        try:
            return load_checkpoint(path)
        except ConfigError:
            continue  # fall back to the previous one
    return None


def get_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Global RNG states; on a CUDA ``device`` also that GPU's generator (and no other's:
    reading every GPU's state would open a context on each of them from every rank)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`get_rng_state` returned (a CUDA state only onto a CUDA ``device``)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cuda_state = state.get("cuda")
    if cuda_state is None or device is None or device.type != "cuda":
        return  # e.g. a CUDA run resumed on the CPU: nothing to restore
    if isinstance(cuda_state, (list, tuple)):  # one state per GPU
        index = device.index or 0
        cuda_state = cuda_state[index] if index < len(cuda_state) else None
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)
