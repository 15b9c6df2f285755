"""The Triton kernels compile for a CUDA GPU (sm_90) ahead of time, with no GPU present.

The interpreter tests (``test_triton.py``) check the kernels' maths but accept code the real
compiler may reject (types that change across branches, loop-carried values). Compiling to a
cubin needs only the compiler bundled with triton. It runs in a child process because the kernels
of this process were built for the interpreter. The default suite compiles the LSTM's two
kernels with every extra on; ``-m slow`` compiles every kernel with its options on and off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

_CHILD = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from rnnguard.nn.fused import triton_kernels as K

INTS = {"t", "B", "H", "T", "mh_st", "mh_sb", "mh_sh", "mc_st", "mc_sb", "mc_sh", "m_st", "m_sb", "m_sh"}
FLOATS = {"eps", "kh", "kc", "k"}
failed = []
for name, constexprs in json.loads(sys.argv[1]):
    fn = getattr(K, name)
    sig = {
        a: "constexpr" if a in constexprs else "i32" if a in INTS else "fp32" if a in FLOATS else "*fp32"
        for a in fn.arg_names
    }
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    try:
        if "cubin" not in triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm:
            failed.append(f"{name}: no cubin")
    except Exception as exc:
        failed.append(f"{name} {constexprs}: {type(exc).__name__}: {str(exc)[:400]}")
print(json.dumps(failed))
"""

ON: list[tuple[str, dict[str, object]]] = [
    ("lstm_forward_step", {"LN_HH": True, "LN_C": True, "CH": 2, "CC": 1, "BLOCK_H": 64, "BLOCK_G": 256}),
    ("lstm_backward_step", {"HAS_REC": True, "LN_HH": True, "LN_C": True, "CH": 2, "CC": 1, "BLOCK_H": 64}),
]  # fmt: skip
REST: list[tuple[str, dict[str, object]]] = [
    ("lstm_forward_step", {"LN_HH": False, "LN_C": False, "CH": 0, "CC": 0, "BLOCK_H": 64, "BLOCK_G": 256}),
    ("lstm_backward_step", {"HAS_REC": False, "LN_HH": False, "LN_C": False, "CH": 0, "CC": 0, "BLOCK_H": 64}),
    ("gru_forward_step", {"LN": True, "BIAS": True, "CARRY": 2, "BLOCK_H": 64, "BLOCK_G": 256}),
    ("gru_forward_step", {"LN": False, "BIAS": False, "CARRY": 0, "BLOCK_H": 64, "BLOCK_G": 256}),
    ("gru_backward_step", {"HAS_REC": True, "LN": True, "CARRY": 1, "WANT_B": True, "BLOCK_H": 64}),
    ("gru_backward_step", {"HAS_REC": False, "LN": False, "CARRY": 0, "WANT_B": False, "BLOCK_H": 64}),
    ("rnn_forward_step", {"LN": True, "ACT": 2, "SLOPE": 0.01, "RESIDUAL": True, "CARRY": 2, "BLOCK_H": 64}),
    ("rnn_forward_step", {"LN": False, "ACT": 0, "SLOPE": 0.01, "RESIDUAL": False, "CARRY": 0, "BLOCK_H": 64}),
    ("rnn_backward_step", {"HAS_REC": True, "LN": True, "ACT": 1, "SLOPE": 0.01, "RESIDUAL": False, "CARRY": 2, "BLOCK_H": 64}),
    ("rnn_backward_step", {"HAS_REC": False, "LN": False, "ACT": 0, "SLOPE": 0.01, "RESIDUAL": True, "CARRY": 0, "BLOCK_H": 64}),
    ("indrnn_forward", {"ACT": 0, "SLOPE": 0.01, "CARRY": 2, "BLOCK": 256}),
    ("indrnn_forward", {"ACT": 1, "SLOPE": 0.01, "CARRY": 0, "BLOCK": 256}),
    ("indrnn_backward", {"ACT": 2, "SLOPE": 0.01, "CARRY": 1, "BLOCK": 256}),
    ("indrnn_backward", {"ACT": 1, "SLOPE": 0.01, "CARRY": 0, "BLOCK": 256}),
]  # fmt: skip


def _compile(cases: list[tuple[str, dict[str, object]]]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cases)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


def test_lstm_kernels_compile_for_cuda() -> None:
    assert _compile(ON) == []


@pytest.mark.slow
def test_every_kernel_compiles_for_cuda() -> None:
    assert _compile(REST) == []
