"""Time and memory of the rnnguard layers against torch.nn, measured in one run.

Every row is timed interleaved with its torch.nn baseline (round robin over all rows, median of
several repeats), so the ratios hold even on a machine whose load changes during the run. Times
are wall-clock; "forward" is the forward pass of a training step (train mode, autograd on, masks
drawn) and "fwd+bwd" adds the backward pass. GFLOP/s counts the matrix-multiply FLOPs only
(forward 2*B*T*G*H*(I+H) per gated layer, backward twice that). Peak memory is the high-water
mark of memory allocated through PyTorch during one training step, on top of what existed before
it (the profiler's allocation events on CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

With ``amp`` every row (but the reference loops) also runs under ``torch.autocast`` in that
dtype, the forward pass inside autocast and the backward outside, as a training loop does: those
rows are compared with torch.nn's under the same autocast, and each rnnguard layer with extras
with its own float32 row of the same run (target: at most 1.3x).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rnnguard.bench.machine import machine_info
from rnnguard.utils.memory import keep_freed_memory as keep_freed_memory_now
from rnnguard.utils.progress import progress as progress_bar

__all__ = ["SIZES", "Case", "SpeedReport", "SpeedResult", "format_report", "run_speed"]

#: Benchmark sizes (batch B, steps T, input I, hidden H).
SIZES: dict[str, dict[str, int]] = {
    "small": {"batch": 32, "steps": 200, "input": 64, "hidden": 256},
    "large": {"batch": 64, "steps": 500, "input": 256, "hidden": 512},
    "tiny": {"batch": 4, "steps": 20, "input": 8, "hidden": 16},
    # The size the GPU targets are set at (benchmarks/device_check.py).
    "gpu": {"batch": 64, "steps": 512, "input": 512, "hidden": 512},
}

#: ``amp`` names -> autocast dtypes; the limit of an extras layer's autocast time / its float32 time.
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
AMP_OWN_TARGET = 1.3


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration."""

    name: str
    family: str  # lstm | gru | rnn | indrnn: sets the FLOP count
    build: Callable[[int, int], Any]  # (input_size, hidden_size) -> module
    baseline: str | None = None  # name of the case it is compared against
    target: float | None = None  # required fwd+bwd ratio to the baseline (<=)
    num_layers: int = 1
    reference_of: str | None = None  # this row is the reference loop of that fused row
    slow: bool = False  # plain reference loops: small size only
    amp: str | None = None  # run the forward under autocast in this dtype (a key of AMP_DTYPES)
    own: str | None = None  # the float32 row of the same layer (amp rows of layers with extras)


def _cases() -> list[Case]:
    from torch import nn

    from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN

    extras: dict[str, Any] = {"layer_norm": True, "zoneout": 0.1, "dropconnect": 0.2}
    return [
        Case("torch.nn.LSTM", "lstm", lambda i, h: nn.LSTM(i, h)),
        Case("LSTM", "lstm", lambda i, h: LSTM(i, h), "torch.nn.LSTM", 1.05),
        Case("LSTM ln+zo.1+dc.2", "lstm", lambda i, h: LSTM(i, h, **extras), "torch.nn.LSTM", 1.5),
        Case("LSTM ln", "lstm", lambda i, h: LSTM(i, h, layer_norm=True), "torch.nn.LSTM"),
        Case(
            "LSTM ln+zo.1+dc.2 [reference]",
            "lstm",
            lambda i, h: LSTM(i, h, impl="reference", **extras),
            "torch.nn.LSTM",
            reference_of="LSTM ln+zo.1+dc.2",
            slow=True,
        ),
        Case("torch.nn.GRU", "gru", lambda i, h: nn.GRU(i, h)),
        Case("GRU ln", "gru", lambda i, h: GRU(i, h, layer_norm=True), "torch.nn.GRU", 1.5),
        Case(
            "GRU ln [reference]",
            "gru",
            lambda i, h: GRU(i, h, layer_norm=True, impl="reference"),
            "torch.nn.GRU",
            reference_of="GRU ln",
            slow=True,
        ),
        Case(
            "RNN relu residual+ln",
            "rnn",
            lambda i, h: RNN(i, h, nonlinearity="relu", residual=True, layer_norm=True),
            "torch.nn.LSTM",
        ),
        Case(
            "IndRNN 2 layers relu",
            "indrnn",
            lambda i, h: IndRNN(i, h, num_layers=2),
            "torch.nn.LSTM",
            0.33,
            num_layers=2,
        ),
    ]


