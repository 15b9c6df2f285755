"""The optional native kernels: agreement with the pure-PyTorch loops, threads, build and fallback.

Agreement with the plain autograd loop is covered for both backends by the ``fused_backend``
fixture in test_fused_recurrences.py and test_fused_layers.py; here the two fused backends are
compared directly, including the cases the loops there do not reach.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest
import torch

from rnnguard.nn.functional import MASK_BITS, _bernoulli
from rnnguard.nn.fused import native
from rnnguard.nn.fused.indrnn import indrnn_recurrence
from rnnguard.nn.fused.lstm import lstm_recurrence, lstm_recurrence_prescaled
from rnnguard.nn.options import RecurrentOptions

# Skips only where the user switched the kernels off or, off CI, where they cannot be built.
needs_native = pytest.mark.usefixtures("native_kernels")


@pytest.fixture
def fresh_native(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    """Forget the loaded kernels so the next call builds (or fails to) from scratch."""
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setenv("RNNGUARD_CACHE_DIR", str(tmp_path / "cache"))
    yield


def _lstm_inputs(steps=6, batch=5, hid=8, zoneout="mask", seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    leaves = dict(
        pre=r(steps, batch, 4 * hid), h0=r(batch, hid), c0=r(batch, hid),
        w=r(4 * hid, hid) * 0.4, ln=1 + 0.3 * r(4 * hid), cw=1 + 0.3 * r(hid), cb=0.2 * r(hid),
    )  # fmt: skip
    for v in leaves.values():
        v.requires_grad_(True)
    if zoneout == "mask":
        m = (torch.rand(steps, batch, hid, generator=g) < 0.3).float()
    elif zoneout == "pad":  # broadcast over units: the kernels read it with a zero stride
        m = (torch.rand(steps, batch, 1, generator=g) < 0.3).float()
    elif zoneout == "rate":
        m = 0.25
    else:
        m = None
    return leaves, m


def _lstm_run(leaves, m, ln: bool):
    for v in leaves.values():
        v.grad = None
    L = leaves
    hs, c = lstm_recurrence(
        L["pre"], L["h0"], L["c0"], L["w"],
        L["ln"] if ln else None, L["cw"] if ln else None, L["cb"] if ln else None, m, m,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    (hs * torch.randn(hs.shape, generator=gen)).sum().add((c * c).sum()).backward()
    grads = {k: v.grad.clone() for k, v in leaves.items() if v.grad is not None}
    return hs.detach(), c.detach(), grads


@needs_native
@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("zoneout", ["none", "mask", "pad", "rate"])
@pytest.mark.parametrize("hid", [8, 64])  # 64: whole SIMD vectors, not just the remainder loops
def test_native_lstm_equals_pure_pytorch_loop(ln: bool, zoneout: str, hid: int) -> None:
    leaves, m = _lstm_inputs(steps=12, batch=6, hid=hid, zoneout=zoneout)
    hs_n, c_n, g_n = _lstm_run(leaves, m, ln)
    with native.disabled():
        hs_t, c_t, g_t = _lstm_run(leaves, m, ln)
    torch.testing.assert_close(hs_n, hs_t, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(c_n, c_t, atol=2e-6, rtol=1e-5)
    assert g_n.keys() == g_t.keys()
    for k in g_t:
        # Two float32 roundings of the same sums; through LayerNorm they grow with the size.
        scale = max(1.0, g_t[k].abs().max().item())
        torch.testing.assert_close(g_n[k], g_t[k], atol=2e-5 * scale, rtol=1e-4, msg=k)


@pytest.mark.usefixtures("fused_backend")
@pytest.mark.parametrize("ln_hh", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("hid", [6, 32])
def test_input_layernorm_inside_the_recurrence_equals_applying_it_first(
    ln_hh: bool, bias: bool, hid: int
) -> None:
    g = torch.Generator().manual_seed(4)
    steps, batch = 5, 3
    v = torch.randn(steps, batch, 4 * hid, generator=g, requires_grad=True)
    gain = (1 + 0.3 * torch.randn(4 * hid, generator=g)).requires_grad_(True)
    shift = (0.2 * torch.randn(4 * hid, generator=g)).requires_grad_(True) if bias else None
    h0, c0 = torch.randn(batch, hid, generator=g), torch.randn(batch, hid, generator=g)
    w = (0.4 * torch.randn(4 * hid, hid, generator=g)).requires_grad_(True)
    lnh = (1 + 0.3 * torch.randn(4 * hid, generator=g)).requires_grad_(True) if ln_hh else None
    m = (torch.rand(steps, batch, hid, generator=g) < 0.3).float()
    leaves = [t for t in (v, gain, shift, w, lnh) if t is not None]

    def run(fused_ln: bool):
        for t in leaves:
            t.grad = None
        if fused_ln:
            hs, c = lstm_recurrence_prescaled(v, h0, c0, w, lnh, None, None, m, m, gain, shift)
        else:
            pre = torch.nn.functional.layer_norm(v, (4 * hid,), gain, shift, 1e-5)
            hs, c = lstm_recurrence_prescaled(pre, h0, c0, w, lnh, None, None, m, m)
        (hs.sin().sum() + c.sum()).backward()
        return [hs.detach()] + [t.grad.clone() for t in leaves]

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@needs_native
@pytest.mark.parametrize("zoneout", ["mask", "pad", "rate"])
def test_native_lstm_backward_passes_gradcheck_in_float64(zoneout: str, kernel_calls) -> None:
    """Every extra at once: input, recurrent and cell LayerNorms, zoneout of h and c."""
    dt, steps, batch, hid = torch.float64, 4, 3, 3
    g = torch.Generator().manual_seed(6)

    def leaf(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.randn(*shape, generator=g, dtype=dt)).requires_grad_(True)

    v, h0, c0 = leaf(steps, batch, 4 * hid), leaf(batch, hid), leaf(batch, hid)
    w = leaf(4 * hid, hid, scale=0.5)
    ln_in, b_in, ln_hh = (
        leaf(4 * hid, scale=0.3, shift=1.0),
        leaf(4 * hid, scale=0.2),
        leaf(4 * hid, scale=0.3, shift=1.0),
    )
    cw, cb = leaf(hid, scale=0.3, shift=1.0), leaf(hid, scale=0.2)
    _, m = _lstm_inputs(steps=steps, batch=batch, hid=hid, zoneout=zoneout, seed=7)
    m = m.double() if isinstance(m, torch.Tensor) else m

    def fn(*a):
        return lstm_recurrence_prescaled(*a[:4], a[4], a[5], a[6], m, m, a[7], a[8])

    inputs = (v, h0, c0, w, ln_hh, cw, cb, ln_in, b_in)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    assert "rg_lstm_backward_step_f64" in kernel_calls


@needs_native
@pytest.mark.parametrize("act", ["relu", "tanh", "leaky_relu"])
def test_native_indrnn_backward_passes_gradcheck_in_float64(act: str, kernel_calls) -> None:
    dt = torch.float64
    g = torch.Generator().manual_seed(8)
    pre = torch.randn(5, 3, 4, generator=g, dtype=dt).add_(0.3).requires_grad_(True)
    h0 = torch.rand(3, 4, generator=g, dtype=dt).requires_grad_(True)
    u = torch.empty(4, dtype=dt).uniform_(-1, 1, generator=g).requires_grad_(True)
    m = (torch.rand(5, 3, 4, generator=g) < 0.3).double()
    assert torch.autograd.gradcheck(
        lambda *a: indrnn_recurrence(*a, RecurrentOptions(nonlinearity=act), m),
        (pre, h0, u),
        eps=1e-6,
        atol=1e-5,
    )
    assert "rg_indrnn_backward_f64" in kernel_calls


@needs_native
def test_native_zoneout_copies_carried_states_bit_for_bit() -> None:
    leaves, _ = _lstm_inputs(zoneout="none")
    m = torch.ones(6, 5, 8)
    m[0] = 0.0  # step 0 computes; every later step must keep step 0's state exactly
    with torch.no_grad():
        hs, _ = lstm_recurrence(leaves["pre"], leaves["h0"], leaves["c0"], leaves["w"],
                                zoneout=m, zoneout_cell=m)  # fmt: skip
    assert all(torch.equal(hs[t], hs[0]) for t in range(1, 6))


@needs_native
@pytest.mark.parametrize("act", ["relu", "tanh", "leaky_relu"])
@pytest.mark.parametrize("zoneout", ["none", "mask", "pad", "rate"])
@pytest.mark.parametrize("hid", [9, 64])
def test_native_indrnn_equals_pure_pytorch_loop(act: str, zoneout: str, hid: int) -> None:
    g = torch.Generator().manual_seed(2)
    pre = torch.randn(7, 4, hid, generator=g, requires_grad=True)
    h0 = torch.randn(4, hid, generator=g, requires_grad=True)
    u = torch.empty(hid).uniform_(-1.2, 1.2, generator=g).requires_grad_(True)
    _, m = _lstm_inputs(steps=7, batch=4, hid=hid, zoneout=zoneout)

    def run():
        for v in (pre, h0, u):
            v.grad = None
        hs = indrnn_recurrence(pre, h0, u, RecurrentOptions(nonlinearity=act), m)
        hs.pow(2).sum().backward()
        return hs.detach(), pre.grad.clone(), h0.grad.clone(), u.grad.clone()

    got = run()
    with native.disabled():
        want = run()
    for a, b, name in zip(got, want, ("hs", "pre", "h0", "u")):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


@needs_native
def test_native_results_do_not_depend_on_the_thread_count() -> None:
    leaves, m = _lstm_inputs(steps=5, batch=7, hid=16, zoneout="mask")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _lstm_run(leaves, m, True)
        torch.set_num_threads(2)
        two = _lstm_run(leaves, m, True)
    finally:
        torch.set_num_threads(before)
    # Rows never mix inside a kernel, but the matrix products may split their sums by thread
    # and the affine gradients are summed per thread: equal to rounding.
    torch.testing.assert_close(one[0], two[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(one[1], two[1], atol=1e-6, rtol=1e-6)
    for k in one[2]:
        torch.testing.assert_close(one[2][k], two[2][k], atol=1e-5, rtol=1e-5, msg=k)


@needs_native
def test_native_propagates_nan_like_the_pure_loop() -> None:
    leaves, _ = _lstm_inputs(zoneout="none")
    with torch.no_grad():
        pre = leaves["pre"].clone()
        pre[2, 1, 3] = float("nan")
        args = (
            pre,
            leaves["h0"],
            leaves["c0"],
            leaves["w"],
            leaves["ln"],
            leaves["cw"],
            leaves["cb"],
        )
        hs_n, _ = lstm_recurrence(*args)
        with native.disabled():
            hs_t, _ = lstm_recurrence(*args)
    assert torch.isnan(hs_n).any()
    assert torch.equal(torch.isnan(hs_n), torch.isnan(hs_t))


def test_disabled_and_environment_switch_off_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    with native.disabled():
        assert native.library() is None and not native.usable(torch.zeros(1))
    monkeypatch.setenv("RNNGUARD_NATIVE", "0")
    assert native.library() is None


def test_kernels_never_take_other_devices_or_dtypes() -> None:
    assert not native.usable(torch.zeros(2, dtype=torch.bfloat16))
    assert not native.usable(torch.zeros(2, dtype=torch.float16))
    assert not native.usable(torch.zeros(2), torch.zeros(2, dtype=torch.float64))  # mixed
    assert not native.usable(torch.zeros(2, device="meta"))


def test_missing_compiler_warns_once_and_falls_back(
    fresh_native, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang on it
    leaves, m = _lstm_inputs(zoneout="mask")
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        hs, _, _ = _lstm_run(leaves, m, True)
    assert native.library() is None and "no C compiler" in (native.build_error() or "")
    with native.disabled():
        hs_t, _, _ = _lstm_run(leaves, m, True)
    torch.testing.assert_close(hs, hs_t, atol=0, rtol=0)


def test_failing_compiler_reports_its_error_and_falls_back(
    fresh_native, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    fake = tmp_path / "broken-cc"
    fake.write_text("#!/bin/sh\necho 'kernels.c:1: error: simulated failure' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(fake))
    with pytest.warns(RuntimeWarning, match="simulated failure"):
        assert not native.available()
    assert not list((tmp_path / "cache").glob("*.so"))  # no half-written library left behind


@needs_native
def test_build_is_cached_by_content(fresh_native, tmp_path) -> None:
    cc = native._compiler()
    assert cc is not None
    first = native._build(cc)
    stamp = first.stat().st_mtime_ns
    again = native._build(cc)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert first.parent == tmp_path / "cache" and os.access(first, os.R_OK)
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporaries left


# ------------------------------------------------------------------------- the mask sampler


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.83])
def test_masks_are_bernoulli_with_the_rate_rounded_to_16_bits(keep: float) -> None:
    torch.manual_seed(0)
    n = 1 << 21
    mask = _bernoulli((n,), keep, torch.zeros(1))
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    q = round(keep * (1 << MASK_BITS)) / (1 << MASK_BITS)
    sd = (q * (1 - q) / n) ** 0.5
    assert abs(mask.mean().item() - q) < 5 * sd


def test_mask_extremes_and_odd_shapes() -> None:
    like = torch.zeros(1, dtype=torch.float64)
    assert _bernoulli((3, 5, 7), 0.0, like).sum() == 0
    ones = _bernoulli((3, 5, 7), 1.0 - 2.0**-18, like)  # rounds to 1: all kept
    assert ones.dtype == torch.float64 and bool(ones.eq(1).all())
    torch.manual_seed(5)
    a = _bernoulli((3, 5, 7), 0.4, like)
    torch.manual_seed(5)
    b = _bernoulli((3, 5, 7), 0.4, like)
    assert a.shape == (3, 5, 7) and torch.equal(a, b)
    # Neighbouring 16-bit fields of one draw are independent: no pattern along the last axis.
    torch.manual_seed(1)
    cols = _bernoulli((1 << 18, 4), 0.5, torch.zeros(1)).mean(0)
    assert torch.allclose(cols, torch.full((4,), 0.5), atol=0.005)


@needs_native
def test_old_builds_are_pruned(fresh_native, tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(native._KEEP_BUILDS + 3):
        stale = cache / f"rnnguard-kernels-stale{i:02d}.so"
        stale.write_bytes(b"")
        os.utime(stale, (1_000_000 + i, 1_000_000 + i))
    (cache / "unrelated.txt").write_text("kept")
    cc = native._compiler()
    assert cc is not None
    built = native._build(cc)
    left = sorted(p.name for p in cache.glob("rnnguard-kernels-*.so"))
    assert built.name in left and len(left) == native._KEEP_BUILDS
    assert "rnnguard-kernels-stale00.so" not in left  # the oldest go first
    assert (cache / "unrelated.txt").exists()


# ------------------------------------------------------------------- which backend really ran


@pytest.mark.parametrize("kind", ["lstm", "indrnn"])
def test_fused_layers_run_the_backend_the_fixture_names(
    kind: str, fused_backend: str, kernel_calls: list[str]
) -> None:
    from rnnguard.nn import LSTM, IndRNN

    if kind == "lstm":
        m = LSTM(3, 8, layer_norm=True, zoneout=0.2, dropconnect=0.3)
    else:
        m = IndRNN(3, 8, num_layers=2, max_length=10)
    out = m.train()(torch.randn(5, 4, 3))[0]
    out.sum().backward()
    prefix = "rg_lstm_" if kind == "lstm" else "rg_indrnn_"
    used = {c.removeprefix(prefix).split("_")[0] for c in kernel_calls if c.startswith(prefix)}
    if fused_backend == "native":
        assert used == {"forward", "backward"}, kernel_calls
    else:
        assert kernel_calls == []


def test_on_ci_a_failed_build_fails_instead_of_skipping(
    fresh_native, monkeypatch: pytest.MonkeyPatch, tmp_path, native_policy
) -> None:
    fake = tmp_path / "broken-cc"
    fake.write_text("#!/bin/sh\necho 'kernels_impl.h:1: error: simulated' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.delenv("RNNGUARD_NATIVE", raising=False)
    monkeypatch.setenv("CI", "true")
    with (
        pytest.warns(RuntimeWarning, match="simulated"),
        pytest.raises(pytest.fail.Exception, match=r"must build where CI is set.*simulated"),
    ):
        native_policy()
    monkeypatch.setenv("CI", "false")  # a user's machine: the fallback is fine, the test skips
    with pytest.raises(pytest.skip.Exception, match=r"unavailable.*simulated"):
        native_policy()
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("RNNGUARD_NATIVE", "0")  # the user's opt-out skips, even on CI
    with pytest.raises(pytest.skip.Exception, match="switched off"):
        native_policy()
