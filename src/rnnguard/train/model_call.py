"""Calling a sequence model and splitting what it returns into ``(predictions, state)``.

One adapter for every caller: the trainer (outputs per time step, a state carried across batches),
the diagnostics (any model that maps a batch to predictions) and ``doctor --verify``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from rnnguard.errors import ConfigError, RnnguardError

__all__ = ["ModelCall", "ModelOutputError", "accepts_state", "call_model", "split_output"]

_EXPECTED = "a tensor (batch, time, outputs) or a tuple (outputs, state)"


class ModelOutputError(RnnguardError, TypeError):
    """A model returned something that is not predictions (and optionally a state)."""


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def _first_tensor(output: Any) -> torch.Tensor:
    """The first tensor of a (nested) tuple or list, the way ``nn.RNN``'s ``output`` comes first."""
    found = output
    while isinstance(found, (tuple, list)) and found:
        found = found[0]
    if not isinstance(found, torch.Tensor):
        raise ModelOutputError(
            f"model must return a tensor (or a tuple whose first item is one), got "
            f"{type(output).__name__}"
        )
    return found


def _split_strict(output: Any) -> tuple[torch.Tensor, Any]:
    """The two conventions the trainer accepts: ``outputs`` alone or ``(outputs, state)``."""
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, tuple) and not _is_namedtuple(output) and len(output) == 2:
        pred, state = output
        if not isinstance(pred, torch.Tensor):
            raise ModelOutputError(
                f"model output must be {_EXPECTED}, got a tuple whose first item is "
                f"{type(pred).__name__}"
            )
        return pred, state
    if isinstance(output, (tuple, list)):
        raise ModelOutputError(
            f"model output must be {_EXPECTED}, got a {type(output).__name__} of {len(output)} items"
        )
    raise ModelOutputError(f"model output must be {_EXPECTED}, got {type(output).__name__}")


def split_output(
    output: Any,
    x: torch.Tensor,
    output_size: int | None = None,
    *,
    per_step: bool = True,
    nested: bool = False,
) -> tuple[torch.Tensor, Any]:
    """``(predictions, state)`` from what a model returned for input ``x``.

    A model may return its predictions alone, as a plain PyTorch sequence model does, or
    ``(predictions, state)`` like :class:`~rnnguard.models.SequenceModel` (the state is then
    carried across batches of stateful tasks). ``per_step``: predictions must be
    ``(batch, time, output_size)``; else ``(batch, outputs)`` (the last step only) is accepted
    too. ``nested``: take the first tensor of any nested tuple or list (what ``nn.LSTM`` and most
    hand-written models return) instead of insisting on one of the two conventions. Anything else
    is a :class:`ModelOutputError` (a TypeError) naming what came back and what was expected.
    """
    if nested:
        pred = _first_tensor(output)
        two = isinstance(output, tuple) and not _is_namedtuple(output) and len(output) == 2
        state = output[1] if two and output[0] is pred else None
    else:
        pred, state = _split_strict(output)
    batch, time = x.shape[0], x.shape[1]
    if per_step:
        want = (batch, time, output_size if output_size is not None else pred.shape[-1])
        if pred.dim() != 3 or tuple(pred.shape) != want:
            raise ModelOutputError(
                f"model output must have shape (batch, time, outputs) = {want} for an input of "
                f"shape {tuple(x.shape)}, got {tuple(pred.shape)}"
            )
        return pred, state
    if pred.dim() not in (2, 3) or pred.shape[0] != batch:
        raise ModelOutputError(
            "model output must have shape (batch, time, outputs) or (batch, outputs) with "
            f"batch {batch}, got {tuple(pred.shape)}"
        )
    if pred.dim() == 3 and pred.shape[1] != time:
        raise ModelOutputError(
            f"model output must keep the {time} time steps of its input, got shape "
            f"{tuple(pred.shape)}"
        )
    return pred, state


def accepts_state(model: nn.Module) -> bool:
    """Whether ``model.forward`` can be called as ``forward(x, state)``."""
    try:
        inspect.signature(model.forward).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read: assume it does
        return True
    return True


class ModelCall(nn.Module):
    """A view of ``model`` with one calling convention: ``(x, state=None) -> (outputs, state)``.

    The state is passed only when there is one and ``forward`` takes a second argument, so a model
    whose ``forward`` takes ``x`` alone trains unchanged, returning a tensor or ``(outputs, h)``
    (it just has no state to carry). Outputs are checked by :func:`split_output` (``per_step``
    and ``nested`` as there). ``takes_state`` overrides the signature test (for a wrapper such as
    DDP, whose signature says nothing).
    """

    def __init__(
        self,
        model: nn.Module,
        output_size: int | None = None,
        takes_state: bool | None = None,
        *,
        per_step: bool = True,
        nested: bool = False,
    ) -> None:
        super().__init__()
        self.inner = model
        self.output_size = output_size
        self.takes_state = accepts_state(model) if takes_state is None else takes_state
        self.per_step = per_step
        self.nested = nested

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        pass_state = state is not None and self.takes_state
        output = self.inner(x, state) if pass_state else self.inner(x)
        pred, new_state = split_output(
            output, x, self.output_size, per_step=self.per_step, nested=self.nested
        )
        return pred, (new_state if self.takes_state else None)


def call_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predictions of any sequence model for ``x``, for measuring rather than training.

    The model's own exceptions on ``x`` become a ConfigError saying what input was expected;
    predictions may be per step or for the last step only (see :func:`split_output`).
    """
    try:
        output = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model must accept a (batch, time, features) input; with shape {tuple(x.shape)} "
            f"it raised {type(exc).__name__}: {msg}"
        ) from exc
    return split_output(output, x, per_step=False, nested=True)[0]
