"""Where a run computes: device and mixed-precision choice, moving (nested) tensors about."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch

from rnnguard.errors import ConfigError

__all__ = ["autocast", "detach_state", "host_copy", "resolve_amp", "resolve_device", "to_device"]


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error.

    ``cuda`` means ``cuda:LOCAL_RANK``; under torchrun (``world_size > 1``) a fixed ``cuda:N`` that
    is not this rank's GPU is an error, since every rank would share one GPU (NCCL refuses that).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device must be available, got {name!r} but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank)
        device = torch.device(name)
        if world_size > 1 and device.index is not None and device.index != local_rank:
            raise ConfigError(
                f"device must be 'cuda' or 'auto' under torchrun (rank k uses cuda:LOCAL_RANK), "
                f"got {name!r} on local rank {local_rank}"
            )
        return device
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA (with GradScaler), off elsewhere."""
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        # CPU kernels (e.g. oneDNN's LSTM) do not support fp16 autocast; bf16 is the CPU format.
        raise ConfigError(
            f"amp='fp16' needs a CUDA device, got device {str(device)!r}; use 'bf16' on CPU"
        )
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"amp='bf16' needs a GPU with bfloat16 support, got {str(device)!r} without it; "
            "use 'fp16'"
        )
    return amp


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for a resolved ``amp`` setting (a no-op when off)."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def detach_state(state: Any) -> Any:
    """Detach every tensor in a (nested) recurrent state, keeping its structure."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(detach_state(s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


def to_device(obj: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) structure to ``device``, keeping its structure."""
    if isinstance(obj, torch.Tensor):
        # Asynchronous only towards the GPU: a non-blocking copy back to the host may still be in
        # flight when the host tensor is read (pickled into a checkpoint, gathered across ranks).
        return obj.to(device, non_blocking=device.type == "cuda")
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(o, device) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def host_copy(obj: Any) -> Any:
    """A deep copy of a (nested) state dict with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(host_copy(v) for v in obj)
    return copy.deepcopy(obj)
