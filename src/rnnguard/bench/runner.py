"""Run a benchmark grid: plan the jobs of a preset, execute runs (optionally in parallel
processes), store every finished run, and skip runs already stored.

The training function is injectable: ``train_fn(spec) -> result dict`` with at least ``solved``
(bool); :func:`train_run` is the real one (recipe + task + :func:`rnnguard.train.trainer.fit`).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import logging
import multiprocessing
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnnguard.bench.effective import Job, LengthSearch, SingleRuns
from rnnguard.bench.grid import Preset, RunSpec
from rnnguard.bench.store import ResultStore
from rnnguard.errors import ConfigError, DataError
from rnnguard.utils.checks import positive_int

__all__ = [
    "BenchPlan",
    "default_workers",
    "machine_info",
    "plan_from_manifest",
    "plan_preset",
    "run_jobs",
    "train_run",
]

TrainFn = Callable[[RunSpec], dict[str, Any]]
CURVE_POINTS = 60  # learning-curve points kept per run (the full history stays out of the store)


# ---------------------------------------------------------------------- planning
class BenchPlan:
    """The jobs of one benchmark invocation and what they stand for."""

    def __init__(self, preset: Preset, searches: list[LengthSearch], lm_runs: SingleRuns | None,
                 lm_task: str | None, lm_note: str, single_runs: SingleRuns | None = None,
                 single_notes: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.preset = preset
        self.searches = searches
        self.lm_runs = lm_runs
        self.lm_task = lm_task
        self.lm_note = lm_note
        self.single_runs = single_runs
        self.single_notes = single_notes

    @property
    def jobs(self) -> list[Job]:
        extra = [j for j in (self.lm_runs, self.single_runs) if j is not None]
        return [*self.searches, *extra]

    @property
    def lm_specs(self) -> list[RunSpec]:
        """The language-model runs (none when the plan has no language-model job)."""
        return list(self.lm_runs.specs) if self.lm_runs else []

    @property
    def single_specs(self) -> list[RunSpec]:
        """The single runs at a fixed length (MNIST)."""
        return list(self.single_runs.specs) if self.single_runs else []

    @property
    def recipes(self) -> list[str]:
        names = [s.recipe for s in self.searches]
        names += [s.recipe for s in self.lm_specs + self.single_specs]
        return list(dict.fromkeys(names))

    def to_manifest(self) -> dict[str, Any]:
        """JSON description of the plan, enough to rebuild it from the result store alone."""
        searches = []
        for s in self.searches:
            template = s.make_spec(s.lengths[0], s.seeds[0]).to_dict()
            searches.append({"recipe": s.recipe, "task": s.task, "lengths": list(s.lengths),
                             "seeds": list(s.seeds), "template": template})  # fmt: skip
        return {
            "preset": self.preset.name,
            "description": self.preset.description,
            "searches": searches,
            "lm": {
                "task": self.lm_task,
                "note": self.lm_note,
                "specs": [sp.to_dict() for sp in self.lm_specs],
            },
            "single": {
                "notes": list(self.single_notes),
                "specs": [sp.to_dict() for sp in self.single_specs],
            },
        }


def plan_from_manifest(manifest: dict[str, Any]) -> BenchPlan:
    """Rebuild the jobs of a benchmark from its manifest (for re-rendering a report)."""
    from rnnguard.bench.grid import PRESETS, LMSettings

    if "searches" not in manifest:
        raise ConfigError(
            "manifest must come from `rnnguard bench` (bench.json), got no 'searches'"
        )
    searches = []
    for s in manifest["searches"]:
        template = dict(s["template"])

        def make(length: int, seed: int, _t: dict[str, Any] = template) -> RunSpec:
            return RunSpec.from_dict({**_t, "length": length, "seed": seed})

        searches.append(
            LengthSearch(s["recipe"], s["task"], tuple(s["lengths"]), make, tuple(s["seeds"]))
        )
    lm = manifest.get("lm") or {}
    specs = [RunSpec.from_dict(d) for d in lm.get("specs", [])]
    preset = PRESETS.get(manifest.get("preset", ""))
    if preset is None:
        preset = Preset(str(manifest.get("preset", "custom")), str(manifest.get("description", "")),
                        (), LMSettings())  # fmt: skip
    single = manifest.get("single") or {}
    singles = [RunSpec.from_dict(d) for d in single.get("specs", [])]
    return BenchPlan(preset, searches, SingleRuns(specs) if specs else None, lm.get("task"),
                     str(lm.get("note", "")), SingleRuns(singles) if singles else None,
                     tuple(single.get("notes", [])))  # fmt: skip


def _check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{kind} must be among {sorted(known)}, got unknown {unknown}")
    return list(names)


def plan_preset(
    preset: Preset,
    *,
    recipes: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    text: str | os.PathLike[str] | None = None,
    known_recipes: Sequence[str] | None = None,
) -> BenchPlan:
    """Jobs for ``preset``: one effective-length search per (recipe, synthetic task) and one
    language-model run per recipe (PTB-char when its data is found, ``text`` with a file)."""
    if known_recipes is None:
        from rnnguard.train.recipes import list_recipes

        known_recipes = list(list_recipes())
    chosen = list(recipes) if recipes else list(preset.recipes or known_recipes)
    _check_names("recipes", chosen, known_recipes)
    length_names = [s.task for s in preset.length_tasks]
    lm_names = ["ptb-char", "text"]
    single_names = [s.task for s in preset.single_tasks]
    mnist_names = sorted({*single_names, "smnist", "pmnist"})
    wanted = (
        list(tasks) if tasks else [*length_names, "text" if text else "ptb-char", *single_names]
    )
    _check_names("tasks", wanted, [*length_names, *lm_names, *mnist_names])
    if "text" in wanted and text is None:
        raise ConfigError("tasks includes 'text' but no text file was given (--text FILE)")
    h, nl = preset.hidden_size, preset.num_layers
    searches = []
    for settings in preset.length_tasks:
        if settings.task not in wanted:
            continue
        for recipe in chosen:

            def make(length: int, seed: int, _r: str = recipe, _s: Any = settings) -> RunSpec:
                return RunSpec(
                    _r, _s.task, length, seed, steps=_s.steps, batch_size=_s.batch_size,
                    kind="length", hidden_size=h, num_layers=nl, eval_every=_s.eval_every,
                    eval_batches=_s.eval_batches, device=preset.device,
                    horizon_length=max(_s.lengths),
                )  # fmt: skip

            searches.append(
                LengthSearch(recipe, settings.task, settings.lengths, make, preset.seeds)
            )
    lm_runs, lm_task, note = None, None, ""
    lm = preset.lm
    lm_wanted = [t for t in wanted if t in lm_names]
    if lm is not None and lm_wanted:
        lm_task = lm_wanted[0]
        kwargs: dict[str, Any] = {}
        if lm_task == "ptb-char":
            from rnnguard.tasks.text import find_ptb_dir

            try:
                kwargs["data_dir"] = str(find_ptb_dir(data_dir))
            except DataError as exc:
                if tasks and "ptb-char" in tasks:
                    raise  # asked for explicitly: say why it cannot run
                lm_task, note = None, f"PTB-char skipped: {exc}"
        else:
            kwargs["path"] = str(Path(text).resolve()) if text else None
        if lm_task is not None:
            for key in ("train_tokens", "eval_tokens"):
                if getattr(lm, key) is not None:
                    kwargs[key] = getattr(lm, key)
            specs = [
                RunSpec(
                    recipe,
                    lm_task,
                    lm.length,
                    preset.seeds[0],
                    steps=lm.steps,
                    batch_size=lm.batch_size,
                    kind="lm",
                    hidden_size=preset.lm_hidden_size or h,
                    num_layers=preset.lm_num_layers or nl,
                    eval_every=lm.eval_every,
                    eval_batches=1,
                    steps_per_epoch=lm.steps_per_epoch,
                    task_kwargs=tuple(sorted(kwargs.items())),
                    device=preset.device,
                )
                for recipe in chosen
            ]
            lm_runs = SingleRuns(specs)
            if lm.train_tokens or lm.eval_tokens:
                note = (
                    f"{lm_task}: a slice ({lm.train_tokens or 'all'} training tokens, "
                    f"{lm.eval_tokens or 'all'} valid/test tokens), not the full benchmark"
                )
    single_specs, notes = [], []
    settings_by_task = {s.task: s for s in preset.single_tasks}
    for task in [t for t in wanted if t in mnist_names]:
        from rnnguard.bench.grid import SingleSettings
        from rnnguard.tasks.mnist import find_mnist_dir

        cfg = settings_by_task.get(task) or SingleSettings(task, 784, steps=2000, eval_limit=2000)
        try:
            folder = str(find_mnist_dir(data_dir))
        except DataError as exc:
            if tasks and task in tasks:
                raise
            notes.append(f"{task} skipped: {exc}")
            continue
        kw: dict[str, Any] = {"data_dir": folder}
        if cfg.eval_limit is not None:
            kw["eval_limit"] = cfg.eval_limit
        single_specs += [
            RunSpec(
                recipe,
                task,
                cfg.length,
                preset.seeds[0],
                steps=cfg.steps,
                batch_size=cfg.batch_size,
                kind="single",
                hidden_size=cfg.hidden_size or h,
                num_layers=nl,
                eval_every=cfg.eval_every,
                eval_batches=1,
                task_kwargs=tuple(sorted(kw.items())),
                device=preset.device,
            )
            for recipe in chosen
        ]
    singles = SingleRuns(single_specs) if single_specs else None
    return BenchPlan(preset, searches, lm_runs, lm_task, note, singles, tuple(notes))


# ---------------------------------------------------------------------- the real training run
def _thin(points: list[list[float]], n: int = CURVE_POINTS) -> list[list[float]]:
    if len(points) <= n:
        return points
    stride = len(points) / n
    picked = [points[int(i * stride)] for i in range(n)]
    return [*picked[:-1], points[-1]]


def _horizon_batch(task: Any, spec: RunSpec) -> Any:
    import torch

    if getattr(task, "stateful", False) and hasattr(task, "data"):
        # A language model: a valid window, so the training stream's position is untouched.
        data = task.data.get("valid", task.data["train"])
        t = min(spec.length, data.numel() // 4)
        return data[: 4 * t].view(4, t)
    if spec.horizon_length and spec.horizon_length != spec.length:
        from rnnguard.tasks.registry import create_task

        task = create_task(spec.task, length=spec.horizon_length, **dict(spec.task_kwargs))
    x, _ = task.batch(8, torch.Generator().manual_seed(4242))
    return x


def _measure_horizon(model: Any, x: Any) -> dict[str, Any] | None:
    """Input gradient horizon of ``model`` on ``x`` (None when diagnostics are unavailable)."""
    try:
        from rnnguard.diagnose.horizon import input_horizon
    except ImportError:
        return None
    try:
        device = next(model.parameters()).device
        h = input_horizon(model, x.to(device), max_outputs=4)
    except Exception as exc:  # a diagnostic must never sink a benchmark run
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    norms = [float(v) for v in h.normalized]
    stride = max(1, len(norms) // CURVE_POINTS)
    return {
        "horizon": h.horizon,
        "max_distance": h.max_distance,
        "rate": float(h.rate),
        "far_ratio": float(h.far_ratio),
        "curve": [[k, norms[k]] for k in range(0, len(norms), stride)],
    }


def train_run(spec: RunSpec) -> dict[str, Any]:
    """Train one run of the grid and return its result record (JSON-ready)."""
    import torch

    from rnnguard.tasks.registry import create_task
    from rnnguard.train.callbacks import Callback
    from rnnguard.train.config import TrainConfig
    from rnnguard.train.recipes import get_recipe
    from rnnguard.train.trainer import fit

    task = create_task(spec.task, length=spec.length, **dict(spec.task_kwargs))
    recipe = get_recipe(spec.recipe)
    overrides: dict[str, Any] = {}
    if spec.hidden_size is not None:
        overrides["hidden_size"] = spec.hidden_size
    if spec.num_layers is not None:
        overrides["num_layers"] = spec.num_layers
    if overrides:
        recipe = recipe.replace(**overrides)
    horizons: dict[str, Any] = {}
    probe = _horizon_batch(task, spec) if spec.horizon else None

    class HorizonProbe(Callback):
        def on_train_start(self, ctx: Any) -> None:
            if probe is not None:
                horizons["init"] = _measure_horizon(ctx.model, probe)

        def on_train_end(self, ctx: Any, result: Any) -> None:
            if probe is not None:
                horizons["end"] = _measure_horizon(ctx.model, probe)

    config = TrainConfig(
        steps=spec.steps, batch_size=spec.batch_size, eval_every=spec.eval_every,
        eval_batches=spec.eval_batches, seed=spec.seed, device=spec.device, progress=False,
        steps_per_epoch=spec.steps_per_epoch, stop_when_solved=spec.kind == "length",
        tensorboard=False, log_every=max(1, spec.steps // 200),
    )  # fmt: skip
    result = fit(recipe, task, config, callbacks=[HorizonProbe()])
    train = [r for r in result.history if r.get("kind") == "train"]
    evals = [r for r in result.history if r.get("kind") == "eval"]
    metric_name = result.metric_name
    per_epoch = list(result.explosions_per_epoch)
    epochs = max(1, len(per_epoch), -(-result.steps // spec.steps_per_epoch))
    total_explosions = int(result.guard_stats.get("exploded", sum(per_epoch)))
    return {
        "status": "ok",
        "metric_name": metric_name,
        "metric": result.metric,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "solved": bool(result.solved),
        "solved_step": result.solved_step,
        "steps": result.steps,
        "wall_time": float(result.wall_time),
        "num_params": int(result.num_params),
        "explosions_total": total_explosions,
        "explosions_per_epoch": total_explosions / epochs,
        "explosions_by_epoch": per_epoch,
        "skipped_steps": int(result.guard_stats.get("skipped", 0)),
        "diverged": bool(result.diverged),
        "rollbacks": int(result.rollbacks),
        "baseline": float(task.baseline),
        "threshold": float(task.solved_threshold),
        "higher_is_better": bool(task.higher_is_better),
        "curve": _thin([[r["step"], r.get("time", 0.0), r["loss"]] for r in train]),
        "eval_curve": [[r["step"], r.get("time", 0.0), r.get(metric_name)] for r in evals],
        "horizon_init": horizons.get("init"),
        "horizon_end": horizons.get("end"),
        "recipe_config": recipe.to_dict(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------- execution
def default_workers(device: str = "cpu") -> int:
    """One process per available core on CPU (at most 8); one on a GPU."""
    if device not in ("cpu",):
        try:
            import torch

            if device.startswith("cuda") or torch.cuda.is_available():
                return 1
        except ImportError:  # pragma: no cover
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class _RunLabel(logging.Filter):
    """Prefixes the library's log lines (e.g. the trainer's rollbacks) with the run they come from."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"{self.label}: {record.msg}"
        return True


