"""Pieces shared by the fused recurrences: input projection, LayerNorm backward, time framing.

A family's fused direction (:data:`FusedFn`) takes one :class:`Direction`, the layer direction's
inputs, and returns its h_t in loop order and the final state.

The fused loops take zoneout as a *zoneout weight* ``m``, the one rule
``h_t = m * h_{t-1} + (1 - m) * h~_t`` that covers a zoneout mask (train), the zoneout rate
(eval) and variable lengths ("this step is padding": m = 1), so each loop handles all three with
one ``torch.lerp`` per state. ``lerp`` returns its end points exactly for weights 0 and 1, so the
masked steps copy the state bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnguard.errors import ConfigError, ShapeError
from rnnguard.nn.functional import LEAKY_SLOPE, LN_EPS, NONLINEARITIES, LayerParams, State
from rnnguard.nn.fused import amp
from rnnguard.nn.options import RecurrentOptions

#: A zoneout weight: a tensor broadcastable to (T, B, H), a constant rate, or nothing.
ZoneoutWeight = Tensor | float | None

#: Recomputes a recurrence's ``pre`` input, with its graph, from tensors autograd keeps anyway.
Rebuild = Callable[[], Tensor]

_A = torch.ops.aten
_ln_backward_op = _A.native_layer_norm_backward.default


def ln_forward(
    v: Tensor, weight: Tensor | None, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """LayerNorm over the last dim; returns (output, mean, rstd) so backward need not recompute."""
    return torch.native_layer_norm(v, (v.shape[-1],), weight, bias, LN_EPS)


def ln_backward_affine(
    dy: Tensor, v: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor, with_bias: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """LayerNorm backward for the input, the gain and (optionally) the shift, in one aten call.

    Computing the gain's gradient step by step, while the step's data is in cache, is cheaper
    than one pass over all stored steps afterwards.
    """
    mask = [True, True, with_bias]
    bias = weight if with_bias else None  # only its presence matters to the kernel
    dx, dw, db = _ln_backward_op(dy, v, [v.shape[-1]], mean, rstd, weight, bias, mask)
    return dx, dw, (db if with_bias else None)


def act_(v: Tensor, name: str) -> Tensor:
    """Apply the named activation in place."""
    if name == "tanh":
        return v.tanh_()
    if name == "relu":
        return v.relu_()
    if name == "leaky_relu":
        return F.leaky_relu_(v, LEAKY_SLOPE)
    raise ConfigError(f"nonlinearity must be one of {NONLINEARITIES}, got {name!r}")


def act_backward_into(grad: Tensor, out: Tensor, name: str, dest: Tensor) -> Tensor:
    """``dest = grad * act'(.)`` from the activation's output ``out``, one aten call."""
    if name == "tanh":
        return _A.tanh_backward.grad_input(grad, out, grad_input=dest)  # type: ignore[no-any-return]
    if name == "relu":  # out > 0 exactly where the input is > 0
        return _A.threshold_backward.grad_input(grad, out, 0, grad_input=dest)  # type: ignore[no-any-return]
    if name == "leaky_relu":
        return _A.leaky_relu_backward.grad_input(  # type: ignore[no-any-return]
            grad, out, LEAKY_SLOPE, True, grad_input=dest
        )
    raise ConfigError(f"nonlinearity must be one of {NONLINEARITIES}, got {name!r}")


def times_keep(x: Tensor, m: Tensor | float) -> Tensor:
    """``x * (1 - m)`` for one step, without materialising ``1 - m`` for every step."""
    if isinstance(m, Tensor):
        return torch.addcmul(x, x, m, value=-1.0)
    return x * (1.0 - m)


def add_scaled_(target: Tensor, weight: Tensor | float, x: Tensor) -> Tensor:
    """``target += weight * x`` for a tensor or constant weight."""
    if isinstance(weight, Tensor):
        return target.addcmul_(weight, x)
    return target.add_(x, alpha=weight)


def steps_of(zoneout: ZoneoutWeight, steps: int) -> list[Any]:
    """Per-step views of a zoneout weight (a constant repeats)."""
    if isinstance(zoneout, Tensor):
        return list(zoneout.unbind(0))
    return [zoneout] * steps


def stack_stats(stats: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor] | None:
    """Per-step LayerNorm ``(mean, rstd)`` pairs stacked over time, or None when there are none."""
    if not stats:
        return None
    return torch.stack([m for m, _ in stats]), torch.stack([r for _, r in stats])


def normed_product(
    prod: RecurrentProduct,
    h: Tensor,
    raw_t: Tensor,
    gain: Tensor | None,
    shift: Tensor | None,
    stats: list[tuple[Tensor, Tensor]],
) -> Tensor:
    """``LN(h @ W_hh^T)`` for one step: the product goes into ``raw_t`` and the LayerNorm's
    ``(mean, rstd)`` onto ``stats``, both for :func:`normed_product_backward`."""
    prod.into(h, raw_t)
    y, mu, rs = ln_forward(raw_t, gain, shift)
    stats.append((mu, rs))
    return y


def normed_product_backward(
    dy: Tensor,
    raw_t: Tensor,
    mean_t: Tensor,
    rstd_t: Tensor,
    gain: Tensor,
    d_raw_t: Tensor,
    d_gains: list[Tensor],
) -> Tensor:
    """Backward of one step's :func:`normed_product`: the product's gradient, also written into
    ``d_raw_t`` (for the weight gradient); the gain's gradient goes onto ``d_gains``."""
    dr, dg, _ = ln_backward_affine(dy, raw_t, mean_t, rstd_t, gain, False)
    d_raw_t.copy_(dr)
    d_gains.append(dg)
    return dr


