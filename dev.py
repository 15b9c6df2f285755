#!/usr/bin/env python3
"""Self-bootstrapping developer entry point: ``python3 dev.py demo|test|lint|mutation|python``.

Creates ``.venv`` next to this file on first use, installs PyTorch (the CPU build where no NVIDIA
GPU is present, so a laptop or CI runner never downloads the multi-GB CUDA build), installs
rnnguard in editable mode with its extras, then runs the requested job inside the venv.
Needs nothing but Python >= 3.10.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-stamp"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")

# The range in pyproject.toml; the pinned CPU build below satisfies it.
TORCH_RANGE = "torch>=2.3,<3"
TORCH_CPU_PIN = "torch==2.13.0+cpu"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def log(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def run(cmd: list[str | Path], **kw: object) -> int:
    return subprocess.call([str(c) for c in cmd], **kw)  # type: ignore[call-overload]


def pip(*args: str) -> int:
    return run([PY, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args])


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and run(
        ["nvidia-smi", "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) == 0


def install_torch() -> None:
    if run([PY, "-c", "import torch"], stderr=subprocess.DEVNULL) == 0:
        return
    spec = os.environ.get("RNNGUARD_TORCH_SPEC")
    if spec:
        log(f"installing {spec} (from RNNGUARD_TORCH_SPEC)")
        if pip(spec) != 0:
            sys.exit("[dev] could not install torch from RNNGUARD_TORCH_SPEC")
        return
    if has_nvidia_gpu():
        log("NVIDIA GPU found: installing the CUDA build of torch")
        if pip(TORCH_RANGE) != 0:
            sys.exit("[dev] could not install torch")
        return
    # CPU build: a local wheel or configured index may already offer the exact +cpu version;
    # otherwise ask PyTorch's CPU index (PyPI's default Linux wheel bundles CUDA, several GB).
    log("no GPU: installing the CPU build of torch")
    if pip(TORCH_CPU_PIN) == 0:
        return
    if pip("--index-url", TORCH_CPU_INDEX, TORCH_RANGE) == 0:
        return
    sys.exit(
        "[dev] could not install a CPU build of torch; set RNNGUARD_TORCH_SPEC "
        "(e.g. 'torch==2.13.0') and retry"
    )


def bootstrap() -> None:
    if sys.version_info < (3, 10):
        sys.exit("[dev] Python >= 3.10 is required")
    if not PY.exists():
        log(f"creating virtual environment {VENV.name}/")
        venv.EnvBuilder(with_pip=True).create(VENV)
    install_torch()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    log("installing rnnguard (editable) with extras")
    if pip("-e", f"{ROOT}[all,lightning,ray,dev]") != 0:
        sys.exit("[dev] pip install failed")
    STAMP.write_text(digest)


def venv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def main(argv: list[str]) -> int:
    jobs = {"demo", "test", "lint", "mutation", "python"}
    if not argv or argv[0] not in jobs:
        print(__doc__)
        print(f"usage: python3 dev.py {{{'|'.join(sorted(jobs))}}} [extra args]")
        return 2
    job, extra = argv[0], argv[1:]
    bootstrap()
    env = venv_env()
    if job == "demo":
        # The main job: the quick benchmark on built-in data (PTB-char only when present).
        return run([BIN / "rnnguard", "bench", "--preset", "quick", "--out", "runs/quick", *extra],
                   cwd=ROOT, env=env)
    if job == "lint":
        rc = run([PY, "-m", "ruff", "check", "src", "tests", "benchmarks"], cwd=ROOT, env=env)
        return rc or run([PY, "-m", "mypy"], cwd=ROOT, env=env)
    if job == "python":
        return run([PY, *extra], cwd=ROOT, env=env)
    if job == "mutation":
        # Mutation testing of the core modules (docs/mutation.md); mutmut only when asked for.
        if run([PY, "-c", "import mutmut"], stderr=subprocess.DEVNULL) != 0 and pip(
            "mutmut>=3.8,<4"
        ):
            return 1
        return run([PY, ROOT / "tools" / "mutation.py", *extra], cwd=ROOT, env=env)
    # test: lint first (cheap, catches what a reviewer would), then the default suite.
    rc = run([PY, "-m", "ruff", "check", "src", "tests", "benchmarks"], cwd=ROOT, env=env)
    if rc:
        return rc
    return run([PY, "-m", "pytest", "-q", *extra], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
