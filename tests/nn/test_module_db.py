"""PyTorch's own RNN module cases, run by generic tests over torch.nn and our layers.

The cases follow the ``ModuleInfo`` entries for RNN/GRU/LSTM and their cells in torch's
``common_modules`` (constructor arguments, unbatched and packed inputs, error inputs) and the RNN
tests of ``test_nn``; the tests that drive them follow ``test_modules``: forward against a
reference, factory kwargs, dtypes, non-contiguous inputs, state dicts, gradients of every order.
Each case runs on torch.nn itself (which keeps the database honest), on our plain layers (which
must give torch's numbers) and on our layers with each extra, held to torch's API (shapes, errors,
dtypes, devices, state dicts, gradients) but not its numbers. IndRNN, which torch lacks, runs the
RNN cases.
"""

from __future__ import annotations

import copy
import io
import itertools
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

TORCH = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}
OURS = {"RNN": rn.RNN, "GRU": rn.GRU, "LSTM": rn.LSTM, "IndRNN": rn.IndRNN}
TORCH_CELLS = {"RNNCell": nn.RNNCell, "GRUCell": nn.GRUCell, "LSTMCell": nn.LSTMCell}
OUR_CELLS = {"RNNCell": rn.RNNCell, "GRUCell": rn.GRUCell, "LSTMCell": rn.LSTMCell}

#: Our extras, each switched on alone; "plain" is none of them, "torch" is torch.nn itself.
EXTRAS: dict[str, dict[str, Any]] = {
    "plain": {},
    "layer_norm": {"layer_norm": True},
    "zoneout": {"zoneout": 0.3},
    "dropconnect": {"dropconnect": 0.3},
    "forget_bias": {"forget_bias": 1.0},
    "weight_norm": {"weight_norm": True},
}
VARIANTS = ("torch", *EXTRAS)


def applies(family: str, variant: str, ctor: dict[str, Any] | None = None) -> bool:
    """Whether ``variant`` exists for ``family`` (and for this constructor)."""
    if variant == "torch":
        return family in TORCH or family in TORCH_CELLS
    if variant == "forget_bias":
        gated = family in ("LSTM", "GRU", "LSTMCell", "GRUCell")
        return gated and (ctor is None or ctor.get("bias", True))
    return True


def build(family: str, variant: str, /, *args: Any, **kwargs: Any) -> nn.Module:
    """``family(*args, **kwargs)`` from torch.nn (variant "torch") or ours with that extra."""
    if variant == "torch":
        return {**TORCH, **TORCH_CELLS}[family](*args, **kwargs)
    return {**OURS, **OUR_CELLS}[family](*args, **kwargs, **EXTRAS[variant])


# --------------------------------------------------------------------------- the case database


@dataclass(frozen=True)
class Case:
    """A constructor and the shapes of one forward call (``lengths``: packed input)."""

    family: str
    ctor: dict[str, Any] = field(hash=False)
    x: tuple[int, ...]
    hx: tuple[tuple[int, ...], ...] = ()  # one shape (h) or two (h, c); none: hx=None
    lengths: tuple[int, ...] | None = None

    @property
    def id(self) -> str:
        flags = "-".join(f"{k}={v}" for k, v in self.ctor.items() if k not in ("input_size",))
        hx = "-hx" if self.hx else ""
        packed = f"-packed{list(self.lengths)}" if self.lengths else ""
        return f"{self.family}-{flags}-x{list(self.x)}{hx}{packed}"