def grad_into_previous(
    back: RecurrentProduct, dr: Tensor, dh_l: Sequence[Tensor], t: int
) -> Tensor:
    """dL/dh_{t-1} with the share through step t's product ``dr @ W_hh`` (``back``) added.

    For t > 0 that is ``dh_l[t - 1]``, updated in place; for t = 0 a new tensor, dL/dh0.
    """
    if t > 0:
        return back.accumulate(dh_l[t - 1], dr)
    return back(dr)


def recurrent_weight_grad(d_raw: Tensor, h0: Tensor, hs: Tensor) -> Tensor:
    """``sum_t d_raw_t^T h_{t-1}`` as one matrix multiply over all steps (plus the first step)."""
    g = d_raw.shape[-1]
    h = h0.shape[-1]
    dw = torch.mm(d_raw[0].t(), h0)
    if d_raw.shape[0] > 1:
        dw.addmm_(d_raw[1:].reshape(-1, g).t(), hs[:-1].reshape(-1, h))
    return dw


class TimeFrame:
    """Maps a direction's tensors into the order its loop runs in, and back.

    The fused loops always run forward over ``t = 0..T-1``. For the reverse direction every
    sequence is reversed within its own length (padding stays in place), which is an involution,
    so the same gather maps back. ``pad`` (T, B, 1) marks steps at or after a sequence's length.
    """

    def __init__(
        self, steps: int, batch: int, device: torch.device, lengths: Tensor | None, reverse: bool
    ) -> None:
        self.reverse = reverse
        self.index: Tensor | None = None
        self.pad: Tensor | None = None
        if lengths is None:
            return
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ShapeError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        lengths = lengths.to(device=device, dtype=torch.long)
        t = torch.arange(steps, device=device).unsqueeze(1)  # (T, 1)
        pad = t >= lengths.unsqueeze(0)  # (T, B)
        if bool(pad.any()):
            self.pad = pad.unsqueeze(-1)
        if reverse:
            self.index = torch.where(pad, t, lengths.unsqueeze(0) - 1 - t)

    def to_frame(self, v: Tensor) -> Tensor:
        """Reorder a (T, B, ...) tensor into loop order."""
        if not self.reverse:
            return v
        if self.index is None:
            return v.flip(0)
        idx = self.index.view(*self.index.shape, *([1] * (v.dim() - 2))).expand_as(v)
        return v.gather(0, idx)

    from_frame = to_frame  # the reordering is its own inverse

    def zoneout_weight(
        self, mask: Tensor | None, rate: float, training: bool, like: Tensor
    ) -> ZoneoutWeight:
        """Combine a zoneout mask (train) or rate (eval) with the padding into one zoneout weight."""
        c: ZoneoutWeight = None
        if rate > 0.0:
            c = (
                self.to_frame(mask)
                if training and mask is not None
                else (None if training else rate)
            )
        if self.pad is None:
            return c
        if c is None:
            return self.pad.to(like.dtype)
        if isinstance(c, Tensor):
            return c.masked_fill(self.pad, 1.0)
        return torch.where(self.pad, 1.0, c).to(like.dtype)

    def zero_padding(self, out: Tensor) -> Tensor:
        """Zero the outputs at padded steps (in the caller's time order)."""
        if self.pad is None:
            return out
        return out.masked_fill(self.pad, 0.0)


