"""Benchmark runs on a local Ray instance: same results as the process pool, resume after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from rnnguard.bench.effective import SingleRuns
from rnnguard.bench.grid import RunSpec
from rnnguard.bench.runner import run_jobs
from rnnguard.bench.store import ResultStore
from rnnguard.errors import ConfigError
from rnnguard.utils.ray_pool import RayPool, ray_available

# CI installs every extra: there a missing Ray is a failure, not a skip.
needs_ray = pytest.mark.skipif(
    not ray_available() and not os.environ.get("CI"), reason="Ray not installed (rnnguard[ray])"
)


def _specs(n: int) -> list[RunSpec]:
    return [
        RunSpec("vanilla", "adding", 5, seed, steps=3, batch_size=4, hidden_size=8, horizon=False)
        for seed in range(n)
    ]


def _outcomes(store: ResultStore, specs: list[RunSpec]) -> dict[str, Any]:
    out = {}
    for spec in specs:
        result = store.get(spec)
        assert result is not None, spec.label
        out[spec.key()] = (result["metric"], result["solved"], result.get("losses"))
    return out


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cpus_per_run": 0}, "cpus_per_run"),
        ({"cpus_per_run": float("nan")}, "cpus_per_run"),
        ({"gpus_per_run": -1}, "gpus_per_run"),
        ({"local_cpus": 0}, "local_cpus"),
    ],
)
def test_bad_resources_are_refused_by_name(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RayPool("local", **kwargs)


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"rnnguard\[ray\]"):
        RayPool("local").capacity  # noqa: B018 - connecting is the point


@pytest.fixture(scope="module")
def local_ray() -> Any:
    if not ray_available():
        pytest.fail("Ray is not installed but CI must test the Ray runner")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@needs_ray
def test_ray_runs_give_the_process_pool_s_results(local_ray: Any, tmp_path: Path) -> None:
    specs = _specs(3)
    pool = RayPool("local")
    assert pool.capacity == 2
    ray_store = ResultStore(tmp_path / "ray")
    counts = run_jobs([SingleRuns(list(specs))], ray_store, workers=2, pool=pool)
    assert counts == {"trained": 3, "cached": 0, "errors": 0}
    local_store = ResultStore(tmp_path / "local")
    run_jobs([SingleRuns(list(specs))], local_store, workers=2)
    assert _outcomes(ray_store, specs) == _outcomes(local_store, specs)
    # A second pass on Ray trains nothing: everything is in the store.
    again = run_jobs([SingleRuns(list(specs))], ray_store, workers=2, pool=RayPool("local"))
    assert again == {"trained": 0, "cached": 3, "errors": 0}


@needs_ray
def test_a_killed_ray_driver_resumes_from_the_store(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    script = textwrap.dedent(
        f"""
        import os, signal
        from rnnguard.bench.grid import RunSpec
        from rnnguard.bench.effective import SingleRuns
        from rnnguard.bench.runner import run_jobs
        from rnnguard.bench.store import ResultStore
        from rnnguard.utils.ray_pool import RayPool

        specs = [RunSpec("vanilla", "adding", 5, s, steps=3, batch_size=4, hidden_size=8,
                         horizon=False) for s in range(4)]
        seen = []

        def on_result(spec, result, cached):
            seen.append(spec)
            if len(seen) == 2:  # two runs stored: die without any clean-up
                os.kill(os.getpid(), signal.SIGKILL)

        run_jobs([SingleRuns(specs)], ResultStore({str(out)!r}), workers=1,
                 on_result=on_result, pool=RayPool("local", local_cpus=1))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    specs = _specs(4)
    store = ResultStore(out)
    stored = [s for s in specs if store.get(s) is not None]
    assert len(stored) == 2
    counts = run_jobs([SingleRuns(list(specs))], store, workers=1)
    assert counts == {"trained": 2, "cached": 2, "errors": 0}
    assert len(_outcomes(store, specs)) == 4
