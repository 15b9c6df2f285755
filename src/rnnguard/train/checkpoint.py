"""Checkpoint files of a run: where they live, reading them, and the RNG states they carry."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnguard.errors import ConfigError

__all__ = [
    "CHECKPOINT_DIR",
    "checkpoint_file",
    "checkpoint_folder",
    "checkpoint_paths",
    "format_problem",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
    "seed_all",
    "set_rng_state",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = (
    "version",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "guard",
    "rng",
    "trainer",
    "recipe",
    "config",
    "task",
)
TRAINER_KEYS = (
    "step",
    "lr_scale",
    "rollbacks",
    "solved_step",
    "wall_time",
    "history",
    "last_metrics",
)
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
# What utils.io's atomic writers leave behind when killed mid-write: ".<name>.<random>.tmp".
_TMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def checkpoint_file(out: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` goes in the run folder ``out``."""
    return Path(out) / CHECKPOINT_DIR / f"ckpt-{step:08d}.pt"


def checkpoint_folder(out: str | Path) -> Path:
    """``out/checkpoints``, refusing one that exists but is not a folder."""
    folder = Path(out) / CHECKPOINT_DIR
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"out must keep its checkpoints in a folder, got a file at {str(folder)!r}; "
            "move it away or choose another out"
        )
    return folder


def remove_stale_temporaries(out: str | Path) -> list[Path]:
    """Delete half-written files that a killed run's atomic writes left in ``out``."""
    removed: list[Path] = []
    for folder in (Path(out), Path(out) / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if _TMP_RE.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def checkpoint_paths(out: str | Path) -> list[Path]:
    """Checkpoints in ``out``, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def format_problem(ckpt: Any) -> str | None:
    """Why ``ckpt`` is not a checkpoint written by ``fit`` (None when its layout is right)."""
    if not isinstance(ckpt, dict):
        return f"holds a {type(ckpt).__name__}, not a checkpoint"
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        return f"is not an rnnguard checkpoint (missing {', '.join(missing)})"
    if ckpt["version"] != CHECKPOINT_VERSION:
        return f"has format version {ckpt['version']!r}, this rnnguard reads {CHECKPOINT_VERSION}"
    trainer = ckpt["trainer"]
    if not isinstance(trainer, dict) or any(k not in trainer for k in TRAINER_KEYS):
        return "is not an rnnguard checkpoint (its trainer state is incomplete)"
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt["recipe"], dict):
        return "is not an rnnguard checkpoint (model or recipe is not a mapping)"
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (it holds RNG states, hence not weights-only).

    An unreadable (torn) or foreign file is a ConfigError naming the file and what is wrong.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(
            f"checkpoint must be a file written by rnnguard, got unreadable {str(path)!r}: {exc}"
        ) from exc
    problem = format_problem(ckpt)
    if problem is not None:
        raise ConfigError(f"checkpoint must be a file written by rnnguard, {str(path)!r} {problem}")
    return dict(ckpt)


def latest_checkpoint(
    out: str | Path, accept: Callable[[dict[str, Any]], str | None] | None = None
) -> dict[str, Any] | None:
    """The newest valid checkpoint in ``out`` (None if there is no checkpoint file at all).

    Torn or foreign files, and those ``accept`` finds a problem with (it returns the reason or
    None), are skipped with a warning for the next older one. When files exist but none is usable
    the result is a ConfigError listing why each was rejected, rather than a silent fresh start.
    """
    paths = checkpoint_paths(out)
    rejected: list[str] = []
    for path in reversed(paths):
        try:
            ckpt = load_checkpoint(path)
        except ConfigError as exc:
            rejected.append(f"{path.name}: {str(exc).split(', ', 1)[-1]}")
            logger.warning("skipping checkpoint %s: %s", path, exc)
            continue
        problem = accept(ckpt) if accept is not None else None
        if problem is None:
            return ckpt
        rejected.append(f"{path.name}: {problem}")
        logger.warning("skipping checkpoint %s: %s", path, problem)
    if rejected:
        raise ConfigError(
            f"out must hold a usable checkpoint to resume, got none in {str(out)!r}: "
            + "; ".join(rejected)
        )
    return None


def seed_all(seed: int) -> None:
    """Seed every global generator a checkpoint saves: torch's, Python's and NumPy's.

    So a run depends on its seed alone, not on what the process drew before, and a resumed run
    ends with the same generator states as an uninterrupted one.
    """
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes 32-bit seeds only


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