def _safe_call(train_fn: TrainFn, spec: RunSpec) -> dict[str, Any]:
    t0 = time.time()
    tag = _RunLabel(spec.label)
    trainer_log = logging.getLogger("rnnguard.train.trainer")
    trainer_log.addFilter(tag)
    try:
        result = dict(train_fn(spec))
    except Exception as exc:  # recorded, shown in the report, never stored (a rerun retries it)
        return {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
            "traceback": traceback.format_exc()[-2000:],
            "solved": False,
            "wall_time": time.time() - t0,
        }
    finally:
        trainer_log.removeFilter(tag)
    result.setdefault("status", "ok")
    result.setdefault("wall_time", time.time() - t0)
    return result


def run_jobs(
    jobs: Sequence[Job],
    store: ResultStore,
    train_fn: TrainFn = train_run,
    *,
    workers: int = 1,
    on_result: Callable[[RunSpec, dict[str, Any], bool], None] | None = None,
) -> dict[str, int]:
    """Drive ``jobs`` to completion; ``workers > 1`` runs independent runs in parallel processes.

    Stored runs are fed back without training; each finished run is stored before the next is
    scheduled. ``on_result(spec, result, cached)`` is called for every run. Returns counts.
    """
    positive_int("workers", workers)
    counts = {"trained": 0, "cached": 0, "errors": 0}
    pool: cf.ProcessPoolExecutor | None = None
    if workers > 1:
        threads = max(1, default_workers() // workers)
        pool = cf.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(threads,),
        )  # fmt: skip
    in_flight: dict[Any, tuple[Job, RunSpec]] = {}
    errored: set[str] = set()

    def finish(job: Job, spec: RunSpec, result: dict[str, Any]) -> None:
        if result.get("status") == "error":
            counts["errors"] += 1
            errored.add(spec.key())
            store.log(
                {
                    "event": "error",
                    "key": spec.key(),
                    "run": spec.label,
                    "error": result.get("error"),
                }
            )
        else:
            counts["trained"] += 1
            store.put(spec, result)
            store.log({"event": "finished", "key": spec.key(), "run": spec.label})
        job.feed(spec, result)
        if on_result:
            on_result(spec, result, False)

    try:
        while True:
            progressed = True
            while progressed:  # feed cached results until every job waits for real training
                progressed = False
                flying = {s.key() for _, s in in_flight.values()}
                for job in jobs:
                    for spec in job.pending():
                        key = spec.key()
                        if key in flying or key in errored:
                            continue
                        cached = store.get(spec)
                        if cached is not None:
                            job.feed(spec, cached)
                            counts["cached"] += 1
                            if on_result:
                                on_result(spec, cached, True)
                            progressed = True
                            continue
                        if pool is None:
                            finish(job, spec, _safe_call(train_fn, spec))
                            progressed = True
                        elif len(in_flight) < workers:
                            store.log({"event": "started", "key": key, "run": spec.label})
                            in_flight[pool.submit(_safe_call, train_fn, spec)] = (job, spec)
                            flying.add(key)
            if not in_flight:
                break
            done, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                job, spec = in_flight.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:  # the worker process died
                    result = {"status": "error", "error": f"worker failed: {exc}", "solved": False}
                finish(job, spec, result)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return counts


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran: OS, Python, torch, CPU count, GPU, git commit (when available)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info