def _layer_cases(family: str) -> list[Case]:
    """torch's sweep: bias x batch_first x bidirectional (x nonlinearity, x proj_size), 2 layers."""
    cases = []
    extra_axis: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    if family in ("RNN", "IndRNN"):
        extra_axis = (("nonlinearity", ("relu", "tanh")),)
    elif family == "LSTM":
        extra_axis = (("proj_size", (0, 2)),)
    names = ["bias", "batch_first", "bidirectional"] + [n for n, _ in extra_axis]
    values = [(False, True)] * 3 + [v for _, v in extra_axis]
    for combo in itertools.product(*values):
        flags = dict(zip(names, combo))
        dirs = 2 if flags["bidirectional"] else 1
        if family == "LSTM":
            ctor = {"input_size": 2, "hidden_size": 3, "num_layers": 2, **flags}
            h_out = flags["proj_size"] or 3
            cases.append(Case(family, ctor, (2, 2)))
            cases.append(Case(family, ctor, (3, 2), ((2 * dirs, h_out), (2 * dirs, 3))))
        else:
            small = {"input_size": 2, "hidden_size": 2, "num_layers": 2, **flags}
            wide = {**small, "hidden_size": 3}
            cases.append(Case(family, small, (3, 2)))
            cases.append(Case(family, wide, (3, 2), ((2 * dirs, 3),)))
        if not flags["batch_first"]:  # packed input ignores batch_first
            ctor = cases[-1].ctor
            cases.append(Case(family, ctor, (5, 2, 2), lengths=(5, 3)))
            cases.append(Case(family, ctor, (5, 5, 2), lengths=(5, 3, 3, 2, 2)))
    return cases


LAYER_CASES = [c for fam in OURS for c in _layer_cases(fam)]


SLOW = pytest.mark.slow


def _thinned(index: int, variant: str, every: int) -> list[Any]:
    """Mark all but one in ``every`` (case, variant) pairs slow, rotating over the variants.

    The default suite thus runs every case on some variant and every variant on some cases;
    ``-m slow`` runs the full product.
    """
    return [] if (index + VARIANTS.index(variant)) % every == 0 else [SLOW]


def _params(cases: list[Case], every: int = 1) -> list[Any]:
    return [
        pytest.param(
            case, variant, id=f"{case.id}-{variant}",
            marks=_thinned(i, variant, every),
        )
        for i, case in enumerate(cases)
        for variant in VARIANTS
        if applies(case.family, variant, case.ctor)
    ]  # fmt: skip


def make_inputs(case: Case, dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
    """The forward arguments of ``case``: input (or packed input) and, when given, hx."""
    gen = torch.Generator().manual_seed(7)

    def rand(shape: tuple[int, ...]) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype)

    x: Any = rand(case.x)
    if case.lengths is not None:
        x = pack_padded_sequence(x, torch.tensor(case.lengths))
    if not case.hx:
        return (x,)
    states = tuple(rand(s) for s in case.hx)
    return (x, states if case.family == "LSTM" else states[0])


def expected_shapes(case: Case) -> list[tuple[int, ...]]:
    """Output, h_n (and c_n) shapes as torch.nn documents them for ``case``."""
    c = case.ctor
    dirs = 2 if c.get("bidirectional") else 1
    hid, proj = c["hidden_size"], c.get("proj_size", 0)
    h_out = proj or hid
    layers = c.get("num_layers", 1)
    if case.lengths is not None:
        out: tuple[int, ...] = (sum(case.lengths), dirs * h_out)
        batch: tuple[int, ...] = (len(case.lengths),)
    else:
        out = (*case.x[:-1], dirs * h_out)
        batch = () if len(case.x) == 2 else (case.x[0 if c.get("batch_first") else 1],)
    shapes = [out, (layers * dirs, *batch, h_out)]
    if case.family == "LSTM":
        shapes.append((layers * dirs, *batch, hid))
    return shapes


def flat(result: Any) -> list[Tensor]:
    """``output, h_n`` or ``output, (h_n, c_n)`` as a list of tensors (packed: its data)."""
    out, state = result
    out = out.data if isinstance(out, PackedSequence) else out
    return [out, *(state if isinstance(state, tuple) else (state,))]


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize(("case", "variant"), _params(LAYER_CASES, every=8))
def test_forward_shapes_and_reference(case: Case, variant: str) -> None:
    """Shapes as torch's in train and eval; unbatched/packed runs equal one sequence at a time."""
    torch.manual_seed(0)
    m = build(case.family, variant, **case.ctor)
    args = make_inputs(case)
    for training in (True, False):
        got = flat(m.train(training)(*args))
        assert [tuple(t.shape) for t in got] == expected_shapes(case)
        assert all(t.dtype == torch.float32 for t in got)
    # The reference checks in float64: LayerNorm of tiny widths amplifies float32 rounding.
    m.double()
    args = make_inputs(case, torch.float64)
    if case.lengths is not None:
        _check_packed_against_single_runs(m, case, args)
    else:
        _check_unbatched_against_batch_of_one(m, case, args)


