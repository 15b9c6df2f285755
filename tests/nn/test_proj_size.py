"""LSTM ``proj_size``: torch.nn's semantics, names and errors, on every path and with every extra."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

EXTRAS = {
    "layer_norm": {"layer_norm": True},
    "zoneout": {"zoneout": 0.3, "zoneout_cell": 0.2},
    "dropconnect": {"dropconnect": 0.3},
    "weight_norm": {"weight_norm": True},
    "init+forget_bias": {"init": "safe", "forget_bias": 1.0},
    "all": {"layer_norm": True, "zoneout": 0.3, "dropconnect": 0.3, "weight_norm": True},
}


def _pair(bidirectional: bool, **kw):  # type: ignore[no-untyped-def]
    ref = nn.LSTM(3, 6, 2, proj_size=4, bidirectional=bidirectional)
    ours = rn.LSTM(3, 6, 2, proj_size=4, bidirectional=bidirectional, **kw)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


@pytest.mark.parametrize("bidirectional", [False, True])
def test_names_shapes_and_state_dict_match_torch(bidirectional: bool) -> None:
    ours, ref = _pair(bidirectional)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]
    assert "weight_hr_l1_reverse" in ours.state_dict() or not bidirectional
    assert [len(w) for w in ours.all_weights] == [len(w) for w in ref.all_weights]
    assert "proj_size=4" in repr(ours)
    ref.load_state_dict(ours.state_dict())  # and back


@pytest.mark.parametrize("bidirectional", [False, True])
def test_plain_layer_runs_torchs_kernel_with_the_same_numbers(bidirectional: bool) -> None:
    ours, ref = _pair(bidirectional)
    assert ours._uses_torch_kernel()
    x = torch.randn(5, 2, 3)
    h0, c0 = (
        torch.randn(4 if bidirectional else 2, 2, 4),
        torch.randn(4 if bidirectional else 2, 2, 6),
    )
    out, (h, c) = ours(x, (h0, c0))
    out_t, (h_t, c_t) = ref(x, (h0, c0))
    assert out.shape == (5, 2, 8 if bidirectional else 4) and h.shape == h0.shape
    torch.testing.assert_close(out, out_t, rtol=0, atol=0)
    torch.testing.assert_close(h, h_t, rtol=0, atol=0)
    torch.testing.assert_close(c, c_t, rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_every_path_matches_torch_forward_and_backward(
    layer_impl: str, bidirectional: bool
) -> None:
    ours, ref = _pair(bidirectional, impl=layer_impl)
    x = torch.randn(6, 3, 3)
    out, (h, c) = ours(x)
    out_t, (h_t, c_t) = ref(x)
    for a, b in ((out, out_t), (h, h_t), (c, c_t)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    (out.square().sum() + h.sum() + c.sum()).backward()
    (out_t.square().sum() + h_t.sum() + c_t.sum()).backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_fused_matches_reference_with_each_extra_in_training(layer_impl: str, extra: str) -> None:
    kw = EXTRAS[extra]
    ref = rn.LSTM(3, 6, 2, proj_size=2, bidirectional=True, impl="reference", **kw)
    ours = rn.LSTM(3, 6, 2, proj_size=2, bidirectional=True, impl=layer_impl, **kw)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 3)
    results = []
    for m in (ref, ours):
        torch.manual_seed(4)
        out, (h, c) = m.train()(x)
        (out.square().sum() + c.sum()).backward()
        results.append((out, h, c, [p.grad for p in m.parameters()]))
    (o1, h1, c1, g1), (o2, h2, c2, g2) = results
    assert o1.shape == (5, 3, 4) and h1.shape == (4, 3, 2) and c1.shape == (4, 3, 6)
    for a, b in zip((o1, h1, c1, *g1), (o2, h2, c2, *g2)):
        # float32 rounding, relative to the tensor's scale (gradients reach ~30 here)
        torch.testing.assert_close(b, a, atol=1e-4 * max(1.0, a.abs().max().item()), rtol=1e-4)


def test_projection_with_every_extra_passes_gradcheck(layer_impl: str) -> None:
    m = rn.LSTM(
        2, 3, 2, proj_size=2, bidirectional=True, layer_norm=True, zoneout=0.3, zoneout_cell=0.2,
        dropconnect=0.3, impl=layer_impl, dtype=torch.float64,
    )  # fmt: skip
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def f(x, h0, c0, *params):  # type: ignore[no-untyped-def]
        torch.manual_seed(1)  # the same masks on every evaluation
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths)
        out, (h, c) = m(packed, (h0, c0))
        return out.data, h, c

    assert torch.autograd.gradcheck(
        f, (x, h0, c0, *m.parameters()), eps=1e-6, atol=1e-5, fast_mode=True
    )


def test_unbatched_and_packed_input_with_projection() -> None:
    ours, ref = _pair(False)
    x = torch.randn(5, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    lay = rn.LSTM(3, 6, proj_size=4, layer_norm=True)
    assert lay(x)[0].shape == (5, 4)
    assert lay(x)[1][0].shape == (1, 4) and lay(x)[1][1].shape == (1, 6)


def test_proj_size_errors_are_torchs() -> None:
    for bad, err in ((-1, ValueError), (6, ValueError), (7, ValueError), (1.5, TypeError)):
        with pytest.raises(err):
            nn.LSTM(3, 6, proj_size=bad)
        with pytest.raises(err, match="proj_size"):
            rn.LSTM(3, 6, proj_size=bad)
    for cls in (rn.GRU, rn.RNN):
        with pytest.raises(ValueError, match="only supported for LSTM"):
            cls(3, 6, proj_size=2)
        with pytest.raises(ValueError, match="only supported for LSTM"):
            cls(3, 6, proj_size=0)  # torch refuses any proj_size here
    with pytest.raises(ValueError):
        nn.GRU(3, 6, proj_size=0)
    m = rn.LSTM(3, 6, proj_size=4)
    with pytest.raises(RuntimeError, match=r"h_0.*\(1, 2, 4\).*proj_size"):
        m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6)))
