"""Calling a sequence model and splitting what it returns into ``(predictions, state)``.

One adapter for every caller: the trainer (outputs per time step, a state carried across batches),
the diagnostics (any model that maps a batch to predictions) and ``doctor --verify``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rnnguard.errors import ConfigError, RnnguardError

__all__ = [
    "PREDICTION_KEYS",
    "ModelCall",
    "ModelOutputError",
    "ModelView",
    "accepts_state",
    "call_model",
    "pick_prediction",
    "split_output",
    "to_batch_first",
]

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
    except ModelOutputError:
        raise  # already says what came back and what was expected
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model must accept a (batch, time, features) input; with shape {tuple(x.shape)} "
            f"it raised {type(exc).__name__}: {msg}"
        ) from exc
    return split_output(output, x, per_step=False, nested=True)[0]


# ---------------------------------------------------------------------- a user's model as it is

#: Dict keys tried, in order, for the predictions when a model returns a dict.
PREDICTION_KEYS = ("logits", "output", "outputs", "prediction", "predictions", "y", "out")

Select = str | int | Callable[[Any], torch.Tensor] | None
ForwardArgs = tuple[Any, ...] | Callable[[int], tuple[Any, ...]]


def pick_prediction(output: Any, select: Select = None) -> torch.Tensor:
    """The predictions in what a model returned.

    ``select``: a dict key or attribute name, a tuple index, or a function of the output. By
    default: the tensor itself, the first tensor of a (nested) tuple/list (``(output, hidden)``),
    or the first of :data:`PREDICTION_KEYS` present in a dict (or a ModelOutput-like object).
    """
    if callable(select):
        found = select(output)
    elif isinstance(select, int) and not isinstance(select, bool):
        if not isinstance(output, (tuple, list)) or not -len(output) <= select < len(output):
            raise ModelOutputError(
                f"output={select} picks a tuple item, but the model returned {_describe(output)}"
            )
        found = output[select]
    elif isinstance(select, str):
        if isinstance(output, dict):
            if select not in output:
                raise ModelOutputError(
                    f"output={select!r}: the model's dict has keys {sorted(map(str, output))}"
                )
            found = output[select]
        elif hasattr(output, select):
            found = getattr(output, select)
        else:
            raise ModelOutputError(
                f"output={select!r}: the model returned {_describe(output)} without it"
            )
    elif select is None:
        if isinstance(output, dict) or hasattr(output, "keys"):
            keys = list(output.keys())
            key = next((k for k in PREDICTION_KEYS if k in keys), None)
            if key is None:
                raise ModelOutputError(
                    f"the model returned a dict with keys {sorted(map(str, keys))}; say which "
                    "holds the predictions with output='KEY'"
                )
            found = output[key]
        else:
            found = _first_tensor(output)
    else:
        raise TypeError(
            f"output must be a key, an index, a function or None, got {type(select).__name__}"
        )
    if not isinstance(found, torch.Tensor):
        raise ModelOutputError(f"the selected output is a {type(found).__name__}, not a tensor")
    return found


def _describe(output: Any) -> str:
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} items"
    return f"a {type(output).__name__}"


def to_batch_first(pred: torch.Tensor, batch: int, time: int, batch_first: bool) -> torch.Tensor:
    """Predictions as (batch, time, outputs) or (batch, outputs), whatever layout they came in.

    Accepted: per step in the model's layout (``(time, batch, O)`` for a time-first model), per
    step flattened to ``(time * batch, O)`` (``(batch * time, O)`` batch-first), as a language
    model's decoder returns them, or one row per sequence ``(batch, O)``.
    """
    if pred.dim() == 3:
        want = (batch, time) if batch_first else (time, batch)
        if tuple(pred.shape[:2]) != want:
            layout = "(batch, time, outputs)" if batch_first else "(time, batch, outputs)"
            raise ModelOutputError(
                f"a batch-{'first' if batch_first else 'second'} model must return {layout} = "
                f"{(*want, pred.shape[-1])}, got {tuple(pred.shape)}"
            )
        return pred if batch_first else pred.transpose(0, 1)
    if pred.dim() == 2:
        if pred.shape[0] == batch:
            return pred
        if pred.shape[0] == batch * time:
            if batch_first:
                return pred.reshape(batch, time, -1)
            return pred.reshape(time, batch, -1).transpose(0, 1)
    raise ModelOutputError(
        f"model predictions must be per step ({'batch, time' if batch_first else 'time, batch'}, "
        f"outputs), flattened ({batch * time}, outputs) or per sequence ({batch}, outputs); "
        f"got {tuple(pred.shape)}"
    )


class ModelView(nn.Module):
    """A user's model, called as it expects, seen as ``x (batch, time[, F]) -> predictions``.

    The diagnostics speak batch-first; the view transposes ``x`` for a time-first model, passes
    extra forward arguments (``args``, a tuple or a function of the batch size, e.g. a hidden
    state; ``kwargs``), picks the predictions out of a tuple, dict or object (``output``, see
    :func:`pick_prediction`) and returns them batch-first (see :func:`to_batch_first`).
    ``model`` may be a module or any callable; for a callable, ``modules`` are the modules it
    runs (registered here so that parameters, eval mode and layer search see them).
    """

    #: Prefix of the wrapped module's name, left out of labels such as ``rnn.l0``.
    label_prefix = "model."

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        args: ForwardArgs = (),
        kwargs: dict[str, Any] | None = None,
        batch_first: bool = True,
        output: Select = None,
        modules: list[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(
                f"model must be a torch.nn.Module or a callable, got {type(model).__name__}"
            )
        if not (isinstance(args, tuple) or callable(args)):
            raise TypeError(
                "forward args must be a tuple or a function of the batch size returning one, "
                f"got {type(args).__name__}"
            )
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"forward kwargs must be a dict, got {type(kwargs).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")
        if isinstance(model, nn.Module):
            self.model = model
        else:
            self.fn = model
            mods = list(modules or [])
            if len(mods) == 1:
                self.model = mods[0]
            else:
                self.model = nn.ModuleList(mods)
        self.args = args
        self.kwargs = dict(kwargs or {})
        self.batch_first = batch_first
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time = x.shape[0], x.shape[1]
        xu = x if self.batch_first else x.transpose(0, 1)
        args = self.args(batch) if callable(self.args) else self.args
        if not isinstance(args, tuple):
            raise TypeError(f"forward args function must return a tuple, got {type(args).__name__}")
        fn = self.__dict__.get("fn", self.model)
        out = fn(xu, *args, **self.kwargs)
        return to_batch_first(pick_prediction(out, self.output), batch, time, self.batch_first)
