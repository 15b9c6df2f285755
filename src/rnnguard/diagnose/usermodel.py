"""Seeing a user's model as the diagnostics need it, without changing the model.

The diagnostics speak batch-first: ``x`` is (batch, time, features) floats or (batch, time) token
ids, and predictions come back per step or per sequence. :func:`prepare` wraps any model or callable
in a :class:`~rnnguard.train.model_call.ModelView` that passes the extra forward arguments, picks
the predictions and converts layouts. One forward pass, in eval mode and without gradients, finds
what the view needs to know: the modules a plain callable runs, and whether the model reads its
input time-first, from the shape of the input the first recurrent layer receives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rnnguard.diagnose.trajectory import is_recurrent
from rnnguard.errors import ConfigError
from rnnguard.train.model_call import ForwardArgs, ModelView, Select

__all__ = ["Observed", "observe", "prepare"]


@dataclass
class Observed:
    """What one forward pass showed: the modules run (in call order) and the first recurrent one."""

    modules: list[nn.Module] = field(default_factory=list)
    recurrent: nn.Module | None = None
    recurrent_input: tuple[int, ...] | None = None

    def roots(self) -> list[nn.Module]:
        """The modules run that are not inside another module that ran."""
        inside: set[int] = set()
        for m in self.modules:
            inside.update(id(c) for c in m.modules() if c is not m)
        return [m for m in self.modules if id(m) not in inside]

    def recurrent_batch_time(self) -> tuple[int, int] | None:
        """(batch, time) of the first recurrent layer's input, read in that layer's own layout."""
        shape, mod = self.recurrent_input, self.recurrent
        if shape is None or mod is None or len(shape) != 3:
            return None
        first = bool(getattr(mod, "batch_first", False))
        return (shape[0], shape[1]) if first else (shape[1], shape[0])


@contextlib.contextmanager
def observe() -> Iterator[Observed]:
    """Record every module called inside the block, switching each to eval mode as it starts.

    The modes are put back when the block ends, so the forward pass that finds a callable's modules
    neither updates batch-norm statistics nor draws dropout masks.
    """
    seen = Observed()
    flags: dict[nn.Module, bool] = {}

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if module not in flags:
            flags[module] = module.training
            module.training = False
            seen.modules.append(module)
        if seen.recurrent is None and is_recurrent(module):
            seen.recurrent = module
            if args and isinstance(args[0], Tensor):
                seen.recurrent_input = tuple(args[0].shape)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    try:
        yield seen
    finally:
        handle.remove()
        for m, flag in flags.items():
            m.training = flag


def _dry_run(
    fn: Callable[..., Any], x: Tensor, batch: int, args: ForwardArgs, kwargs: dict[str, Any]
) -> Observed:
    """Run ``fn(x, *args, **kwargs)`` once, watching; ``args`` may be a function of ``batch``."""
    call_args = args(batch) if callable(args) else args
    with observe() as seen, torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
        fn(x, *call_args, **kwargs)
    return seen


def _layout_of_user_batch(x: Tensor, seen: Observed) -> bool:
    """Whether ``x`` (as the user feeds the model) is batch-first, judged by the recurrent input."""
    bt = seen.recurrent_batch_time()
    if bt is None:
        return True  # no recurrent layer to tell: the (batch, time) convention
    b, t = bt
    a0, a1 = x.shape[0], x.shape[1]
    if (a0, a1) == (b, t) and (a0, a1) != (t, b):
        return True
    if (a0, a1) == (t, b) and (a0, a1) != (b, t):
        return False
    if a0 == b != a1:
        return True
    if a1 == b != a0:
        return False
    return bool(getattr(seen.recurrent, "batch_first", False))


def _layout_of_task_batch(x: Tensor, seen: Observed) -> bool:
    """Whether the model reads a batch-first ``x`` as batch-first (it ran on it without error)."""
    bt = seen.recurrent_batch_time()
    if bt is None:
        return True
    flag = bool(getattr(seen.recurrent, "batch_first", False))
    if x.shape[0] == x.shape[1]:
        return flag
    if bt[0] == x.shape[0]:
        return True
    if bt[0] == x.shape[1]:
        return False  # its recurrent layer took x's time steps for the batch
    return flag


def prepare(
    model: nn.Module | Callable[..., Any],
    x: Tensor,
    *,
    x_batch_first: bool | None = None,
    batch_first: bool | None = None,
    args: ForwardArgs = (),
    kwargs: dict[str, Any] | None = None,
    output: Select = None,
) -> tuple[ModelView, Tensor]:
    """The model as a batch-first :class:`ModelView`, and ``x`` batch-first.

    ``x`` is in the layout the model reads (``x_batch_first=None``: unknown, inferred with the
    model's), or known batch-first (``x_batch_first=True``, e.g. a task's batch). ``batch_first``:
    the model's layout; ``None`` infers it from the input its first recurrent layer receives.
    """
    if not callable(model):
        raise TypeError(
            f"model must be a torch.nn.Module or a callable, got {type(model).__name__}"
        )
    if batch_first is not None and not isinstance(batch_first, bool):
        raise TypeError(f"batch_first must be a bool or None, got {type(batch_first).__name__}")
    kw = dict(kwargs or {})
    # (x as the model gets it, its batch size, the layout if this is the call that runs; None:
    # judged from the recurrent layer's input). A hidden state sized for the wrong batch, or a
    # task's batch fed the wrong way round, raises: then the other reading is tried.
    task = bool(x_batch_first)
    candidates: list[tuple[Tensor, int, bool | None]]
    if batch_first is not None:
        if task and not batch_first:
            candidates = [(x.transpose(0, 1), x.shape[0], False)]
        else:
            candidates = [(x, x.shape[0] if batch_first else x.shape[1], batch_first)]
        if isinstance(model, nn.Module):
            candidates = []  # nothing to find out: no need to run it
    elif task:
        candidates = [(x, x.shape[0], None), (x.transpose(0, 1), x.shape[0], False)]
    else:
        candidates = [(x, x.shape[0], None)]
        if callable(args):
            candidates.append((x, x.shape[1], False))
    seen = Observed()
    model_bf = batch_first
    first_error: Exception | None = None
    for x_call, batch, layout in candidates:
        try:
            seen = _dry_run(model, x_call, batch, args, kw)
        except Exception as exc:  # the model's own complaint, reported below if nothing runs
            first_error = first_error or exc
            continue
        if layout is not None:
            model_bf = layout
        elif task:
            model_bf = _layout_of_task_batch(x, seen)
        else:
            model_bf = _layout_of_user_batch(x, seen)
        first_error = None
        break
    if first_error is not None:
        msg = str(first_error).strip().splitlines()[0] if str(first_error).strip() else ""
        layout_text = "(batch, time, features)" if x.is_floating_point() else "(batch, time)"
        raise ConfigError(
            f"model must accept a {layout_text} input (or its time-first transpose); with shape "
            f"{tuple(x.shape)} it raised {type(first_error).__name__}: {msg} (extra forward "
            "arguments go in forward_args=/forward_kwargs=, the layout in batch_first=)"
        ) from first_error
    assert model_bf is not None
    if isinstance(model, nn.Module):
        view = ModelView(model, args=args, kwargs=kw, batch_first=model_bf, output=output)
    else:
        roots = seen.roots()
        if not roots:
            raise ConfigError(
                "model is a callable that ran no torch.nn.Module on the batch: nothing to diagnose"
            )
        view = ModelView(
            model, args=args, kwargs=kw, batch_first=model_bf, output=output, modules=roots
        )
    x_bf = x if (x_batch_first or model_bf) else x.transpose(0, 1)
    return view, x_bf
