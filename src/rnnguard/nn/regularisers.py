"""Module forms of the recurrent regularisers, paired with their functions in :mod:`~rnnguard.nn.functional`.

``Zoneout`` wraps :func:`~rnnguard.nn.functional.zoneout` and ``DropConnect`` wraps
:func:`~rnnguard.nn.functional.drop_connect`; both follow the module's ``training`` flag, so
``model.eval()`` switches them to their evaluation behaviour as it does for ``torch.nn.Dropout``.
"""

from __future__ import annotations

from torch import Tensor, nn

from rnnguard.nn.functional import drop_connect, zoneout
from rnnguard.utils import checks as _checks

__all__ = ["DropConnect", "Zoneout"]


class Zoneout(nn.Module):
    """Zoneout (Krueger et al. 2017): each unit keeps its previous value with probability ``p``.

    ``forward(prev, new, mask=None)``: in training ``mask * prev + (1 - mask) * new`` with
    ``mask ~ Bernoulli(p)`` per element (or the given ``mask``, 1 = keep ``prev``); in eval the
    expectation ``p * prev + (1 - p) * new``.

    Example::

        zo = Zoneout(0.1)
        h = zo(h_prev, cell(x_t, h_prev))
    """

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = _checks.probability("p", p)

    def forward(self, prev: Tensor, new: Tensor, mask: Tensor | None = None) -> Tensor:
        return zoneout(prev, new, self.p, mask, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropConnect(nn.Module):
    """DropConnect (Wan et al. 2013) on a weight tensor, applied functionally.

    ``forward(weight, mask=None)``: in training ``weight * mask`` with
    ``mask ~ Bernoulli(1 - p) / (1 - p)`` elementwise (or the given, already scaled ``mask``); in
    eval ``weight`` unchanged. The parameter itself is never replaced, so optimizers and state
    dicts see the ordinary parameter. To share one mask over a sequence, draw it once and pass it
    as ``mask`` on every step.

    Example::

        dc = DropConnect(0.3)
        h = torch.tanh(x_t @ w_ih.T + h @ dc(w_hh).T)
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _checks.probability("p", p)

    def forward(self, weight: Tensor, mask: Tensor | None = None) -> Tensor:
        return drop_connect(weight, self.p, mask, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
