"""Optimiser builder with parameter groups: weight decay only where it makes sense."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from rnnguard.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Whether a parameter is exempt from weight decay.

    Biases, norm gains/shifts, IndRNN recurrent vectors (``weight_hh_l*`` of shape ``(H,)``) and
    other per-unit vectors are all 1-D: decaying them pulls gates and recurrences towards zero,
    which is a bias, not a regulariser. Weight-norm magnitudes are gains too.
    """
    if param.ndim <= 1 or name.endswith("bias") or ".bias" in name:
        return True
    # torch's weight_norm stores the per-unit magnitude g as "parametrizations.<w>.original0"
    # with shape (out, 1): a gain in all but shape.
    return "parametrizations." in name and name.endswith(".original0")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two groups of trainable parameters: with ``weight_decay`` and with none."""
    decay: list[torch.Tensor] = []
    exempt: list[torch.Tensor] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (exempt if no_decay(name, param) else decay).append(param)
    groups: list[dict[str, object]] = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    *,
    amsgrad: bool = False,
    betas: Iterable[float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """Build ``adamw`` / ``adam`` / ``sgd`` over :func:`param_groups` of ``model``.

    Example:
        >>> opt = build_optimizer(nn.Linear(3, 2), "adamw", lr=1e-3, weight_decay=0.01)
        >>> [g["weight_decay"] for g in opt.param_groups]
        [0.01, 0.0]
    """
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    betas_t = tuple(float(b) for b in betas)
    if len(betas_t) != 2 or not all(0 <= b < 1 for b in betas_t):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {betas_t}")
    groups = param_groups(model, float(weight_decay))
    if not groups:
        raise ConfigError("model has no trainable parameters")
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas_t, eps=eps, amsgrad=amsgrad)  # type: ignore[arg-type]
    if key == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas_t, eps=eps, amsgrad=amsgrad)  # type: ignore[arg-type]
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)  # type: ignore[arg-type]
