"""Gradient horizon: how strongly a loss at one step depends on the inputs k steps earlier.

For a loss ``L`` at step ``s`` the horizon curve is ``g(k) = mean_b ||dL_b / dx_{b, s-k}||`` for
k = 0..s, the batch average of per-sample gradient norms. It works on any module mapping
(batch, time, features) to outputs, recurrent or not. Summaries: the fitted per-step log-rate of
``g`` and the horizon, the distance from which ``g(k) / ref`` stays below a threshold.

The reference ``ref`` is the mean of ``g`` over distances 1..10, the nearest inputs whose
influence travels through time: the current input's direct path is special in every architecture
(a Transformer's residual stream gives it far more weight than any single past position, an RNN
skips the recurrence for it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnguard.diagnose._common import (
    check_module,
    check_sequence_batch,
    eval_mode,
)
from rnnguard.errors import ConfigError
from rnnguard.train.model_call import ModelView, call_model
from rnnguard.utils.checks import fraction, integer

__all__ = [
    "Horizon",
    "HorizonSet",
    "fit_log_rate",
    "gradient_horizons",
    "input_horizon",
    "summarize_curve",
]

#: Distances averaged for the reference norm and for the running mean of ``peak_ratio``.
WINDOW = 10
#: Norms below this fraction of the reference are treated as numerically zero when fitting rates.
_FIT_FLOOR = 1e-30


@dataclass
class Horizon:
    """A gradient-horizon curve and its summaries.

    ``norms[k]`` is the batch-averaged gradient norm at distance k from the loss step;
    ``normalized`` divides by the reference (the mean norm over distances 1..``WINDOW``).
    ``rate`` is the least-squares slope of ``log norms`` per step (< 0 decay, > 0 growth);
    ``horizon`` the distance from which ``normalized`` stays below ``threshold`` up to the start
    of the sequence (None: it does not), so a single dip of an oscillating curve does not count.
    """

    norms: np.ndarray
    normalized: np.ndarray
    rate: float
    horizon: int | None
    threshold: float
    label: str = "input"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def distances(self) -> np.ndarray:
        """The distances k = 0..len-1 matching ``norms``."""
        return np.arange(len(self.norms))

    @property
    def max_distance(self) -> int:
        """The largest distance measured (the loss step's index)."""
        return len(self.norms) - 1

    @property
    def far_ratio(self) -> float:
        """Normalised norm at the largest distance: how much of the gradient reaches the start."""
        return float(self.normalized[-1])

    @property
    def peak_ratio(self) -> float:
        """Largest running mean (window ``WINDOW``) of the normalised norms at distances >= 1.

        > 1 means the farther past weighs more than the near past; averaging over a window keeps
        single spiky steps (inputs that happen to open a gate) from counting as growth.
        """
        past = self.normalized[1:]
        if not np.all(np.isfinite(past)):
            return math.inf
        w = min(WINDOW, len(past))
        return float(np.convolve(past, np.ones(w) / w, mode="valid").max())

    @property
    def finite(self) -> bool:
        """Whether every gradient norm is finite."""
        return bool(np.all(np.isfinite(self.norms)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the curve included)."""
        return {
            "label": self.label,
            "rate_per_step": _json_float(self.rate),
            "factor_per_step": _json_float(math.exp(self.rate))
            if math.isfinite(self.rate)
            else None,
            "horizon": self.horizon,
            "threshold": self.threshold,
            "max_distance": self.max_distance,
            "far_ratio": _json_float(self.far_ratio),
            "peak_ratio": _json_float(self.peak_ratio),
            "finite": self.finite,
            "norms": [_json_float(v) for v in self.norms],
            **self.extra,
        }


def _json_float(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def fit_log_rate(norms: np.ndarray) -> float:
    """Least-squares slope of ``log(norms[k])`` against k, over finite and non-negligible values."""
    norms = np.asarray(norms, dtype=np.float64)
    k = np.arange(len(norms), dtype=np.float64)
    ok = np.isfinite(norms) & (norms > 0)
    if ok.any():
        ok &= norms > _FIT_FLOOR * norms[ok].max()
    if ok.sum() < 2:
        # non-finite gradients mean growth beyond float range; a single non-zero value total decay
        if not np.all(np.isfinite(norms)):
            return math.inf
        return -math.inf if ok.any() else math.nan
    slope = np.polyfit(k[ok], np.log(norms[ok]), 1)[0]
    return float(slope)


def summarize_curve(norms: np.ndarray, threshold: float = 1e-3, label: str = "input") -> Horizon:
    """Build a :class:`Horizon` from raw norms indexed by distance."""
    threshold = fraction("threshold", threshold)
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 1 or len(norms) < 2:
        raise ConfigError(
            f"norms must be a 1-d array with at least 2 values, got shape {norms.shape}"
        )
    # reference: the mean over the nearest WINDOW past distances (robust to one spiky step)
    near = norms[1 : 1 + WINDOW]
    near = near[np.isfinite(near)]
    ref = float(near.mean()) if near.size else 0.0
    if not ref > 0:
        positive = np.flatnonzero(np.isfinite(norms) & (norms > 0))
        ref = float(norms[positive[0]]) if positive.size else 0.0
    normalized = norms / ref if ref > 0 else np.where(np.isfinite(norms), 0.0, np.inf)
    above = np.flatnonzero(~(normalized[1:] < threshold)) + 1  # NaN/inf count as above
    last_above = int(above[-1]) if above.size else 0
    horizon = last_above + 1 if last_above + 1 < len(norms) else None
    return Horizon(norms, normalized, fit_log_rate(norms), horizon, threshold, label)


class _TokenTap:
    """Where gradients of a token model are measured: a batch-first leaf put in place by hooks.

    The input of the first recurrent layer that runs (torch.nn or rnnguard), or, in a model without
    one, the first nn.Embedding's output. The layer's own ``batch_first`` (the view's layout for an
    embedding) says which dimension is time, so time-first models are measured the same way.
    """

    def __init__(self, model: nn.Module) -> None:
        from rnnguard.diagnose.trajectory import find_recurrent

        self.recurrent = find_recurrent(model)
        self.embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
        self.embedding_batch_first = model.batch_first if isinstance(model, ModelView) else True
        self.leaf: Tensor | None = None
        self.where = ""

    def _make_leaf(self, value: Tensor, batch_first: bool, where: str) -> Tensor:
        leaf = (value if batch_first else value.transpose(0, 1)).detach().clone()
        self.leaf, self.where = leaf.requires_grad_(True), where
        return self.leaf if batch_first else self.leaf.transpose(0, 1)

    def recurrent_hook(self, name: str) -> Callable[..., Any]:
        def pre_hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
            if self.where.endswith(" input"):
                return None  # the first recurrent layer already holds the leaf
            value = args[0] if args else kwargs.get("input")
            if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() != 3:
                return None
            new = self._make_leaf(
                value, bool(getattr(module, "batch_first", False)), f"{name} input"
            )
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "input": new}

        return pre_hook

    def embedding_hook(self, module: nn.Module, args: Any, out: Tensor) -> Tensor | None:
        if self.leaf is not None or not isinstance(out, Tensor) or out.dim() != 3:
            return None
        return self._make_leaf(out, self.embedding_batch_first, "embedding output")

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        handles = [
            m.register_forward_pre_hook(self.recurrent_hook(name), with_kwargs=True)
            for name, m in self.recurrent
        ]
        if self.embedding is not None:
            handles.append(self.embedding.register_forward_hook(self.embedding_hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _forward_with_leaf(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, str]:
    """Run the model; return (prediction, the tensor whose gradient per step we measure, where)."""
    if x.is_floating_point():
        leaf = x.detach().clone().requires_grad_(True)
        return call_model(model, leaf), leaf, "input"
    tap = _TokenTap(model)
    if not tap.recurrent and tap.embedding is None:
        raise ConfigError(
            "x holds integer tokens but the model has no recurrent layer or nn.Embedding to "
            "measure gradients at; pass float features of shape (batch, time, features)"
        )
    with tap.attached():
        y = call_model(model, x)
    if tap.leaf is None:
        raise ConfigError(
            "x holds integer tokens, but no recurrent layer received a float "
            "(batch, time, features) input and no nn.Embedding produced one: nothing to measure at"
        )
    if tap.leaf.shape[:2] != x.shape[:2]:
        raise ConfigError(
            f"the {tap.where} has (batch, time) = {tuple(tap.leaf.shape[:2])} but the input has "
            f"{tuple(x.shape[:2])}: the gradient horizon needs one step there per input step"
        )
    return y, tap.leaf, tap.where


def _loss_step(y: Tensor, step: int, length: int) -> tuple[Tensor, int]:
    """The prediction at the loss step (B, O) and that step's index in [0, length)."""
    if isinstance(step, bool) or not isinstance(step, int) or not -length <= step < length:
        raise ConfigError(f"step must be an int in [-{length}, {length}), got {step!r}")
    s = step % length
    if y.dim() == 2:
        if s != length - 1:
            raise ConfigError(
                f"the model returns one output per sequence, so step must be the last one, got {step}"
            )
        return y, s
    return y[:, s], s


def _squared_grad_norms(
    y: Tensor,
    y_s: Tensor,
    leaves: list[Tensor],
    loss: Callable[[Tensor], Tensor] | None,
    max_outputs: int,
    generator: torch.Generator | None,
) -> list[Tensor]:
    """Per-sample, per-step squared gradient norms (B, T) of the loss for each leaf (B, T, F)."""
    sq = [torch.zeros(leaf.shape[:2], dtype=torch.float64, device=leaf.device) for leaf in leaves]
    if loss is not None:
        value = loss(y)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ConfigError("loss must return a scalar tensor")
        targets = [(value.reshape(()), False)]
    else:
        flat = y_s.reshape(y_s.shape[0], -1)
        outs = flat.shape[1]
        if outs <= max_outputs:
            probes = list(torch.eye(outs, dtype=flat.dtype, device=flat.device))
        else:
            # E||J^T v||^2 = ||J||_F^2 for v ~ N(0, I): unbiased Frobenius estimate
            gen = generator or torch.Generator().manual_seed(0)
            draws = torch.randn(max_outputs, outs, generator=gen, dtype=torch.float64)
            probes = list((draws / math.sqrt(max_outputs)).to(flat.device, flat.dtype))
        targets = [((flat * v).sum(), i < len(probes) - 1) for i, v in enumerate(probes)]
    for value, retain in targets:
        grads = torch.autograd.grad(value, leaves, retain_graph=retain, allow_unused=True)
        for acc, g in zip(sq, grads):
            if g is not None:
                acc += g.detach().double().pow(2).sum(-1)
    return sq


def _by_distance(sq: Tensor, s: int, reverse: bool = False) -> np.ndarray:
    """Batch-mean norms indexed by distance from step ``s`` (upstream in the recurrence's order)."""
    per_sample = sq.sqrt()
    per_sample = per_sample[:, s:] if reverse else per_sample[:, : s + 1].flip(1)
    return per_sample.mean(0).cpu().numpy()


@dataclass
class HorizonSet:
    """The input horizon and, for each recurrent layer/direction found, the hidden-state horizon."""

    input: Horizon
    hidden: dict[str, Horizon] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "input": self.input.to_dict(),
            "hidden": {k: h.to_dict() for k, h in self.hidden.items()},
        }


def _check_args(
    model: nn.Module, x: Tensor, threshold: float, max_outputs: int, loss: Any
) -> float:
    check_module(model)
    check_sequence_batch(x)
    integer("max_outputs", max_outputs, minimum=1)
    if loss is not None and not callable(loss):
        raise TypeError(
            f"loss must be a callable(prediction) -> scalar tensor, got {type(loss).__name__}"
        )
    return fraction("threshold", threshold)


def gradient_horizons(
    model: nn.Module,
    x: Tensor,
    *,
    loss: Callable[[Tensor], Tensor] | None = None,
    step: int = -1,
    threshold: float = 1e-3,
    max_outputs: int = 16,
    generator: torch.Generator | None = None,
) -> HorizonSet:
    """The input horizon plus ``||dL/dh_{s-k}||`` for every recurrent layer inside ``model``.

    Recurrent submodules (torch.nn.RNN/LSTM/GRU, rnnguard RNN/LSTM/GRU/IndRNN) are found by type and
    unrolled step by step; see :func:`input_horizon` for the arguments. Hidden-state curves are
    labelled ``<submodule>.l<layer>[.reverse]``; a reverse direction counts distance forward in time.
    """
    from rnnguard.diagnose.trajectory import trace_recurrent

    threshold = _check_args(model, x, threshold, max_outputs, loss)
    with eval_mode(model), torch.enable_grad(), trace_recurrent(model) as traces:
        y, leaf, where = _forward_with_leaf(model, x)
        y_s, s = _loss_step(y, step, x.shape[1])
        dirs = [(mt, d) for mt in traces for d in mt.directions]
        probes = [d.probe for _, d in dirs]
        sq = _squared_grad_norms(y, y_s, [leaf, *probes], loss, max_outputs, generator)
    result = HorizonSet(_input_curve(sq[0], s, threshold, where))
    for (mt, d), q in zip(dirs, sq[1:]):
        # the probe of a reverse direction is stored in processing order: flip back to time order
        q_time = q.flip(1) if d.direction else q
        curve = _by_distance(q_time, s, reverse=bool(d.direction))
        if len(curve) >= 2:
            result.hidden[mt.label(d)] = summarize_curve(curve, threshold, mt.label(d))
    return result


def _input_curve(sq: Tensor, s: int, threshold: float, where: str = "input") -> Horizon:
    """The input horizon from the squared input-gradient norms; refused if they are all zero.

    ``where``: what was measured, ``input`` or, for token inputs, the recurrent layer's input or
    the embedding output (kept in ``extra["measured_at"]``).
    """
    norms = _by_distance(sq, s)
    if not np.any(norms > 0) and np.all(np.isfinite(norms)):
        raise ConfigError(
            f"the model's output at step {s} does not depend on its inputs: no gradient to measure"
        )
    curve = summarize_curve(norms, threshold, "input")
    curve.extra["measured_at"] = where
    return curve


def input_horizon(
    model: nn.Module,
    x: Tensor,
    *,
    loss: Callable[[Tensor], Tensor] | None = None,
    step: int = -1,
    threshold: float = 1e-3,
    max_outputs: int = 16,
    generator: torch.Generator | None = None,
) -> Horizon:
    """Measure ``mean_b ||dL_b/dx_{b,s-k}||`` for k = 0..s on the batch ``x`` (eval mode).

    ``loss(prediction) -> scalar`` must be a sum (or mean) of per-sample terms depending only on
    steps <= ``step``. Without it the norm is the Frobenius norm of the Jacobian of the prediction
    at ``step`` with respect to x_{s-k}: exact for up to ``max_outputs`` output channels, an
    unbiased random-projection estimate beyond. Token inputs are measured at the first recurrent
    layer's input (or, without one, at the embedding output).
    """
    threshold = _check_args(model, x, threshold, max_outputs, loss)
    with eval_mode(model), torch.enable_grad():
        y, leaf, where = _forward_with_leaf(model, x)
        y_s, s = _loss_step(y, step, x.shape[1])
        (sq,) = _squared_grad_norms(y, y_s, [leaf], loss, max_outputs, generator)
    return _input_curve(sq, s, threshold, where)
