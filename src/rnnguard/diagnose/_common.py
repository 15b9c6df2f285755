"""Helpers shared by the diagnostics: model and batch checks, eval-mode context, device of a model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from rnnguard.errors import ConfigError


def check_module(model: Any) -> nn.Module:
    """Raise TypeError unless ``model`` is a torch.nn.Module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_sequence_batch(x: Any, name: str = "x") -> Tensor:
    """Check ``x`` is a (batch, time, features) float tensor, or (batch, time) integer tokens."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (batch, time, features), got {type(x).__name__}"
        )
    if x.is_floating_point():
        if x.dim() != 3:
            raise ConfigError(
                f"{name} must have shape (batch, time, features), got shape {tuple(x.shape)}"
            )
    elif x.dim() != 2:
        raise ConfigError(
            f"{name} of integer tokens must have shape (batch, time), got {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ConfigError(f"{name} must hold at least one sequence, got batch size {x.shape[0]}")
    if x.shape[1] < 2:
        raise ConfigError(f"{name} must have at least 2 time steps, got {x.shape[1]}")
    return x


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (deterministic), restoring each submodule's flag afterwards.

    cuDNN is switched off because its RNN backward refuses to run in eval mode.
    """
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.backends.cudnn.flags(enabled=False):
            yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first floating parameter (cpu/float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32