def _check_unbatched_against_batch_of_one(m: nn.Module, case: Case, args: tuple[Any, ...]) -> None:
    # torch's reference for unbatched input: add a batch dim of one, run, remove it.
    batch_dim = 0 if case.ctor.get("batch_first") else 1
    x = args[0].unsqueeze(batch_dim)
    hx = None
    if len(args) > 1:
        hx = (
            tuple(s.unsqueeze(1) for s in args[1])
            if case.family == "LSTM"
            else args[1].unsqueeze(1)
        )
    ref = flat(m(x, hx))
    ref = [ref[0].squeeze(batch_dim), *(s.squeeze(1) for s in ref[1:])]
    for got, want in zip(flat(m(*args)), ref):
        torch.testing.assert_close(got, want)


def _check_packed_against_single_runs(m: nn.Module, case: Case, args: tuple[Any, ...]) -> None:
    # Each sequence of a packed batch must come out as if it had run alone, over its own length.
    packed = args[0]
    out, lengths = pad_packed_sequence(m(*args)[0])
    states = flat(m(*args))[1:]
    padded, _ = pad_packed_sequence(packed)
    batch_first = bool(case.ctor.get("batch_first"))
    for i, n in enumerate(lengths.tolist()):
        xi = padded[:n, i]
        hx = None
        if len(args) > 1:
            parts = tuple(s[:, i] for s in (args[1] if case.family == "LSTM" else (args[1],)))
            hx = parts if case.family == "LSTM" else parts[0]
        alone = flat(m(xi.unsqueeze(0 if batch_first else 1), None if hx is None else _batch1(hx)))
        alone_out = alone[0].squeeze(0 if batch_first else 1)
        torch.testing.assert_close(out[:n, i], alone_out)
        torch.testing.assert_close(out[n:, i], torch.zeros_like(out[n:, i]))
        for s, a in zip(states, alone[1:]):
            torch.testing.assert_close(s[:, i], a[:, 0])


def _batch1(hx: Any) -> Any:
    return tuple(s.unsqueeze(1) for s in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)


PLAIN_CASES = [c for c in LAYER_CASES if c.family in TORCH]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            id=c.id,
            marks=[] if i % 3 == 0 else [SLOW],
        )
        for i, c in enumerate(PLAIN_CASES)
    ],
)
def test_plain_layer_gives_torch_numbers(case: Case) -> None:
    """With no extra, our layer loaded with torch's weights returns torch's outputs and grads."""
    theirs = build(case.family, "torch", **case.ctor)
    ours = build(case.family, "plain", **case.ctor)
    ours.load_state_dict(theirs.state_dict())
    results = []
    for m in (theirs, ours):
        args = make_inputs(case, torch.float64)
        m.double()
        data = args[0].data if isinstance(args[0], PackedSequence) else args[0]
        data.requires_grad_()
        outs = flat(m(*args))
        sum(o.sum() * (k + 1) for k, o in enumerate(outs)).backward()
        results.append([*outs, data.grad, *(p.grad for p in m.parameters())])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ErrorCase:
    """A mistake and the exception type torch raises for it."""

    name: str
    families: tuple[str, ...]
    ctor: tuple[Any, ...] | dict[str, Any]
    expected: type[Exception]
    forward: Callable[[], tuple[Any, ...]] | None = None


LAYERS = ("RNN", "GRU", "LSTM")