@dataclass
class SpeedResult:
    """Measurements of one case at one size (seconds, bytes)."""

    size: str
    case: str
    forward_s: float
    train_s: float
    gflops: float
    peak_bytes: int | None
    baseline: str | None
    forward_ratio: float | None = None
    train_ratio: float | None = None
    target: float | None = None
    reference_of: str | None = None
    own: str | None = None  # the float32 row of the same layer (autocast rows)
    own_ratio: float | None = None  # fwd+bwd time / that row's


@dataclass
class SpeedReport:
    """A whole run: machine, load, per-size rows, scaling and target verdicts."""

    machine: dict[str, Any]
    rows: list[SpeedResult] = field(default_factory=list)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)


def _amp_cases(cases: list[Case], amp: str) -> list[Case]:
    """The autocast twin of every case but the reference loops, named ``"<case> [<amp>]"``."""
    out = []
    for c in cases:
        if c.slow:
            continue
        # torch.nn rows and the plain LSTM (torch's own kernel) have no float32 target of their own.
        has_extras = c.baseline is not None and c.name != "LSTM"
        out.append(
            Case(
                f"{c.name} [{amp}]",
                c.family,
                c.build,
                f"{c.baseline} [{amp}]" if c.baseline else None,
                c.target,
                c.num_layers,
                amp=amp,
                own=c.name if has_extras else None,
            )
        )
    return out


def _flops(case: Case, batch: int, steps: int, inp: int, hid: int) -> float:
    """Matrix-multiply FLOPs of one training step (forward + backward = 3 x forward)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1, "indrnn": 1}[case.family]
    total = 0.0
    for layer in range(case.num_layers):
        i = inp if layer == 0 else hid
        rec = 0 if case.family == "indrnn" else hid  # IndRNN's recurrence is element-wise
        total += 2.0 * batch * steps * gates * hid * (i + rec)
    return 3.0 * total


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(model: Any, x: Any, device: Any, amp: str | None = None) -> tuple[float, float]:
    """One training step (forward, backward); returns (forward seconds, total seconds)."""
    import torch

    dtype = getattr(torch, AMP_DTYPES[amp]) if amp else None
    _sync(device)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out, _ = model(x)
    _sync(device)
    t1 = time.perf_counter()
    out.sum().backward()
    _sync(device)
    t2 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t0


def _peak_memory(model: Any, x: Any, device: Any, amp: str | None = None) -> int:
    """High-water mark of memory allocated through PyTorch during one training step."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _step(model, x, device, amp)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    prof: Any = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        _step(model, x, device, amp)
    finally:
        with _quiet_stderr():
            prof.stop()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    ]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return int(peak)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to the null device inside the block.

    The profiler's C++ side prints a line to stderr at every start and stop; only those calls
    are wrapped, so anything the measured step itself reports still shows.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. replaced by a StringIO)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w", encoding="utf-8") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _measure_size(
    size: str,
    dims: dict[str, int],
    cases: list[Case],
    repeats: int,
    device: Any,
    memory: bool,
    log: Callable[[str], None],
    tick: Callable[[], None] = lambda: None,
) -> list[SpeedResult]:
    import torch

    batch, steps, inp, hid = dims["batch"], dims["steps"], dims["input"], dims["hidden"]
    torch.manual_seed(0)
    x = torch.randn(steps, batch, inp, device=device)
    models = {c.name: c.build(inp, hid).to(device).train() for c in cases}
    for c in cases:  # warm-up: allocator, thread pools, lazy initialisation
        _step(models[c.name], x, device, c.amp)
    times: dict[str, list[tuple[float, float]]] = {c.name: [] for c in cases}
    for rep in range(repeats):
        for c in cases:  # round robin: every row sees the same machine conditions
            times[c.name].append(_step(models[c.name], x, device, c.amp))
        log(f"  {size}: repeat {rep + 1}/{repeats} done")
        tick()
    rows = []
    for c in cases:
        fwd = statistics.median(t[0] for t in times[c.name])
        tot = statistics.median(t[1] for t in times[c.name])
        peak = _peak_memory(models[c.name], x, device, c.amp) if memory else None
        rows.append(
            SpeedResult(
                size,
                c.name,
                fwd,
                tot,
                _flops(c, batch, steps, inp, hid) / tot / 1e9,
                peak,
                c.baseline,
                target=c.target,
                reference_of=c.reference_of,
                own=c.own,
            )
        )
    by_name = {r.case: r for r in rows}
    for r in rows:
        if r.baseline in by_name:
            base = by_name[r.baseline]
            r.forward_ratio = r.forward_s / base.forward_s
            r.train_ratio = r.train_s / base.train_s
        if r.own in by_name:
            r.own_ratio = r.train_s / by_name[r.own].train_s
    return rows


