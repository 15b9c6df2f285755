"""Sequence layers ``RNN``, ``LSTM``, ``GRU`` (drop-in for torch.nn) and ``IndRNN``.

With no extras the layers give torch.nn's numbers (``impl="auto"`` even runs torch's own kernel;
weight norm, ``init`` and ``forget_bias`` only change the weights, so they keep it). The extras that
change the recurrence (layer norm, zoneout, DropConnect, residual, leaky ReLU, and every IndRNN)
run the fused fast path of :mod:`rnnguard.nn.fused`; ``impl="reference"`` runs the plain loop of
:func:`rnnguard.nn.functional.run_direction`, which the fast path is tested against.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnguard.errors import ConfigError, ConfigTypeError, DeviceError, ShapeError
from rnnguard.nn import fused
from rnnguard.nn._base import (
    InitArg,
    RecurrentBase,
    autocast_on,
    check_impl,
    check_state_like,
)
from rnnguard.nn.functional import graph_capture, run_direction, sample_masks, torch_suffix
from rnnguard.nn.registry import register_layer
from rnnguard.utils import checks as _checks

__all__ = ["GRU", "LSTM", "RNN", "IndRNN"]


class _RecurrentLayer(RecurrentBase):
    """Shared forward of the multi-layer, optionally bidirectional sequence layers."""

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        nonlinearity: str | None = None,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        zoneout_cell: float | None = None,
        dropconnect: float = 0.0,
        forget_bias: float | None = None,
        init: InitArg = None,
        weight_norm: bool = False,
        residual: bool = False,
        residual_scale: float | None = None,
        recurrent_max: float | None = None,
        max_length: int | None = None,
        proj_size: int = 0,
        impl: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        self.batch_first = _checks.boolean("batch_first", batch_first)
        self.bidirectional = _checks.boolean("bidirectional", bidirectional)
        self.dropout = _checks.dropout_rate("dropout", dropout)  # [0, 1], as torch.nn
        self.impl = check_impl(impl)
        if self.dropout > 0 and self.num_layers == 1:
            # torch.nn's words, so warning filters written for torch.nn catch ours too.
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                "dropout expects num_layers greater than 1, but got "
                f"dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        self._setup(
            kind, hidden_size, bias, nonlinearity=nonlinearity, layer_norm=layer_norm,
            zoneout=zoneout, zoneout_cell=zoneout_cell, dropconnect=dropconnect,
            forget_bias=forget_bias, init=init, weight_norm=weight_norm, residual=residual,
            residual_scale=residual_scale, recurrent_max=recurrent_max, max_length=max_length,
        )  # fmt: skip
        self.proj_size = _check_proj_size(proj_size, self.hidden_size)
        self._make_params(
            [
                self.layer_input_size(layer)
                for layer in range(self.num_layers)
                for _ in range(self.num_directions)
            ],
            {"device": device, "dtype": dtype},
        )
        self._finish_init()

    # ------------------------------------------------------------------ layout

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Feature size of the output sequence: ``(proj_size or hidden_size) * num_directions``."""
        return (self.proj_size or self.hidden_size) * self.num_directions

    @property
    def residual_between_layers(self) -> bool:
        """Whether each layer's input is added to its output (where the widths match)."""
        return self.options.residual and self.spec.residual_between_layers

    def layer_input_size(self, layer: int) -> int:
        """Input feature size of ``layer``."""
        return self.input_size if layer == 0 else self.output_size

    def _suffix(self, layer: int, direction: int) -> str:
        return torch_suffix(layer, direction)

    def _torch_twin(self) -> nn.Module:
        w = self.weight_ih_l0
        common: dict[str, Any] = {
            "num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
            "dropout": self.dropout, "bidirectional": self.bidirectional,
            "device": w.device, "dtype": w.dtype,
        }  # fmt: skip
        if self.kind == "lstm":
            return nn.LSTM(self.input_size, self.hidden_size, proj_size=self.proj_size, **common)
        if self.kind == "gru":
            return nn.GRU(self.input_size, self.hidden_size, **common)
        return nn.RNN(
            self.input_size, self.hidden_size, nonlinearity=self.options.nonlinearity, **common
        )

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn (weights are gathered on every call)."""

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Per layer and direction, the torch.nn tensors ``[w_ih, w_hh, b_ih, b_hh]`` (as torch.nn)."""
        out = []
        for s in self._suffixes():
            names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
            names += ["weight_hr"] if self.proj_size else []
            out.append([getattr(self, n + s) for n in names if hasattr(self, n + s)])
        return out

    def _uses_torch_kernel(self) -> bool:
        """True when torch's own fused kernel computes exactly what this layer computes."""
        if self.impl != "auto" or self.spec.torch_kernel is None:
            return False
        return not self.options.changes_recurrence

    def _direction_fn(self, device_type: str) -> Callable[..., Any]:
        # "auto" with extras (or IndRNN) takes the fused path; "reference" keeps the plain loop.
        # Under autocast the fused path runs mixed precision for float32 parameters (the ones
        # autocast casts); other parameter dtypes keep the autocast-aware plain loop there.
        if self.impl == "reference" or (
            self.impl == "auto"
            and autocast_on(device_type)
            and next(self.parameters()).dtype != torch.float32
        ):
            return run_direction
        # The fused loops run native/Triton kernels on raw pointers and write into buffers in
        # place; torch.compile and torch.export trace the plain loop instead (pure tensor ops,
        # which the compiler fuses itself), and on "meta" tensors there is nothing to compute.
        if graph_capture() or device_type == "meta":
            return run_direction
        return fused.run_direction

    # ------------------------------------------------------------------ forward

    def forward(self, input: Tensor | PackedSequence, hx: Any = None) -> tuple[Any, Any]:
        """Run the layer; inputs, states and return values exactly as the torch.nn class."""
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            raise ConfigTypeError(
                f"input must be a Tensor or PackedSequence, got {type(input).__name__}"
            )
        if input.dim() not in (2, 3):  # torch.nn: ValueError
            raise ConfigError(
                f"input must be 3-D (batched) or 2-D (unbatched), got a {input.dim()}-D tensor "
                f"of shape {tuple(input.shape)}"
            )
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(0 if self.batch_first else 1)
        if self.batch_first:
            x = x.transpose(0, 1)
        self._check_features(x)
        if x.shape[0] == 0:
            raise ShapeError(
                "input must have at least one time step, got sequence length 0 "
                f"(input shape {tuple(input.shape)})"
            )
        h0, c0 = self._check_hx(hx, x.shape[1], batched, x)
        self._check_not_tracing()
        if self._uses_torch_kernel():
            out, hn, cn = self._torch_kernel(x, h0, c0, None)
        else:
            out, hn, cn = self._reference(x, h0, c0, None)
        if self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
            hn = hn.squeeze(1)
            cn = cn.squeeze(1) if cn is not None else None
        return out, ((hn, cn) if self.spec.has_cell else hn)

    def _forward_packed(self, packed: PackedSequence, hx: Any) -> tuple[PackedSequence, Any]:
        data, batch_sizes, sorted_idx, unsorted_idx = packed
        if data.dim() != 2:
            raise ConfigError(f"input.data of a PackedSequence must be 2-D, got {data.dim()}-D")
        self._check_features(data)
        batch = int(batch_sizes[0])
        h0, c0 = self._check_hx(hx, batch, True, data)
        self._check_not_tracing()
        if self._uses_torch_kernel():
            if sorted_idx is not None:  # torch's kernel wants the states in sorted order
                h0 = h0.index_select(1, sorted_idx)
                c0 = c0.index_select(1, sorted_idx) if c0 is not None else None
            out_data, hn, cn = self._torch_kernel(data, h0, c0, batch_sizes)
            if unsorted_idx is not None:
                hn = hn.index_select(1, unsorted_idx)
                cn = cn.index_select(1, unsorted_idx) if cn is not None else None
        else:
            padded, lengths = pad_packed_sequence(packed)  # (T, B, I) in the caller's batch order
            out, hn, cn = self._reference(padded, h0, c0, lengths)
            order = sorted_idx if sorted_idx is not None else torch.arange(batch, device=out.device)
            repacked = pack_padded_sequence(
                out.index_select(1, order),
                lengths.index_select(0, order.cpu()),
                enforce_sorted=True,
            )
            out_data = repacked.data
        out_packed = PackedSequence(out_data, batch_sizes, sorted_idx, unsorted_idx)
        return out_packed, ((hn, cn) if self.spec.has_cell else hn)

    def _check_not_tracing(self) -> None:
        # torch.jit.trace records tensor ops only: the fused loops' native kernels and the
        # Python time loop (unrolled for one length) would be recorded wrong, silently.
        if torch.jit.is_tracing() and not self._uses_torch_kernel():
            raise RuntimeError(
                f"{type(self).__name__} with extras (or impl={self.impl!r}) cannot be traced "
                "with torch.jit.trace: its time loop is not a fixed graph of tensor ops. Use "
                "torch.compile or torch.export instead."
            )

    def _check_features(self, x: Tensor) -> None:
        w = next(self.parameters())
        if x.device != w.device:
            raise DeviceError(
                f"input must be on the layer's device ({w.device}), got {x.device}; move one "
                f"with input.to({str(w.device)!r}) or layer.to({str(x.device)!r})"
            )
        if x.dtype != w.dtype and not autocast_on(x.device.type):  # torch.nn: ValueError
            raise ConfigError(
                f"input dtype must match the layer's parameters ({w.dtype}), got {x.dtype}; "
                f"convert with input.to({w.dtype}) or layer.to({x.dtype})"
            )
        if x.shape[-1] != self.input_size:
            raise ShapeError(
                f"input feature size must equal input_size={self.input_size}, got {x.shape[-1]} "
                f"(input shape {tuple(x.shape)})"
            )

    def _check_hx(
        self, hx: Any, batch: int, batched: bool, like: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        n = self.num_layers * self.num_directions
        h_size = self.proj_size or self.hidden_size
        is_lstm = self.spec.has_cell
        if hx is None:
            z = torch.zeros(n, batch, h_size, device=like.device, dtype=like.dtype)
            c = torch.zeros(n, batch, self.hidden_size, device=like.device, dtype=like.dtype)
            return z, (c if is_lstm else None)
        if is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ConfigTypeError(
                    f"hx must be a tuple (h_0, c_0) for LSTM, got {type(hx).__name__}"
                )
            parts = [("h_0", hx[0], h_size), ("c_0", hx[1], self.hidden_size)]
        else:
            parts = [("hx", hx, h_size)]
        out = []
        for name, t, width in parts:
            shape = (n, batch, width) if batched else (n, width)
            what = "proj_size" if width != self.hidden_size else "hidden_size"
            if not isinstance(t, Tensor):
                raise ConfigTypeError(f"{name} must be a Tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise ShapeError(
                    f"{name} must have shape {shape} (num_layers*num_directions, "
                    f"{'batch, ' if batched else ''}{what}), got {tuple(t.shape)}"
                )
            check_state_like(name, t, like)
            out.append(t if batched else t.unsqueeze(1))
        return out[0], (out[1] if is_lstm else None)

    def _torch_kernel(
        self, x: Tensor, h0: Tensor, c0: Tensor | None, batch_sizes: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        weights = [w for ws in self.all_weights for w in ws]
        assert self.spec.torch_kernel is not None  # see _uses_torch_kernel
        fn = self.spec.torch_kernel(self.options.nonlinearity)
        hx: Any = (h0, c0) if c0 is not None else h0
        common = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        if batch_sizes is None:
            res = fn(x, hx, weights, *common, False)  # type: ignore[operator]
        else:
            res = fn(x, batch_sizes, hx, weights, *common)  # type: ignore[operator]
        return res[0], res[1], (res[2] if c0 is not None else None)

    def _reference(
        self, x: Tensor, h0: Tensor, c0: Tensor | None, lengths: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        steps, batch = x.shape[0], x.shape[1]
        spec, options, training = self.spec, self.options, self.training
        masks = None
        if training:
            masks = sample_masks(
                spec, options, num_layers=self.num_layers, num_directions=self.num_directions,
                hidden_size=self.hidden_size, steps=steps, batch=batch, like=x,
                dropout=self.dropout, training=True, proj_size=self.proj_size,
            )  # fmt: skip
        run = self._direction_fn(x.device.type)
        if lengths is not None:
            lengths = lengths.to(x.device)
        layer_in = x
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                i = layer * self.num_directions + d
                s0 = spec.state(*((h0[i], c0[i]) if c0 is not None else (h0[i],)))
                dm = masks[layer].directions[d] if masks is not None else None
                params = self.layer_params(layer, d)
                o, s = run(spec, layer_in, s0, params, dm, options, training, lengths, d == 1)
                outs.append(o)
                hs.append(s[0])
                if c0 is not None:
                    cs.append(s[1])
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
            if self.residual_between_layers and out.shape[-1] == layer_in.shape[-1]:
                out = out + layer_in
            drop = masks[layer].dropout if masks is not None else None
            if drop is not None:
                out = out * drop
            layer_in = out
        return layer_in, torch.stack(hs), (torch.stack(cs) if c0 is not None else None)

    def extra_repr(self) -> str:
        s = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            s.append(f"num_layers={self.num_layers}")
        if not self.bias:
            s.append("bias=False")
        if self.batch_first:
            s.append("batch_first=True")
        if self.dropout:
            s.append(f"dropout={self.dropout}")
        if self.bidirectional:
            s.append("bidirectional=True")
        if self.proj_size:
            s.append(f"proj_size={self.proj_size}")
        if self.options.nonlinearity != self.spec.default_nonlinearity:
            s.append(f"nonlinearity={self.options.nonlinearity!r}")
        if self.impl != "auto":
            s.append(f"impl={self.impl!r}")
        return ", ".join(s + self._extra_options())


def _check_proj_size(proj_size: Any, hidden_size: int) -> int:
    """torch.nn's rules: an int, 0 (no projection) or in [1, hidden_size)."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, int):
        raise ConfigTypeError(
            f"proj_size must be an int, got {type(proj_size).__name__} {proj_size!r}"
        )
    if proj_size < 0:
        raise ConfigError(
            f"proj_size should be a positive integer or zero to disable projections, "
            f"got {proj_size}"
        )
    if proj_size >= hidden_size:
        raise ConfigError(
            f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} and "
            f"hidden_size={hidden_size}"
        )
    return proj_size


def _no_proj_size(proj_size: Any) -> None:
    # torch.nn raises for any proj_size given to RNN/GRU, zero included.
    if proj_size is not None:
        raise ConfigError(
            f"proj_size argument is only supported for LSTM, not RNN or GRU, got proj_size={proj_size}"
        )


@register_layer(
    "lstm",
    description="LSTM, drop-in for torch.nn.LSTM; extras: layer_norm, zoneout, dropconnect, forget_bias, init, weight_norm",
)
class LSTM(_RecurrentLayer):
    """Drop-in ``torch.nn.LSTM`` with keyword-only stabilising extras.

    Example::

        lstm = LSTM(16, 64, num_layers=2, batch_first=True, layer_norm=True, forget_bias=1.0)
        out, (h_n, c_n) = lstm(torch.randn(8, 100, 16))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        *,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        zoneout_cell: float | None = None,
        dropconnect: float = 0.0,
        forget_bias: float | None = None,
        init: InitArg = None,
        weight_norm: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__(
            "lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            layer_norm=layer_norm, zoneout=zoneout, zoneout_cell=zoneout_cell,
            dropconnect=dropconnect, forget_bias=forget_bias, init=init, weight_norm=weight_norm,
            proj_size=proj_size, impl=impl, device=device, dtype=dtype,
        )  # fmt: skip
        self.mode = "LSTM"


@register_layer(
    "gru",
    description="GRU, drop-in for torch.nn.GRU; extras: layer_norm, zoneout, dropconnect, forget_bias (update gate), init, weight_norm",
)
class GRU(_RecurrentLayer):
    """Drop-in ``torch.nn.GRU`` with keyword-only extras; ``forget_bias`` sets the update-gate bias."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        dropconnect: float = 0.0,
        forget_bias: float | None = None,
        init: InitArg = None,
        weight_norm: bool = False,
        impl: str = "auto",
        proj_size: Any = None,
    ) -> None:
        _no_proj_size(proj_size)
        super().__init__(
            "gru", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            layer_norm=layer_norm, zoneout=zoneout, dropconnect=dropconnect,
            forget_bias=forget_bias, init=init, weight_norm=weight_norm, impl=impl,
            device=device, dtype=dtype,
        )  # fmt: skip
        self.mode = "GRU"


@register_layer(
    "rnn",
    description="Elman RNN, drop-in for torch.nn.RNN; extras: residual (residual_scale), leaky_relu, layer_norm, zoneout, dropconnect, init, weight_norm",
)
class RNN(_RecurrentLayer):
    """Drop-in ``torch.nn.RNN``; ``residual=True`` gives h_t = h_{t-1} + act(...).

    ``residual_scale=s`` makes that residual convex, h_t = (1 - s) h_{t-1} + s act(...), so the
    state stays bounded however long the stream it is carried over.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        dropconnect: float = 0.0,
        init: InitArg = None,
        weight_norm: bool = False,
        residual: bool = False,
        residual_scale: float | None = None,
        impl: str = "auto",
        proj_size: Any = None,
    ) -> None:
        _no_proj_size(proj_size)
        super().__init__(
            "rnn", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            nonlinearity=nonlinearity, layer_norm=layer_norm, zoneout=zoneout,
            dropconnect=dropconnect, init=init, weight_norm=weight_norm, residual=residual,
            residual_scale=residual_scale, impl=impl, device=device, dtype=dtype,
        )  # fmt: skip
        self.mode = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}.get(
            self.nonlinearity, "RNN_LEAKY_RELU"
        )


@register_layer(
    "indrnn",
    description="IndRNN (Li et al. 2018): per-unit recurrence, |u| bounded via max_length/recurrent_max",
)
class IndRNN(_RecurrentLayer):
    """Independently recurrent network: h_t = act(W x_t + u * h_{t-1} + b), per-unit vector ``u``.

    ``max_length=T`` bounds |u| <= 2**(1/T) (or give ``recurrent_max``); the layer keeps the bound
    after every optimizer step by itself. ``residual=True`` adds each layer's input to its output
    where the widths match.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        nonlinearity: str = "relu",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        layer_norm: bool = False,
        residual: bool = False,
        max_length: int | None = None,
        recurrent_max: float | None = None,
        zoneout: float = 0.0,
        dropconnect: float = 0.0,
        init: InitArg = None,
        weight_norm: bool = False,
        impl: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            "indrnn", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, nonlinearity=nonlinearity, layer_norm=layer_norm, zoneout=zoneout,
            dropconnect=dropconnect, init=init, weight_norm=weight_norm, residual=residual,
            recurrent_max=recurrent_max, max_length=max_length, impl=impl, device=device,
            dtype=dtype,
        )  # fmt: skip
        self.mode = "INDRNN"