def fused_input(
    x: Tensor,
    params: LayerParams,
    fold_bias_hh: bool,
    scale: Tensor | None = None,
    defer_ln: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``LN(W_ih x) + b_ih (+ b_hh)`` for all steps, the bias fused into the matmul or the LayerNorm.

    ``scale`` (G,) multiplies the result's features, folded into the weight (or LayerNorm gain)
    and the bias, so it costs no pass over the (T, B, G) result. Returns ``(result, None, None)``,
    or with ``defer_ln`` and an input LayerNorm ``(W_ih x, gain, bias)`` for the caller to apply.
    In a mixed-precision run (:mod:`.amp`) the product takes half-precision inputs and the result
    (bias, LayerNorm) is float32.
    """
    half = amp.current()
    bias = params.bias_ih
    if fold_bias_hh and params.bias_hh is not None:
        bias = params.bias_hh if bias is None else bias + params.bias_hh
    if scale is not None and bias is not None:
        bias = bias * scale
    if params.ln_ih is None:
        w = params.weight_ih if scale is None else params.weight_ih * scale.unsqueeze(1)
        if half is None:
            return F.linear(x, w, bias), None, None
        v = amp.linear(x, w, half)
        return (v if bias is None else v.add_(bias)), None, None
    gain = params.ln_ih if scale is None else params.ln_ih * scale
    v = F.linear(x, params.weight_ih) if half is None else amp.linear(x, params.weight_ih, half)
    if defer_ln:
        return v, gain, bias
    return F.layer_norm(v, (v.shape[-1],), gain, bias, LN_EPS), None, None


@dataclass(frozen=True)
class Direction:
    """One layer direction as a family's fused loop receives it."""

    frame: TimeFrame
    x: Tensor  # (T, B, I) in the caller's time order
    state0: State
    params: LayerParams
    w_hh: Tensor  # after DropConnect
    options: RecurrentOptions
    zoneout: ZoneoutWeight  # of h
    zoneout_cell: ZoneoutWeight  # of c (families with a cell)

    @contextlib.contextmanager
    def input_side(
        self, fold_bias_hh: bool, scale: Tensor | None = None, defer_ln: bool = False
    ) -> Iterator[tuple[Tensor, Tensor | None, Tensor | None]]:
        """:func:`fused_input` with its result in loop order; inside the block a recurrence can
        recompute that result for double backward (:func:`rebuilding`)."""
        pre, gain, bias = fused_input(self.x, self.params, fold_bias_hh, scale, defer_ln)
        rebuild = input_rebuilder(self.frame, self.x, self.params, fold_bias_hh, scale, defer_ln)
        with rebuilding(rebuild):
            yield self.frame.to_frame(pre), gain, bias


#: A family's fused direction: its h_t for every step in loop order, and the final state.
FusedFn = Callable[[Direction], tuple[Tensor, State]]


def input_rebuilder(
    frame: TimeFrame,
    x: Tensor,
    params: LayerParams,
    fold_bias_hh: bool,
    scale: Tensor | None = None,
    defer_ln: bool = False,
) -> Rebuild:
    """A :data:`Rebuild` giving ``frame.to_frame(fused_input(...)[0])`` again, in the same precision."""
    half = amp.current()

    def rebuild() -> Tensor:
        with amp.mixed(x.device.type, half) if half is not None else contextlib.nullcontext():
            return frame.to_frame(fused_input(x, params, fold_bias_hh, scale, defer_ln)[0])

    return rebuild


# --------------------------------------------------------------------------- double backward
#
# The hand-written backward passes compute numbers only. When a graph of the backward is asked
# for (``create_graph=True``: gradient penalties, Hessian-vector products), the Function
# recomputes its outputs from its inputs with ordinary autograd operations (the family's
# reference recurrence) and differentiates those with a graph, so gradients of every order are
# exact. ``pre`` (T, B, G) is the one large input: instead of keeping it alive on the off chance,
# the layers say how to recompute it (:func:`rebuilding`), from the input and weights that the
# input projection's own backward keeps anyway.

_rebuild = threading.local()


@contextlib.contextmanager
def rebuilding(rebuild: Rebuild | None) -> Iterator[None]:
    """Inside the block, a recurrence Function recomputes its ``pre`` with ``rebuild`` if needed."""
    before = getattr(_rebuild, "fn", None)
    _rebuild.fn = rebuild
    try:
        yield
    finally:
        _rebuild.fn = before


def current_rebuild() -> Rebuild | None:
    """The :func:`rebuilding` in effect on this thread, if any."""
    return getattr(_rebuild, "fn", None)


def keep_for_double_backward(
    ctx: Any, reference: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    """In a Function's forward: remember its inputs (``args``, ``pre`` first, the inputs
    themselves, not contiguous copies) and the reference that recomputes its outputs."""
    rebuild = current_rebuild()
    ctx.double_backward = (reference, rebuild, (None if rebuild else args[0], *args[1:]))


def opaque(function: type[torch.autograd.Function]) -> Callable[..., Any]:
    """``function.apply`` kept whole under ``torch.compile``, which runs it eagerly as one step:
    ctypes calls and Triton launches cannot be traced."""

    @torch.compiler.disable
    def apply(*args: Any) -> Any:
        return function.apply(*args)

    return apply


def twice_differentiable(fast: Callable[..., Any]) -> Callable[..., Any]:
    """Backward decorator: ``fast`` for plain gradients, :func:`double_backward` under a graph."""

    @functools.wraps(fast)
    def backward(ctx: Any, *grads: Tensor) -> Any:
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            return double_backward(ctx, *grads)
        return fast(ctx, *grads)

    return backward


def double_backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
    """The gradients of a Function's inputs as a differentiable graph (see the section comment)."""
    reference, rebuild, kept = ctx.double_backward
    args = list(kept)
    if args[0] is None:
        args[0] = rebuild()
    need = ctx.needs_input_grad
    wrt = [
        i for i, a in enumerate(args)
        if isinstance(a, Tensor) and i < len(need) and need[i] and a.requires_grad
    ]  # fmt: skip
    out: list[Tensor | None] = [None] * len(need)
    if not wrt:
        return tuple(out)
    with torch.enable_grad():
        result = reference(*args)
    outputs = result if isinstance(result, tuple) else (result,)
    got = torch.autograd.grad(
        outputs, [args[i] for i in wrt], list(grads), create_graph=True, allow_unused=True
    )
    for i, g in zip(wrt, got):
        out[i] = g if g is not None else torch.zeros_like(args[i])
    return tuple(out)


def zoneout_at(zoneout: ZoneoutWeight, t: int) -> Tensor | float | None:
    """Step ``t`` of a zoneout weight."""
    return zoneout[t] if isinstance(zoneout, Tensor) else zoneout


def keep_zoned(new: Tensor, old: Tensor, zoneout: ZoneoutWeight, t: int) -> Tensor:
    """``m old + (1 - m) new`` with step ``t``'s zoneout weight ``m`` (differentiably)."""
    m = zoneout_at(zoneout, t)
    return new if m is None else torch.lerp(new, old, m)  # type: ignore[arg-type]


def recurrent_matmul(h: Tensor, w: Tensor) -> Tensor:
    """``h @ w^T`` in ``h``'s dtype (a mixed-precision run keeps ``w`` in half precision)."""
    return h @ w.to(h.dtype).t()


def stack_steps(hs: list[Tensor], like: Tensor, h0: Tensor) -> Tensor:
    """The per-step states as one (T, B, H) tensor (an empty one for zero steps)."""
    return torch.stack(hs) if hs else like.new_empty(0, *h0.shape)


def _dnnl_ops() -> tuple[Any, Any] | None:
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        return mkldnn._reorder_linear_weight, mkldnn._linear_pointwise  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        return None


def _probe_dnnl() -> tuple[Any, Any] | None:
    """The oneDNN packed-linear ops if present and correct on a small product, else None.

    They are internal to torch, so a release that changes them must degrade to ``torch.mm``.
    """
    ops = _dnnl_ops() if torch.backends.mkldnn.is_available() else None
    if ops is None:
        return None
    try:
        gen = torch.Generator().manual_seed(0)
        w, x = torch.randn(8, 4, generator=gen), torch.randn(3, 4, generator=gen)
        y = ops[1](x, ops[0](w, 3), None, "none", [], "")
        return ops if torch.allclose(y, x @ w.t(), atol=1e-5) else None
    except (RuntimeError, TypeError):
        return None


_DNNL = _probe_dnnl()


_HALF = (torch.bfloat16, torch.float16)


class RecurrentProduct:
    """``x @ weight^T`` for one weight used at every step, on (B, .) rows.

    On CPU in float32 the weight is packed once for oneDNN, whose small-batch matrix multiply is
    1.2x (one thread) to 2x (two threads) faster than ``torch.mm`` here, which re-packs the weight
    on every call. Elsewhere (CUDA, float64, oneDNN unavailable or disabled) it is ``torch.mm``.

    Mixed precision (see :mod:`.amp`): a half-precision weight with float32 ``x`` multiplies ``x``
    in the weight's precision and returns float32. On CUDA that is a half-precision product; on
    CPU, where few processors have half-precision units (there it runs several times slower than
    float32), ``x`` is rounded to the weight's precision and multiplied in float32 by the weight's
    exact float32 values: the same products, accumulated in float32, at float32 speed.
    """

    def __init__(self, weight: Tensor, batch: int) -> None:
        self.half_t = weight.t()  # the weight as given, for inputs of its own dtype
        cpu = weight.device.type == "cpu"
        # The precision inputs are rounded to on CPU under mixed precision.
        self.round_to = weight.dtype if cpu and weight.dtype in _HALF else None
        w = weight.float() if self.round_to is not None else weight
        self.weight_t = w.t()
        self.packed: Tensor | None = None
        self._linear: Any = None
        if (
            _DNNL is not None
            and torch.backends.mkldnn.enabled
            and cpu
            and w.dtype == torch.float32
            and batch > 0
        ):
            try:
                self.packed = _DNNL[0](w.contiguous(), batch)
                self._linear = _DNNL[1]
            except RuntimeError:  # an unsupported build or shape: the plain product is exact
                self.packed = None

    def _low(self, x: Tensor) -> Tensor | None:
        """The product when ``x`` and the weight differ in dtype or are both half, else None."""
        w = self.half_t
        if x.dtype == w.dtype:
            return torch.mm(x, w) if self.round_to is not None else None  # a half model on CPU
        if self.round_to is None:  # CUDA mixed precision: a half-precision product
            return torch.mm(x.to(w.dtype), w)
        return None

    def _in(self, x: Tensor) -> Tensor:
        """``x`` rounded to the weight's precision on CPU under mixed precision (see class doc)."""
        return x if self.round_to is None else x.to(self.round_to).to(x.dtype)

    def __call__(self, x: Tensor) -> Tensor:
        low = self._low(x)
        if low is not None:
            return low.to(x.dtype)
        x = self._in(x)
        if self.packed is not None:
            return self._linear(x, self.packed, None, "none", [], "")  # type: ignore[no-any-return]
        return torch.mm(x, self.weight_t)

    def into(self, x: Tensor, out: Tensor) -> Tensor:
        """``out = x @ weight^T``."""
        low = self._low(x)
        if low is not None:
            return out.copy_(low)
        if self.packed is not None:
            return out.copy_(self(x))
        return torch.mm(self._in(x), self.weight_t, out=out)

    def add_into(self, base: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """``out = base + x @ weight^T``."""
        low = self._low(x)
        if low is not None:
            return torch.add(base, low, out=out)
        if self.packed is not None:
            return torch.add(self(x), base, out=out)
        return torch.addmm(base, self._in(x), self.weight_t, out=out)

    def accumulate(self, target: Tensor, x: Tensor) -> Tensor:
        """``target += x @ weight^T``."""
        low = self._low(x)
        if low is not None:
            return target.add_(low)
        if self.packed is not None:
            return target.add_(self(x))
        return target.addmm_(self._in(x), self.weight_t)