def _t(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(shape, dtype=dtype)


ERROR_CASES = [
    ErrorCase("hidden_size=0", LAYERS, (10, 0, 1), ValueError),
    ErrorCase("num_layers=0", LAYERS, (10, 10, 0), ValueError),
    ErrorCase("bias=0", LAYERS, {"input_size": 3, "hidden_size": 5, "bias": 0}, TypeError),
    ErrorCase("bias=1", LAYERS, {"input_size": 3, "hidden_size": 5, "bias": 1}, TypeError),
    ErrorCase("bias=str", LAYERS, {"input_size": 3, "hidden_size": 5, "bias": "True"}, TypeError),
    ErrorCase("batch_first=0", LAYERS, {"input_size": 3, "hidden_size": 5, "batch_first": 0}, TypeError),
    ErrorCase("batch_first=1", LAYERS, {"input_size": 3, "hidden_size": 5, "batch_first": 1}, TypeError),
    ErrorCase("batch_first=str", LAYERS, {"input_size": 3, "hidden_size": 5, "batch_first": "False"}, TypeError),
    ErrorCase("input_size=float", LAYERS, (3.0, 5), TypeError),
    ErrorCase("input_size=str", LAYERS, ("10", 5), TypeError),
    ErrorCase("input_size=0", LAYERS, (0, 5), ValueError),
    ErrorCase("input_size=-1", LAYERS, (-1, 5), ValueError),
    ErrorCase("hidden_size=float", LAYERS, (3, 5.0), TypeError),
    ErrorCase("dropout=1.5", LAYERS, {"input_size": 3, "hidden_size": 5, "dropout": 1.5}, ValueError),
    ErrorCase("nonlinearity", ("RNN",), {"input_size": 3, "hidden_size": 5, "nonlinearity": "sig"}, ValueError),
    ErrorCase("proj_size<0", ("LSTM",), {"input_size": 3, "hidden_size": 5, "proj_size": -1}, ValueError),
    ErrorCase("proj_size>=hidden", ("LSTM",), {"input_size": 3, "hidden_size": 5, "proj_size": 5}, ValueError),
    ErrorCase("proj_size on GRU/RNN", ("GRU", "RNN"), {"input_size": 3, "hidden_size": 5, "proj_size": 2}, ValueError),
    # forward mistakes (the layer is (2, 3))
    ErrorCase("input dtype", LAYERS, (2, 3), ValueError, lambda: (_t(3, 4, 2, dtype=torch.float64),)),
    ErrorCase("input features", LAYERS, (2, 3), RuntimeError, lambda: (_t(3, 4, 5),)),
    ErrorCase("input 4-D", LAYERS, (2, 3), ValueError, lambda: (_t(3, 4, 2, 1),)),
    ErrorCase("sequence length 0", LAYERS, (2, 3), RuntimeError, lambda: (_t(0, 4, 2),)),
    ErrorCase("hx hidden size", ("RNN", "GRU"), (2, 3), RuntimeError, lambda: (_t(3, 4, 2), _t(1, 4, 5))),
    ErrorCase("hx batch", ("RNN", "GRU"), (2, 3), RuntimeError, lambda: (_t(3, 4, 2), _t(1, 2, 3))),
    ErrorCase("hx layers", ("RNN", "GRU"), (2, 3), RuntimeError, lambda: (_t(3, 4, 2), _t(2, 4, 3))),
    ErrorCase("unbatched input, batched hx", ("RNN", "GRU"), (2, 3), RuntimeError, lambda: (_t(3, 2), _t(1, 4, 3))),
    ErrorCase("c_0 shape", ("LSTM",), (2, 3), RuntimeError, lambda: (_t(3, 4, 2), (_t(1, 4, 3), _t(1, 4, 5)))),
    ErrorCase("h_0 shape", ("LSTM",), (2, 3), RuntimeError, lambda: (_t(3, 4, 2), (_t(1, 4, 5), _t(1, 4, 3)))),
    # cells (the cell is (10, 20))
    ErrorCase("cell input size", ("RNNCell", "GRUCell"), (10, 20), RuntimeError, lambda: (_t(3, 11), _t(3, 20))),
    ErrorCase("cell hidden size", ("RNNCell", "GRUCell"), (10, 20), RuntimeError, lambda: (_t(3, 10), _t(3, 21))),
    ErrorCase("cell batch", ("RNNCell", "GRUCell"), (10, 20), RuntimeError, lambda: (_t(3, 10), _t(5, 20))),
    ErrorCase("cell hidden 4-D", ("RNNCell", "GRUCell"), (10, 20), ValueError, lambda: (_t(3, 10), _t(3, 1, 1, 20))),
    ErrorCase("lstm cell input size", ("LSTMCell",), (10, 20), RuntimeError, lambda: (_t(3, 11), (_t(3, 20), _t(3, 20)))),
    ErrorCase("lstm cell hidden size", ("LSTMCell",), (10, 20), RuntimeError, lambda: (_t(3, 10), (_t(3, 21), _t(3, 21)))),
    ErrorCase("lstm cell batch", ("LSTMCell",), (10, 20), RuntimeError, lambda: (_t(3, 10), (_t(5, 20), _t(5, 20)))),
    ErrorCase("lstm cell hidden 4-D", ("LSTMCell",), (10, 20), ValueError, lambda: (_t(3, 10), (_t(3, 1, 1, 20), _t(3, 1, 1, 20)))),
]  # fmt: skip


def _error_params() -> list[Any]:
    out = []
    for i, case in enumerate(ERROR_CASES):
        for family in case.families:
            for variant in VARIANTS:
                if not applies(family, variant):
                    continue
                marks = []
                # Checks are shared by all variants: torch and plain always, extras in turn.
                if variant not in ("torch", "plain"):
                    marks += _thinned(i, variant, 4)
                out.append(
                    pytest.param(
                        case, family, variant, id=f"{case.name}-{family}-{variant}", marks=marks
                    )
                )
    return out


@pytest.mark.parametrize(("case", "family", "variant"), _error_params())
def test_errors_have_torch_types(case: ErrorCase, family: str, variant: str) -> None:
    args, kwargs = (case.ctor, {}) if isinstance(case.ctor, tuple) else ((), case.ctor)
    if case.forward is None:
        with pytest.raises(case.expected):
            build(family, variant, *args, **kwargs)
        return
    m = build(family, variant, *args, **kwargs)
    with pytest.raises(case.expected):
        m(*case.forward())


# --------------------------------------------------------------------------- cells

CELL_CASES = [
    ("RNNCell", (5, 10), {}),
    ("RNNCell", (5, 10), {"bias": True}),
    ("RNNCell", (5, 10), {"bias": True, "nonlinearity": "relu"}),
    ("GRUCell", (5, 10), {}),
    ("GRUCell", (5, 10), {"bias": True}),
    ("LSTMCell", (5, 10), {}),
    ("LSTMCell", (5, 10), {"bias": True}),
    ("GRUCell", (10, 0), {}),  # torch accepts a zero-width cell
]


def _cell_params() -> list[Any]:
    return [
        pytest.param(
            family, args, kwargs, variant,
            id=f"{family}{list(args)}{kwargs or ''}-{variant}",
        )
        for family, args, kwargs in CELL_CASES
        for variant in VARIANTS
        if applies(family, variant)
    ]  # fmt: skip


@pytest.mark.parametrize(("family", "args", "kwargs", "variant"), _cell_params())
def test_cell_call_convention(
    family: str, args: tuple[int, int], kwargs: dict[str, Any], variant: str
) -> None:
    """``h = cell(x, h)`` / ``h, c = cell(x, (h, c))``, batched and unbatched, as torch's."""
    cell = build(family, variant, *args, **kwargs).eval()
    inp, hid = args
    for batch in ((), (3,)):
        x, h = torch.randn(*batch, inp), torch.randn(*batch, hid)
        out = cell(x, (h, h.clone()) if family == "LSTMCell" else h)
        parts = out if family == "LSTMCell" else (out,)
        assert isinstance(out, tuple if family == "LSTMCell" else Tensor)
        assert [tuple(p.shape) for p in parts] == [(*batch, hid)] * len(parts)
        if batch:  # unbatched equals a batch of one (torch's reference for cells)
            first = cell(x[0], (h[0], h[0].clone()) if family == "LSTMCell" else h[0])
            for a, b in zip(first if family == "LSTMCell" else (first,), parts):
                torch.testing.assert_close(a, b[0])


# --------------------------------------------------------------------------- generic tests on one case


def _batched(case: Case, batch: int, steps: int) -> Case:
    """``case`` (unbatched, batch-first) with a batch dimension: input and states."""
    hx = tuple((s[0], batch, s[1]) for s in case.hx)
    return Case(case.family, case.ctor, (batch, steps, case.x[-1]), hx)


#: A representative case per family: 2 layers, bidirectional, batch-first, given states, batched.
CORE = {
    fam: _batched(
        next(
            c for c in LAYER_CASES
            if c.family == fam and c.hx and c.ctor["bias"] and c.ctor["bidirectional"]
            and c.ctor["batch_first"] and not c.ctor.get("proj_size")
            and c.ctor.get("nonlinearity", "tanh") == "tanh"
        ),
        batch=2, steps=3,
    )
    for fam in OURS
}  # fmt: skip

CORE_PARAMS = [
    pytest.param(fam, variant, id=f"{fam}-{variant}")
    for fam in OURS
    for variant in VARIANTS
    if applies(fam, variant)
]


def _run(m: nn.Module, case: Case, args: tuple[Any, ...], seed: int = 0) -> list[Tensor]:
    torch.manual_seed(seed)  # the same zoneout / DropConnect masks on every run
    return flat(m(*args))


@pytest.mark.parametrize(("family", "variant"), CORE_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factory_kwargs_and_dtypes(family: str, variant: str, dtype: torch.dtype) -> None:
    """device/dtype reach every parameter; outputs and gradients keep the dtype."""
    case = CORE[family]
    m = build(family, variant, **case.ctor, device="cpu", dtype=dtype)
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in m.parameters())
    meta = build(family, variant, **case.ctor, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    args = make_inputs(case, dtype)
    outs = _run(m.train(), case, args)
    assert all(o.dtype == dtype for o in outs)
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None and p.grad.dtype == dtype for p in m.parameters())


@pytest.mark.parametrize(("family", "variant"), CORE_PARAMS)
def test_non_contiguous_inputs(family: str, variant: str) -> None:
    """Non-contiguous input and states give the contiguous results and gradients."""
    case = CORE[family]
    m = build(family, variant, **case.ctor).double().train()
    x, hx = make_inputs(case, torch.float64)
    states = hx if isinstance(hx, tuple) else (hx,)

    def strided(t: Tensor) -> Tensor:  # same values, every other element of a wider buffer
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]

    results = []
    for make in (lambda t: t.clone(), strided):
        leaves = [make(t).requires_grad_() for t in (x, *states)]
        assert leaves[0].is_contiguous() == (make is not strided)
        hx_in = tuple(leaves[1:]) if family == "LSTM" else leaves[1]
        outs = _run(m, case, (leaves[0], hx_in))
        sum(o.sum() * (k + 1) for k, o in enumerate(outs)).backward()
        results.append([*outs, *(t.grad for t in leaves)])
        m.zero_grad()
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("family", "variant"), CORE_PARAMS)
def test_state_dict_save_load_and_copies(family: str, variant: str) -> None:
    """torch.save / torch.load(weights_only=True) of a state dict, pickle and deepcopy round-trip."""
    case = CORE[family]
    torch.manual_seed(1)
    m = build(family, variant, **case.ctor).eval()
    args = make_inputs(case)
    want = flat(m(*args))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(2)  # different initial weights, overwritten by the load
    fresh = build(family, variant, **case.ctor).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    copies = [fresh, copy.deepcopy(m), pickle.loads(pickle.dumps(m))]
    for other in copies:
        for got, w in zip(flat(other(*args)), want):
            torch.testing.assert_close(got, w, rtol=0, atol=0)
    assert repr(m).split("(")[0].endswith(family)  # torch names weight-normed ones Parametrized*


