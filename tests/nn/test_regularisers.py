"""The regulariser modules ``Zoneout`` and ``DropConnect`` and their functions in ``rnnguard.nn.functional``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnguard.nn as rn
from rnnguard.errors import ConfigError
from rnnguard.nn import functional as RF

pytestmark = pytest.mark.usefixtures("single_thread")


def test_modules_are_exported():
    assert {"Zoneout", "DropConnect"} <= set(rn.__all__)
    assert rn.Zoneout.__module__ == rn.DropConnect.__module__ == "rnnguard.nn.regularisers"


def test_zoneout_module_matches_function_in_training():
    prev, new = torch.randn(64, 32), torch.randn(64, 32)
    zo = rn.Zoneout(0.3)
    assert zo.training
    torch.manual_seed(5)
    got = zo(prev, new)
    torch.manual_seed(5)
    want = RF.zoneout(prev, new, 0.3, None, True)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    kept = got == prev
    assert (kept | (got == new)).all()
    assert 0.2 < kept.float().mean().item() < 0.4  # p is the rate of keeping the previous value


def test_zoneout_module_uses_given_mask_and_eval_expectation():
    prev, new = torch.randn(4, 6), torch.randn(4, 6)
    zo = rn.Zoneout(0.25)
    mask = (torch.arange(24).view(4, 6) % 2).float()
    torch.testing.assert_close(zo(prev, new, mask), torch.where(mask.bool(), prev, new))
    zo.eval()
    torch.testing.assert_close(zo(prev, new), 0.25 * prev + 0.75 * new)
    assert rn.Zoneout(0.0)(prev, new) is new


def test_dropconnect_module_matches_function_and_keeps_parameter():
    lin = nn.Linear(40, 30)
    dc = rn.DropConnect(0.4)
    torch.manual_seed(2)
    got = dc(lin.weight)
    torch.manual_seed(2)
    want = RF.drop_connect(lin.weight, 0.4, None, True)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    scaled = lin.weight / 0.6
    assert ((got == 0) | torch.isclose(got, scaled)).all()
    assert 0.3 < (got == 0).float().mean().item() < 0.5
    got.sum().backward()  # gradients reach the untouched parameter, zero where dropped
    assert isinstance(lin.weight, nn.Parameter)
    torch.testing.assert_close(lin.weight.grad, (got != 0).float() / 0.6)
    assert dc.eval()(lin.weight) is lin.weight


def test_dropconnect_module_uses_given_mask():
    w = torch.randn(5, 5)
    mask = torch.eye(5) * 2.0
    torch.testing.assert_close(rn.DropConnect(0.5)(w, mask), w * mask)


def test_extra_repr_and_no_state():
    assert repr(rn.Zoneout(0.25)) == "Zoneout(p=0.25)"
    assert repr(rn.DropConnect(0.3)) == "DropConnect(p=0.3)"
    assert rn.DropConnect(0.3).state_dict() == {}


@pytest.mark.parametrize("cls", [rn.Zoneout, rn.DropConnect])
@pytest.mark.parametrize(
    ("p", "exc", "words"),
    [
        (1.0, ConfigError, ["p must be", "[0, 1)", "1.0"]),
        (-0.1, ConfigError, ["p must be", "-0.1"]),
        (float("nan"), ConfigError, ["p must be", "nan"]),
        (True, TypeError, ["p must be", "bool"]),
        ("0.1", TypeError, ["p must be", "str"]),
    ],
)
def test_bad_rates(cls, p, exc, words):
    with pytest.raises(exc) as info:
        cls(p)
    for w in words:
        assert w in str(info.value)


def test_functions_reject_rates_outside_unit_interval():
    w = torch.ones(3, 3)
    with pytest.raises(ConfigError, match=r"p must be a probability in \[0, 1\), got 1.0"):
        RF.drop_connect(w, 1.0, None, True)  # would divide by zero
    with pytest.raises(ConfigError, match=r"p must be.*1.5"):
        RF.zoneout(w, w, 1.5, None, False)
