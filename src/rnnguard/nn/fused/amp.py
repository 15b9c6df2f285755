"""Mixed precision on the fused paths: products in the autocast dtype, everything else in float32.

Under ``torch.autocast`` the fused paths do not hand their ops to autocast (its casts would land
on every per-step op, and the fused loops write into float32 buffers). Instead they take the
decision themselves, once per layer call, with autocast switched off inside:

- the input projection and the per-step product with ``W_hh`` (forward and backward) take their
  inputs in the autocast dtype (``W_hh`` is cast once per call). On CUDA they run in it; on CPU,
  where few processors have half-precision units, the rounded inputs are multiplied in float32:
  the same products (a product of two half-precision numbers is exact in float32), accumulated
  in float32, at float32 speed. The recurrent weight gradient is one float32 product;
- their results come back as float32: biases, LayerNorm statistics, gates, the carried state and
  the layer's outputs stay float32, so rounding does not compound through time (a bfloat16 cell
  state loses its small updates step after step).

Gradients follow the same casts, so a ``GradScaler``'s scaled gradients overflow (and are caught)
where autocast's own ops would overflow, and unscale exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["current", "half_weight", "linear", "matmul_dtype", "mixed"]

#: The only dtype autocast casts from; others (float64) run the fused path as they are.
_CASTABLE = torch.float32


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts products to on ``device_type``, or None when it is off."""
    try:
        on = torch.is_autocast_enabled(device_type)  # type: ignore[call-arg]
    except TypeError:  # torch < 2.4 takes no device type
        on = (
            torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
        )
    except RuntimeError:  # a device autocast does not know (meta): no autocast there
        return None
    if not on:
        return None
    get = getattr(torch, "get_autocast_dtype", None)
    if get is not None:
        return get(device_type)  # type: ignore[no-any-return]
    if device_type == "cpu":  # torch < 2.4
        return torch.get_autocast_cpu_dtype()
    return torch.get_autocast_gpu_dtype()


def matmul_dtype(device_type: str, param: Tensor) -> torch.dtype | None:
    """The dtype for the fused path's products under autocast, or None to run it unmixed.

    None outside autocast and for parameters autocast would not cast (anything but float32).
    """
    dtype = _autocast_dtype(device_type)
    if dtype is None or param.dtype != _CASTABLE or dtype == _CASTABLE:
        return None
    return dtype


_local = threading.local()  # the dtype of the mixed-precision run in progress on this thread


def current() -> torch.dtype | None:
    """The product dtype of the mixed-precision fused run in progress (in :func:`mixed`), or None."""
    return getattr(_local, "dtype", None)


@contextmanager
def mixed(device_type: str, dtype: torch.dtype) -> Iterator[None]:
    """Run a fused direction in mixed precision: autocast off inside, the casts made explicitly.

    The fused input projection and the recurrences read the dtype through :func:`current`.
    """
    before = current()
    _local.dtype = dtype
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        _local.dtype = before


def half_weight(w_hh: Tensor) -> Tensor:
    """The recurrent weight as the per-step product takes it: in :func:`current`'s dtype."""
    dtype = current()
    return w_hh if dtype is None else w_hh.to(dtype)


def linear(x: Tensor, weight: Tensor, dtype: torch.dtype) -> Tensor:
    """``x @ weight^T`` with both rounded to ``dtype``, as float32 (CPU: multiplied in float32)."""
    if x.device.type == "cpu":
        return F.linear(x.to(dtype).float(), weight.to(dtype).float())
    return F.linear(x.to(dtype), weight.to(dtype)).float()