@pytest.mark.parametrize(("family", "variant"), [p for p in CORE_PARAMS if p.values[0] in TORCH])
def test_loads_torch_state_dict(family: str, variant: str) -> None:
    """A torch.nn state dict loads; only our extra parameters (layer norm gains) are missing."""
    case = CORE[family]
    theirs = build(family, "torch", **case.ctor)
    ours = build(family, variant, **case.ctor)
    result = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("layer_norm_") for k in result.missing_keys)
    assert bool(result.missing_keys) == (variant == "layer_norm")
    if variant in ("plain", "forget_bias", "weight_norm"):  # the recurrence is torch's
        args = make_inputs(case)
        for got, want in zip(flat(ours.eval()(*args)), flat(theirs.eval()(*args))):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("family", "variant"), CORE_PARAMS)
def test_train_and_eval_modes(family: str, variant: str) -> None:
    """Zoneout and DropConnect change training-mode outputs only; the rest ignore the mode."""
    case = CORE[family]
    m = build(family, variant, **case.ctor)
    args = make_inputs(case)
    train, evaluate = _run(m.train(), case, args), _run(m.eval(), case, args)
    differs = any(not torch.equal(a, b) for a, b in zip(train, evaluate))
    assert differs == (variant in ("zoneout", "dropconnect"))


