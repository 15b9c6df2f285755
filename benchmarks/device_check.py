"""One command for a GPU machine: CUDA tests, speed with and without AMP, memory, a short training run.

    python benchmarks/device_check.py [--out device_report.md] [--quick]

Writes a Markdown report (and prints it): the machine, the CUDA tests' result, ``rnnguard speed
--device cuda --sizes gpu --amp bf16`` (B=64, T=512, I=H=512: every row in float32 and under
bfloat16 autocast, against cuDNN's ``nn.LSTM``/``nn.GRU`` in the same run, peak memory of a
training step against the reference loop), the GPU targets judged on those rows, and a short
mixed-precision training run of a LayerNorm + zoneout + DropConnect LSTM on the adding problem.
Budget: about 8 minutes on a datacenter GPU (``--quick``: a smoke test at small sizes). Without
a CUDA device it refuses, saying so, and exits with status 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: GPU targets: fwd+bwd ratio of a row to its baseline in the same run (<=).
TARGETS = {
    "LSTM ln+zo.1+dc.2": ("torch.nn.LSTM", 1.5),
    "GRU ln": ("torch.nn.GRU", 1.5),
    "IndRNN 2 layers relu": ("torch.nn.LSTM", 0.2),
}


def _cuda_or_refuse() -> str | None:
    """Why this machine cannot run the check, or None when it can."""
    try:
        import torch
    except ImportError as exc:
        return f"torch does not import ({exc})"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def _machine() -> list[str]:
    import torch

    from rnnguard.nn.fused import dispatch

    props = torch.cuda.get_device_properties(0)
    triton = "imports" if dispatch.triton_available() else "does not import (PyTorch loop)"
    return [
        f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
        f"compute capability {props.major}.{props.minor}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()}, Python {sys.version.split()[0]}",
        f"- triton {triton}; fused paths run: {dispatch.backend('lstm', torch.zeros(1, device='cuda'))}",
    ]


def _cuda_tests(timeout: float) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/nn/test_cuda.py"]
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        tail = (run.stdout + run.stderr).strip().splitlines()[-15:]
        verdict = "passed" if run.returncode == 0 else f"FAILED (exit {run.returncode})"
    except subprocess.TimeoutExpired:
        tail, verdict = [], f"TIMED OUT after {timeout:.0f} s"
    return [
        f"`{' '.join(cmd[2:])}`: {verdict} in {time.perf_counter() - t0:.0f} s",
        "",
        "```",
        *tail,
        "```",
    ]


def _speed(sizes: tuple[str, ...], repeats: int) -> tuple[list[str], Any]:
    from rnnguard.bench.speed import format_report, run_speed

    report = run_speed(
        sizes, repeats, "cuda", memory=True, scaling=None, reference=True, amp="bf16",
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )  # fmt: skip
    cmd = f"rnnguard speed --device cuda --sizes {' '.join(sizes)} --repeats {repeats} --amp bf16 --no-scaling"
    return [f"Command: `{cmd}`", "", "```", format_report(report), "```"], report


def _gpu_targets(report: Any) -> list[str]:
    rows = {(r.size, r.case): r for r in report.rows}
    lines = ["| target | measured | limit | met |", "|---|---:|---:|---|"]
    for size in sorted({r.size for r in report.rows}):
        for case, (base, limit) in TARGETS.items():
            for tag in ("", " [bf16]"):
                r, b = rows.get((size, case + tag)), rows.get((size, base + tag))
                if r is None or b is None:
                    continue
                ratio = r.train_s / b.train_s
                lines.append(
                    f"| {case}{tag} fwd+bwd / {base}{tag} ({size}) | {ratio:.2f} | {limit:.2f} "
                    f"| {'yes' if ratio <= limit else 'NO'} |"
                )
        for v in report.verdicts:  # peak memory and the autocast-vs-own-float32 checks
            if f"({size})" in v["check"] and (
                "peak memory" in v["check"] or "[bf16]" in v["check"]
            ):
                if "/ torch.nn" in v["check"]:
                    continue  # the CPU limits of the torch.nn comparisons; the GPU ones are above
                lines.append(
                    f"| {v['check']} | {v['value']:.2f} | {v['limit']:.2f} | "
                    f"{'yes' if v['ok'] else 'NO'} |"
                )
    return lines


def _training(steps: int) -> list[str]:
    """A short AMP training run (GradScaler, bfloat16 where supported) on the adding problem."""
    import torch

    from rnnguard.nn.layers import LSTM
    from rnnguard.tasks.adding import AddingTask

    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    task = AddingTask(200)
    core = LSTM(2, 128, layer_norm=True, zoneout=0.1, dropconnect=0.2, batch_first=True).cuda()
    head = torch.nn.Linear(128, 1).cuda()
    params = [*core.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(1)
    losses: list[float] = []
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = task.batch(64, gen)
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=dtype):
            out, _ = core(x)
            loss = task.loss(head(out), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss))
    torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    head_mean = sum(losses[:20]) / 20
    tail_mean = sum(losses[-20:]) / 20
    finite = all(v == v and abs(v) != float("inf") for v in losses)
    return [
        f"LSTM(2, 128, layer_norm, zoneout 0.1, DropConnect 0.2) + Linear on the adding problem "
        f"(T=200, batch 64), Adam 2e-3, {str(dtype).replace('torch.', '')} autocast, GradScaler "
        f"{'on' if scaler.is_enabled() else 'off'}, clip 1.0, {steps} steps:",
        "",
        f"- {per_step * 1e3:.1f} ms a step; MSE first 20 steps {head_mean:.4f}, last 20 "
        f"{tail_mean:.4f} (predicting 1 gives {task.baseline:.4f}); all losses finite: {finite}",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the device check; returns the exit status (2 without a CUDA device)."""
    parser = argparse.ArgumentParser(prog="device_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="device_report.md", help="report file (Markdown)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    args = parser.parse_args(argv)
    why = _cuda_or_refuse()
    if why is not None:
        print(f"device_check: cannot run here: {why}. It needs a CUDA GPU.", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    t0 = time.perf_counter()
    sections = ["# rnnguard device check", "", *_machine(), ""]
    sections += ["## CUDA tests", "", *_cuda_tests(timeout=150 if args.quick else 240), ""]
    speed_lines, report = _speed(("small",) if args.quick else ("gpu",), 3 if args.quick else 5)
    sections += ["## Speed and memory, float32 and bfloat16 autocast", "", *speed_lines, ""]
    sections += ["## GPU targets", "", *_gpu_targets(report), ""]
    sections += ["## Short training run", "", *_training(100 if args.quick else 300), ""]
    sections.append(f"Total time: {time.perf_counter() - t0:.0f} s")
    text = "\n".join(sections)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
