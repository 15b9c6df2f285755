"""Optional native kernels (``kernels.c``): built on first use, loaded with ctypes.

Nothing is compiled at install time. The first fused LSTM or IndRNN call on CPU tensors
compiles ``kernels.c`` with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``) into a
per-user cache (``$RNNGUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnguard``, else
``~/.cache/rnnguard``), named by a hash of the source, flags and machine, written atomically so
concurrent first calls are safe. When there is no compiler, the build fails or
``RNNGUARD_NATIVE=0`` is set, the pure-PyTorch loops run instead: same maths, same results
within rounding, and the path every fused test also covers.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnguard.nn.fused.dispatch import Switch

__all__ = [
    "SUFFIXES",
    "NativeZoneout",
    "available",
    "build_error",
    "disabled",
    "kernel",
    "library",
    "ptr",
    "threads",
    "usable",
]

_SOURCE = Path(__file__).with_name("kernels.c")
_SOURCES = (_SOURCE, Path(__file__).with_name("kernels_impl.h"))  # all that goes into a build
#: The dtypes the kernels are built for, and the suffix of their entry points.
SUFFIXES = {torch.float32: "_f32", torch.float64: "_f64"}
_FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fPIC", "-shared"]
# Tried in order. -fopenmp links libgomp, which torch's CPU wheels load already (one runtime,
# one thread pool); -march=native is not known to every compiler.
_VARIANTS: tuple[list[str], ...] = (
    ["-march=native", "-fopenmp"],
    ["-fopenmp"],
    ["-march=native"],
    [],
)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_tried = False
_off = Switch()  # on inside ``disabled()`` blocks


class NativeZoneout(ctypes.Structure):
    """The C ``Zoneout``: a zoneout weight tensor with its strides, a constant, or nothing."""

    _fields_ = [
        ("p", ctypes.c_void_p),
        ("st", ctypes.c_int64),
        ("sb", ctypes.c_int64),
        ("sh", ctypes.c_int64),
        ("k", ctypes.c_double),
        ("on", ctypes.c_int32),
    ]

    @classmethod
    def of(cls, zoneout: Tensor | float | None, shape: tuple[int, int, int]) -> NativeZoneout:
        """Describe a zoneout weight broadcastable to ``shape`` (T, B, H); keep the tensor alive yourself."""
        if zoneout is None:
            return cls(None, 0, 0, 0, 0.0, 0)
        if not isinstance(zoneout, Tensor):
            return cls(None, 0, 0, 0, float(zoneout), 1)
        v = zoneout.expand(shape)
        st, sb, sh = v.stride()
        return cls(v.data_ptr(), st, sb, sh, 0.0, 1)


def _cache_dir() -> Path:
    explicit = os.environ.get("RNNGUARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rnnguard"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_model() -> str:
    # -march=native code must not be reused on another CPU sharing the same home directory:
    # the first CPU's model name and feature flags go into the cache key.
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key in ("model name", "flags", "Features") and key not in found:
                found[key] = line
    return "\n".join(found.values()) or platform.processor()


def _build(cc: str) -> Path:
    source = b"".join(p.read_bytes() for p in _SOURCES)
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                repr((_FLAGS, _VARIANTS)).encode(),
                cc.encode(),
                platform.machine().encode(),
                _cpu_model().encode(),
            ]
        )
    ).hexdigest()[:16]
    out_dir = _cache_dir()
    target = out_dir / f"rnnguard-kernels-{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        errors = []
        for extra in _VARIANTS:
            cmd = [cc, *_FLAGS, *extra, "-o", tmp, str(_SOURCE), "-lm"]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if run.returncode == 0:
                os.replace(tmp, target)  # atomic: a concurrent builder wrote the same bytes
                _prune(out_dir, keep=target)
                return target
            errors.append(run.stderr.strip().splitlines()[-1:] or ["exit status"])
        raise OSError(f"{cc} failed: {errors[0][0]}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


_KEEP_BUILDS = 8


def _prune(folder: Path, keep: Path) -> None:
    """Delete all but the newest few builds: each source or compiler change leaves one behind.

    Another installed version may still want a deleted one; it then rebuilds it (a second).
    """
    builds = sorted(folder.glob("rnnguard-kernels-*.so"), key=lambda p: p.stat().st_mtime)
    for old in builds[:-_KEEP_BUILDS]:
        if old != keep:
            with contextlib.suppress(OSError):
                old.unlink()


def _declare(lib: ctypes.CDLL) -> None:
    vp, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_double
    zoneout_p = ctypes.POINTER(NativeZoneout)
    signatures = {
        "rg_lstm_forward_step": [vp, i64, vp],
        "rg_lstm_backward_step": [vp, i64, vp],
        "rg_indrnn_forward": [i64, i64, i64, vp, vp, vp, i32, f64, zoneout_p, vp, vp, vp, i32],
        "rg_indrnn_backward": [
            i64, i64, i64, vp, vp, vp, vp, vp, i32, f64, zoneout_p, vp, vp, vp, vp, vp, i32,
        ],
    }  # fmt: skip
    for name, argtypes in signatures.items():
        for suffix in SUFFIXES.values():
            fn = getattr(lib, name + suffix)
            fn.argtypes = argtypes
            fn.restype = None


def kernel(lib: ctypes.CDLL, name: str, dtype: torch.dtype) -> Any:
    """The entry point ``name`` built for ``dtype`` (see :data:`SUFFIXES`)."""
    return getattr(lib, name + SUFFIXES[dtype])


def _env_off() -> bool:
    return os.environ.get("RNNGUARD_NATIVE", "").strip().lower() in ("0", "off", "false", "no")


def library() -> ctypes.CDLL | None:
    """The loaded kernels, building them on the first call; None when unavailable or switched off."""
    global _lib, _error, _tried
    if _off or _env_off():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                cc = _compiler()
                if cc is None:
                    raise OSError("no C compiler found (set CC)")
                lib = ctypes.CDLL(str(_build(cc)))
                _declare(lib)
                _lib = lib
            except (OSError, AttributeError, subprocess.SubprocessError) as exc:
                _error = str(exc)
                warnings.warn(
                    f"rnnguard: native kernels unavailable ({_error}); using the pure-PyTorch "
                    "fused loops (set RNNGUARD_NATIVE=0 to silence this)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _tried = True
    return _lib


def available() -> bool:
    """Whether the native kernels are built, loaded and switched on."""
    return library() is not None


def build_error() -> str | None:
    """Why the native kernels are unavailable (after a failed build), else None."""
    return _error


def disabled() -> contextlib.AbstractContextManager[None]:
    """Run the pure-PyTorch fused loops inside the block (as ``RNNGUARD_NATIVE=0`` does)."""
    return _off.on()


def usable(*tensors: Any) -> bool:
    """True when the kernels may run on these tensors: all on CPU, all float32 or all float64.

    ``None`` and float entries are ignored.
    """
    dtypes = {v.dtype for v in tensors if isinstance(v, Tensor)}
    devices = {v.device.type for v in tensors if isinstance(v, Tensor)}
    if len(dtypes) != 1 or dtypes.pop() not in SUFFIXES or devices != {"cpu"}:
        return False
    return library() is not None


def threads(rows: int) -> int:
    """How many threads a kernel splits ``rows`` independent rows over: torch's intra-op count."""
    return max(1, min(torch.get_num_threads(), rows))


def ptr(v: Tensor | None) -> int | None:
    """A contiguous tensor's data pointer (None for None), for ctypes."""
    return None if v is None else v.data_ptr()