@pytest.mark.parametrize(("family", "variant"), CORE_PARAMS)
def test_zero_batch(family: str, variant: str) -> None:
    """A batch of zero sequences gives empty outputs of the right shapes, as torch's."""
    case = CORE[family]
    m = build(family, variant, **case.ctor).train()
    x = torch.randn(0, 3, 2)  # batch_first
    outs = flat(m(x))
    dirs, hid = 2, case.ctor["hidden_size"]
    assert [tuple(o.shape) for o in outs] == [(0, 3, dirs * hid)] + [(4, 0, hid)] * (len(outs) - 1)


# --------------------------------------------------------------------------- gradients


def _grad_case(
    family: str, variant: str, training: bool
) -> tuple[Callable[..., Any], tuple[Tensor, ...]]:
    """A float64 function of (input, hx..., parameters...) for gradcheck, with fixed masks."""
    from torch.func import functional_call

    case = CORE[family]
    case = Case(family, case.ctor, (2, 2, case.x[-1]), case.hx)  # 2 steps: cheap gradgradcheck
    m = build(family, variant, **case.ctor).double().train(training)
    if getattr(m, "recurrent_max", None) is not None:
        rn.init.indrnn_(m, -0.5, 0.5, input_init=False)  # keep away from the clamp's kink
    x, hx = make_inputs(case, torch.float64)
    states = hx if isinstance(hx, tuple) else (hx,)
    names, values = zip(*[(n, p.detach().clone()) for n, p in m.named_parameters()])

    def fn(x: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        st, ps = rest[: len(states)], rest[len(states) :]
        hx_in = tuple(st) if family == "LSTM" else st[0]
        torch.manual_seed(1234)
        return tuple(flat(functional_call(m, dict(zip(names, ps)), (x, hx_in))))

    inputs = tuple(t.requires_grad_() for t in (x, *states, *values))
    return fn, inputs


# Gradient checks cost seconds each: torch.nn and one extra per family by default (the fused
# paths' own gradient tests cover every extra), the full product under -m slow.
GRAD_PARAMS = [
    pytest.param(
        *p.values, id=p.id,
        marks=[] if p.values[1] == "torch" else _thinned(list(OURS).index(p.values[0]), p.values[1], 4),
    )
    for p in CORE_PARAMS
]  # fmt: skip
# Second derivatives of whole two-layer stacks take seconds each: all under -m slow (the fused
# paths' double backward runs by default in test_double_backward, every extra at once).
GRADGRAD_PARAMS = [pytest.param(*p.values, id=p.id, marks=[SLOW]) for p in CORE_PARAMS]


@pytest.mark.parametrize(("family", "variant"), GRAD_PARAMS)
def test_gradcheck(family: str, variant: str) -> None:
    """First derivatives of outputs and states, float64, in training mode."""
    fn, inputs = _grad_case(family, variant, training=True)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize(("family", "variant"), GRADGRAD_PARAMS)
def test_gradgradcheck(family: str, variant: str) -> None:
    """Second derivatives (a gradient penalty's), float64, in training mode."""
    fn, inputs = _grad_case(family, variant, training=True)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)