def _measure_scaling(
    dims: dict[str, int], lengths: tuple[int, int], repeats: int, device: Any
) -> list[dict[str, Any]]:
    """fwd+bwd time at two sequence lengths: linear scaling means ratio ~ length ratio."""
    import torch

    chosen = {"torch.nn.LSTM", "LSTM ln+zo.1+dc.2", "GRU ln", "IndRNN 2 layers relu"}
    cases = [c for c in _cases() if c.name in chosen]
    out = []
    batch, inp, hid = dims["batch"], dims["input"], dims["hidden"]
    for c in cases:
        model = c.build(inp, hid).to(device).train()
        per_len = []
        for steps in lengths:
            x = torch.randn(steps, batch, inp, device=device)
            _step(model, x, device)
            per_len.append(statistics.median(_step(model, x, device)[1] for _ in range(repeats)))
        out.append(
            {
                "case": c.name,
                "steps": list(lengths),
                "train_s": per_len,
                "ratio": per_len[1] / per_len[0],
                "limit": 1.1 * lengths[1] / lengths[0],
            }
        )
    return out


def _verdicts(rows: list[SpeedResult], scaling: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r.target is not None and r.train_ratio is not None:
            out.append(
                {
                    "check": f"{r.case} fwd+bwd / {r.baseline} ({r.size})",
                    "value": r.train_ratio,
                    "limit": r.target,
                    "ok": r.train_ratio <= r.target,
                }
            )
        if r.own_ratio is not None:
            out.append(
                {
                    "check": f"{r.case} fwd+bwd / {r.own} ({r.size})",
                    "value": r.own_ratio,
                    "limit": AMP_OWN_TARGET,
                    "ok": r.own_ratio <= AMP_OWN_TARGET,
                }
            )
    by_key = {(r.size, r.case): r for r in rows}
    for r in rows:
        fused = by_key.get((r.size, r.reference_of or ""))
        if fused is not None and fused.peak_bytes is not None and r.peak_bytes:
            out.append(
                {
                    "check": f"peak memory {fused.case} / its reference ({r.size})",
                    "value": fused.peak_bytes / r.peak_bytes,
                    "limit": 1.0,
                    "ok": fused.peak_bytes <= r.peak_bytes,
                }
            )
    for s in scaling:
        out.append(
            {
                "check": f"{s['case']} T={s['steps'][1]} / T={s['steps'][0]}",
                "value": s["ratio"],
                "limit": s["limit"],
                "ok": s["ratio"] <= s["limit"],
            }
        )
    return out


def run_speed(
    sizes: tuple[str, ...] = ("small", "large"),
    repeats: int = 5,
    device: str = "auto",
    memory: bool = True,
    scaling: tuple[int, int] | None = (100, 1000),
    reference: bool = True,
    log: Callable[[str], None] = lambda s: None,
    keep_freed_memory: bool = True,
    amp: str | None = None,
    progress: bool | None = None,
) -> SpeedReport:
    """Run the benchmark and return its report (see the module docstring for what is measured).

    ``amp`` (``"bf16"`` or ``"fp16"``) adds every row again under autocast in that dtype.
    ``progress``: a bar over the timed repeats (default: when stderr is a terminal).

    ``keep_freed_memory`` first asks the C allocator to keep freed memory for reuse (see
    :func:`rnnguard.utils.memory.keep_freed_memory`), for every row alike, so page faults do not
    decide the ratios.
    """
    import torch

    from rnnguard.errors import ConfigError

    for s in sizes:
        if s not in SIZES:
            raise ConfigError(f"sizes must be among {sorted(SIZES)}, got {s!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a positive int, got {repeats!r}")
    if amp is not None and amp not in AMP_DTYPES:
        raise ConfigError(f"amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available")
    dev = torch.device(device)
    allocator = keep_freed_memory_now() if keep_freed_memory else "default"
    report = SpeedReport(machine_info(dev))
    report.machine["allocator"] = allocator
    if amp is not None:
        report.machine["amp"] = f"{AMP_DTYPES[amp]} autocast rows marked [{amp}]"
    all_cases = _cases()
    steps = len(sizes) * repeats + (scaling is not None)
    with progress_bar(steps, "speed", unit="repeat", enabled=progress) as bar:

        def say(text: str) -> None:
            with bar.external():
                log(text)

        for size in sizes:
            # The plain reference loops are 5-10x slower: only at the small sizes.
            cases = [c for c in all_cases if not c.slow or (reference and size != "large")]
            if amp is not None:
                cases += _amp_cases(cases, amp)
            bar.set_description(f"speed {size}")
            say(f"size {size}: {SIZES[size]}")
            report.rows += _measure_size(
                size, SIZES[size], cases, repeats, dev, memory, say, bar.update
            )
        if scaling is not None:
            bar.set_description("speed scaling")
            say(f"scaling: T={scaling[0]} vs T={scaling[1]}")
            dims = SIZES["tiny"] if sizes == ("tiny",) else SIZES["small"]
            report.scaling = _measure_scaling(dims, scaling, max(1, min(repeats, 3)), dev)
            bar.update(1)
    report.verdicts = _verdicts(report.rows, report.scaling)
    if hasattr(os, "getloadavg"):
        report.machine["load_after"] = [round(v, 2) for v in os.getloadavg()]
    return report


def format_report(report: SpeedReport) -> str:
    """The report as Markdown tables."""
    m = report.machine
    lines = [
        f"machine: {m['processor']}, {m['cpus']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads), device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + (f", native kernels {m['native_kernels']}" if "native_kernels" in m else "")
        + (f", allocator {m['allocator']}" if "allocator" in m else "")
        + (f", {m['amp']}" if "amp" in m else ""),
        f"load average (1/5/15 min): before {m.get('load_before')}, after {m.get('load_after')}",
        "",
    ]
    # Autocast runs add a column: each row's fwd+bwd time over its own float32 row's.
    own = any(r.own is not None for r in report.rows)
    head = "| size | layer / config | forward ms | fwd+bwd ms | vs baseline fwd | vs baseline fwd+bwd | baseline |"
    lines += [
        head + (" vs own float32 |" if own else "") + " GFLOP/s | peak MiB |",
        "|---|---|---:|---:|---:|---:|---|" + ("---:|" if own else "") + "---:|---:|",
    ]
    for r in report.rows:
        fr = f"{r.forward_ratio:.2f}x" if r.forward_ratio is not None else "-"
        tr = f"{r.train_ratio:.2f}x" if r.train_ratio is not None else "-"
        mem = f"{r.peak_bytes / 2**20:.1f}" if r.peak_bytes is not None else "-"
        ow = (f" {r.own_ratio:.2f}x |" if r.own_ratio is not None else " - |") if own else ""
        lines.append(
            f"| {r.size} | {r.case} | {r.forward_s * 1e3:.1f} | {r.train_s * 1e3:.1f} | {fr} | {tr} "
            f"| {r.baseline or '-'} |{ow} {r.gflops:.1f} | {mem} |"
        )
    for r in report.rows:
        if r.case == "LSTM" and r.train_ratio is not None:
            # rnnguard.LSTM without extras runs torch's own kernel: any ratio away from 1.00
            # is measurement noise, and bounds how far the other ratios of this run can be trusted.
            lines.append(
                f"noise check ({r.size}): LSTM without extras runs torch.nn.LSTM's kernel; "
                f"its fwd+bwd ratio is {r.train_ratio:.2f} (1.00 on a quiet machine)"
            )
    if report.scaling:
        lines += [
            "",
            "| layer / config | steps | fwd+bwd ms | ratio | linear limit |",
            "|---|---|---|---:|---:|",
        ]
        for s in report.scaling:
            ms = " / ".join(f"{t * 1e3:.1f}" for t in s["train_s"])
            steps = " / ".join(str(t) for t in s["steps"])
            lines.append(f"| {s['case']} | {steps} | {ms} | {s['ratio']:.2f} | {s['limit']:.1f} |")
    if report.verdicts:
        lines += ["", "| target | measured | limit | met |", "|---|---:|---:|---|"]
        for v in report.verdicts:
            lines.append(
                f"| {v['check']} | {v['value']:.2f} | {v['limit']:.2f} | {'yes' if v['ok'] else 'NO'} |"
            )
    return "\n".join(lines)
