"""The mask sampler's contract, read directly off ``rnnguard.nn.functional``.

What the rate tests through the layers cannot see: which masks are drawn at all (a rate of 0,
eval mode and the all-dropping p = 1 draw no random numbers, so the generator stream, and with it
every later mask, is the same as without that extra), the mask shapes of a projected LSTM, and
exactly when (and with which words) a run without the masks it needs is refused.
"""

from __future__ import annotations

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.nn import functional as fn
from rnnguard.nn.kinds import kind_spec
from rnnguard.nn.options import RecurrentOptions


def _draws_nothing(call) -> None:  # type: ignore[no-untyped-def]
    """``call()`` leaves the default generator where it was."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    call()
    assert torch.equal(torch.get_rng_state(), before)


def _sample(kind: str, options: RecurrentOptions, **kw):  # type: ignore[no-untyped-def]
    args = dict(num_layers=2, num_directions=1, hidden_size=5, steps=3, batch=2,
                like=torch.zeros(1, dtype=torch.float64))  # fmt: skip
    args.update(kw)
    return fn.sample_masks(kind_spec(kind), options, **args)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "indrnn"])
def test_rate_zero_and_eval_draw_no_random_numbers(kind: str) -> None:
    _draws_nothing(lambda: _sample(kind, RecurrentOptions(), dropout=0.0))
    busy = RecurrentOptions(dropconnect=0.3, zoneout=0.2)
    masks = []
    _draws_nothing(lambda: masks.append(_sample(kind, busy, dropout=0.4, training=False)))
    assert all(
        m.dropout is None and all(d == fn.DirectionMasks() for d in m.directions) for m in masks[0]
    )


def test_lstm_without_cell_zoneout_draws_only_the_h_masks() -> None:
    # Drawing a c mask at rate 0 would shift every mask after it in the generator stream.
    torch.manual_seed(1)
    got = _sample("lstm", RecurrentOptions(zoneout=0.3), num_layers=1)
    torch.manual_seed(1)
    h_only = fn._bernoulli((3, 2, 5), 0.3, torch.zeros(1, dtype=torch.float64))
    (direction,) = got[0].directions
    assert direction.zoneout_cell is None and direction.dropconnect is None
    assert torch.equal(direction.zoneout, h_only)


def test_dropout_of_one_drops_everything_and_draws_nothing() -> None:
    masks: list = []
    _draws_nothing(lambda: masks.append(_sample("gru", RecurrentOptions(), dropout=1.0)))
    first, last = masks[0]
    assert first.dropout is not None and first.dropout.shape == (3, 2, 5)
    assert torch.count_nonzero(first.dropout) == 0 and last.dropout is None


def test_dropout_mask_only_between_layers_and_scaled() -> None:
    torch.manual_seed(2)
    masks = _sample("rnn", RecurrentOptions(), num_layers=3, num_directions=2, dropout=0.25)
    assert [m.dropout is None for m in masks] == [False, False, True]
    assert masks[0].dropout.shape == (3, 2, 10)
    assert set(masks[0].dropout.unique().tolist()) <= {0.0, 1.0 / 0.75}


def test_projected_lstm_mask_shapes() -> None:
    torch.manual_seed(3)
    options = RecurrentOptions(dropconnect=0.2, zoneout=0.1, zoneout_cell=0.3)
    masks = _sample("lstm", options, num_layers=2, proj_size=3, dropout=0.5)
    (direction,) = masks[0].directions
    assert direction.dropconnect.shape == (20, 3)  # weight_hh of a projected LSTM: (4H, P)
    assert direction.zoneout.shape == (3, 2, 3)  # h has the projected width
    assert direction.zoneout_cell.shape == (3, 2, 5)  # c keeps the hidden width
    assert masks[0].dropout.shape == (3, 2, 3)
    assert set(direction.dropconnect.unique().tolist()) <= {0.0, 1.0 / 0.8}


def test_all_ones_mask_follows_the_device_and_dtype() -> None:
    like = torch.zeros(1, device="meta", dtype=torch.float64)
    mask = fn._bernoulli((2, 3), 1.0, like)
    assert mask.device.type == "meta" and mask.dtype == torch.float64 and mask.shape == (2, 3)


def test_zoneout_trains_by_default() -> None:
    torch.manual_seed(4)
    prev, new = torch.zeros(2000), torch.ones(2000)
    out = fn.zoneout(prev, new, 0.3)  # no training argument: a sampled mask, not the expectation
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(fn.zoneout(prev, new, 0.3, training=False), torch.full((2000,), 0.7))


_MISSING = [
    ("lstm", {"dropconnect": 0.1}, "dropconnect", "dropconnect > 0 in training needs masks.dropconnect"),
    ("gru", {"zoneout": 0.1}, "zoneout", "zoneout > 0 in training needs masks.zoneout"),
    ("lstm", {"zoneout_cell": 0.1}, "zoneout_cell",
     "zoneout_cell > 0 in training needs masks.zoneout_cell"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "rates", "field", "message"), _MISSING)
def test_check_direction_masks_names_the_missing_mask(
    kind: str, rates: dict, field: str, message: str
) -> None:
    spec, options = kind_spec(kind), RecurrentOptions(**rates)
    with pytest.raises(ConfigError) as err:
        fn.check_direction_masks(spec, None, options, training=True)
    assert str(err.value) == f"run_direction: {message}"
    # Given that mask, or in eval mode, nothing is missing.
    given = fn.DirectionMasks(**{field: torch.ones(1)})
    assert fn.check_direction_masks(spec, given, options, training=True) is given
    assert fn.check_direction_masks(spec, None, options, training=False) == fn.DirectionMasks()


def test_check_direction_masks_needs_nothing_at_rate_zero_or_without_a_cell() -> None:
    assert (
        fn.check_direction_masks(kind_spec("lstm"), None, RecurrentOptions(), training=True)
        == fn.DirectionMasks()
    )
    # A family without a cell state ignores the cell rate, so it needs no cell mask.
    assert (
        fn.check_direction_masks(
            kind_spec("gru"), None, RecurrentOptions(zoneout_cell=0.4), training=True
        )
        == fn.DirectionMasks()
    )


def test_dropout_defaults_to_none_and_zero_dropout_gives_no_mask() -> None:
    for masks in (
        _sample("lstm", RecurrentOptions()),
        _sample("lstm", RecurrentOptions(), dropout=0.0),
    ):
        assert [m.dropout for m in masks] == [None, None]


def test_dropout_of_one_keeps_the_dtype() -> None:
    first = _sample("rnn", RecurrentOptions(), dropout=1.0)[0].dropout
    assert first is not None and first.dtype == torch.float64


def test_every_mask_follows_the_device_of_like() -> None:
    options = RecurrentOptions(dropconnect=0.2, zoneout=0.1, zoneout_cell=0.3)
    meta = torch.zeros(1, device="meta", dtype=torch.float64)
    for dropout in (0.5, 1.0):
        masks = _sample("lstm", options, like=meta, dropout=dropout)
        tensors = [masks[0].dropout, *masks[0].directions[0], *masks[1].directions[0]]
        assert all(t.device.type == "meta" and t.dtype == torch.float64 for t in tensors)


def test_bernoulli_is_the_documented_16_bit_law() -> None:
    # Four elements per 64-bit draw, each kept when its 16 bits (as int16) fall below
    # round(keep * 2**16) - 2**15; then the generator is exactly one draw per four elements on.
    like = torch.zeros(1, dtype=torch.float64)
    for size in (4, 5, 9):
        torch.manual_seed(5)
        mask = fn._bernoulli((size,), 0.3, like)
        after = torch.empty(1, dtype=torch.int64).random_(-(1 << 63), None)
        torch.manual_seed(5)
        words = torch.empty(4, dtype=torch.int64).random_(-(1 << 63), None)
        bits = words.view(torch.int16)[:size]
        expected = (bits < round(0.3 * 2**16) - 2**15).to(torch.float64)
        assert mask.dtype == torch.float64 and torch.equal(mask, expected), size
        assert after.item() == words[(size + 3) // 4].item(), size


def test_bernoulli_under_graph_capture_keeps_the_law(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.compile / export trace the randint form; it must draw the same distribution.
    monkeypatch.setattr(fn, "graph_capture", lambda: True)
    torch.manual_seed(6)
    mask = fn._bernoulli((200, 100), 0.3, torch.zeros(1, dtype=torch.float64))
    assert mask.shape == (200, 100) and mask.dtype == torch.float64
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(mask.mean().item() - 0.3) < 5 * (0.3 * 0.7 / mask.numel()) ** 0.5
    assert fn._bernoulli((3,), 1.0, torch.zeros(1)).tolist() == [1.0, 1.0, 1.0]
    rare = fn._bernoulli((400_000,), 2**-15, torch.zeros(1))  # 2 of 2**16 values: about 12
    assert 2 < rare.sum().item() < 30
    on_meta = fn._bernoulli((2, 3), 0.3, torch.zeros(1, device="meta"))
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 3)


def test_lstm_cell_zoneout_alone_is_applied() -> None:
    prev = fn.LSTMState(torch.zeros(2, 3), torch.zeros(2, 3))
    new = fn.LSTMState(torch.ones(2, 3), torch.ones(2, 3))
    mask_c = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = fn._zoneout_state(prev, new, RecurrentOptions(zoneout_cell=0.5), True, None, mask_c)
    assert torch.equal(out.h, new.h) and torch.equal(out.c, 1.0 - mask_c)


def test_drop_connect_trains_by_default() -> None:
    torch.manual_seed(7)
    w = torch.ones(100, 100, dtype=torch.float64)
    dropped = fn.drop_connect(w, 0.25)  # no training argument: a sampled mask
    assert set(dropped.unique().tolist()) == {0.0, 1 / 0.75}
    assert torch.equal(fn.drop_connect(w, 0.25, training=False), w)
