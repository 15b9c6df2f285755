"""Which implementation runs a fused recurrence: Triton (CUDA), native C (CPU) or the PyTorch loop.

- **Triton** on CUDA float32 tensors (the compute dtype, also under autocast) when ``triton``
  imports: one kernel launch per step for all element-wise work (IndRNN: one for the whole
  recurrence), the products with ``W_hh`` through torch (cuBLAS). ``RNNGUARD_TRITON=0`` switches
  it off.
- **Native C kernels** on CPU float32/float64 for the LSTM and IndRNN where a C compiler is found
  (:mod:`rnnguard.nn.fused.native`).
- **The PyTorch loop** everywhere else; it is the oracle the other two are tested against.

:func:`forced` runs the Triton kernels on any device, for tests: on CPU that needs Triton's
interpreter (``TRITON_INTERPRET=1`` set before the first kernel is built).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "Switch",
    "backend",
    "choose",
    "forced",
    "triton_available",
    "triton_for",
    "use_triton",
]

BACKENDS = ("triton", "native", "torch")


class Switch:
    """On inside any ``with switch.on():`` block (blocks nest): the backends' test switches."""

    def __init__(self) -> None:
        self._depth = 0

    def __bool__(self) -> bool:
        return self._depth > 0

    @contextlib.contextmanager
    def on(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1


_forced = Switch()  # on inside ``forced()`` blocks
_importable: bool | None = None
_import_error: str | None = None


def _env_off() -> bool:
    return os.environ.get("RNNGUARD_TRITON", "").strip().lower() in ("0", "off", "false", "no")


def triton_available() -> bool:
    """Whether ``triton`` imports (tried once; the import itself is deferred to this call)."""
    global _importable, _import_error
    if _importable is None:
        try:
            import triton  # noqa: F401

            _importable = True
        except Exception as exc:  # a broken install must not break the PyTorch path
            _importable, _import_error = False, f"{type(exc).__name__}: {exc}"
    return _importable


def choose(device_type: str, dtype: torch.dtype, triton_ok: bool, native_ok: bool) -> str:
    """The backend for tensors of ``device_type``/``dtype``: one of :data:`BACKENDS`."""
    if device_type == "cuda" and dtype == torch.float32 and triton_ok:
        return "triton"
    if device_type == "cpu" and native_ok:
        return "native"
    return "torch"


def forced() -> contextlib.AbstractContextManager[None]:
    """Run the Triton kernels inside the block whatever the device (tests; see module doc)."""
    return _forced.on()


def _check_forced(like: Tensor) -> None:
    if not triton_available():
        raise RuntimeError(
            f"the Triton path was forced but triton does not import ({_import_error})"
        )
    if like.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"the Triton path was forced on {like.device.type} tensors; that needs Triton's "
            "interpreter: set TRITON_INTERPRET=1 before the first kernel is built"
        )
    if like.dtype != torch.float32:
        raise RuntimeError(f"the Triton kernels compute in float32, got {like.dtype} tensors")
    if like.numel() >= MAX_ELEMENTS:
        raise RuntimeError(
            f"the Triton kernels index with 32 bits: {like.numel()} elements is too many"
        )


#: The kernels index with 32-bit integers: inputs ``pre`` (T, B, G) of this many elements or more
#: (no buffer of a call is larger) take the PyTorch loop.
MAX_ELEMENTS = 2**31


def use_triton(like: Tensor) -> bool:
    """True when the fused recurrence on ``like`` (its input side ``pre``) runs the Triton kernels."""
    if _forced:
        _check_forced(like)
        return True
    if like.device.type != "cuda" or like.dtype != torch.float32 or _env_off():
        return False
    return like.numel() < MAX_ELEMENTS and triton_available()


def triton_for(pre: Tensor) -> ModuleType | None:
    """:mod:`.triton_ops` when a fused recurrence over ``pre`` (T, B, G) runs the Triton kernels.

    None for zero steps or where :func:`use_triton` says no; triton is imported only here.
    """
    if pre.shape[0] == 0 or not use_triton(pre):
        return None
    from rnnguard.nn.fused import triton_ops

    return triton_ops


def backend(kind: str, like: Tensor, *others: Any) -> str:
    """Which backend a fused ``kind`` recurrence on ``like`` (plus its other tensors) runs."""
    from rnnguard.nn.fused import native

    if use_triton(like):
        return "triton"
    native_ok = kind in ("lstm", "indrnn") and native.usable(like, *others)
    return choose(like.device.type, like.dtype, False, native_ok)
