"""rnnguard.bench: the long-range benchmark (effective length, BPC, explosions, horizons) and its report."""

from rnnguard.bench.benchmark import run_benchmark
from rnnguard.bench.effective import LengthSearch, effective_length
from rnnguard.bench.grid import PRESETS, Preset, RunSpec, get_preset
from rnnguard.bench.report import render_report
from rnnguard.bench.store import ResultStore

__all__ = [
    "PRESETS",
    "LengthSearch",
    "Preset",
    "ResultStore",
    "RunSpec",
    "effective_length",
    "get_preset",
    "render_report",
    "run_benchmark",
]
