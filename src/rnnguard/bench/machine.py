"""Where a measurement ran: one description of the machine for benchmark manifests and speed runs."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["cpu_name", "machine_info"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def machine_info(device: Any = None) -> dict[str, Any]:
    """OS, Python, CPU, torch and its threads, the GPU or the native CPU kernels, load, git commit.

    ``device`` (a ``torch.device`` or its name) says which accelerator matters: its GPU name on
    CUDA, whether the native CPU kernels are on for CPU; ``None`` names any visible GPU.
    """
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "processor": cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    dev = torch.device(device) if device is not None else None
    if dev is not None:
        info["device"] = str(dev)
    if dev is not None and dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    elif dev is None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if dev is not None and dev.type == "cpu":  # asking may build the kernels: only when named
        from rnnguard.nn.fused import native

        # Which fused loops ran: the native kernels or the pure-PyTorch fallback.
        info["native_kernels"] = (
            "on" if native.available() else f"off ({native.build_error() or 'switched off'})"
        )
    if hasattr(os, "getloadavg"):
        info["load_before"] = [round(v, 2) for v in os.getloadavg()]
    commit = _git_commit()
    if commit:
        info["commit"] = commit
    return info
