"""``search``: one call from a task to a tuned recipe, a report and a resumable study."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnguard.errors import ConfigError, require_extra
from rnnguard.tune.study import DEFAULT_HEARTBEAT_S, StudyCounts
from rnnguard.utils.checks import positive_int
from rnnguard.utils.checks import seed as check_seed
from rnnguard.utils.progress import Bar
from rnnguard.utils.progress import progress as progress_bar

DEFAULT_OUT_ROOT = Path("runs") / "tune"
_POLL_S = 2.0  # seconds between progress reads of the study


@dataclass
class SearchResult:
    """The outcome of :func:`search`."""

    study_name: str
    storage: str
    """Storage URL of the study (pass it to ``--storage`` to resume or add workers)."""
    out: Path
    direction: str
    metric_name: str
    counts: StudyCounts
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_recipe: Any | None = None
    """The best trial's :class:`~rnnguard.train.recipes.Recipe` (None if no trial completed)."""
    best_recipe_path: Path | None = None
    report: Any | None = None
    """:class:`~rnnguard.tune.report.SearchReport` (without plots and report.md with ``report=False``)."""
    worker_exit_codes: list[int] = field(default_factory=list)


def _base_recipe(base: Any, hidden_size: int | None) -> Any:
    from rnnguard.train.recipes import Recipe, get_recipe

    if base is None:
        recipe = Recipe(hidden_size=hidden_size or 64)
    elif isinstance(base, Recipe):
        recipe = base
    elif isinstance(base, (str, os.PathLike)) and str(base).endswith((".yaml", ".yml")):
        recipe = Recipe.from_yaml(Path(base))
    elif isinstance(base, str):
        recipe = get_recipe(base)
    else:
        raise ConfigError(
            f"base_recipe must be a recipe name, a YAML path or a Recipe, got {base!r}"
        )
    return recipe.replace(hidden_size=hidden_size) if hidden_size is not None else recipe


@contextlib.contextmanager
def _count_finished(spec: Any, study_name: str, bar: Bar) -> Iterator[None]:
    """Keep ``bar`` at the study's finished trials while the block runs (workers may be other
    processes or machines: the storage is the one place that knows)."""
    if not bar.active:
        yield
        return
    import optuna

    from rnnguard.tune.storage import open_storage
    from rnnguard.tune.study import count_trials

    stop = threading.Event()

    def watch() -> None:
        storage = open_storage(spec)  # its own handle: the workers' are not shared across threads
        while not stop.wait(_POLL_S):
            try:
                study = optuna.load_study(study_name=study_name, storage=storage)
                bar.set_count(count_trials(study).finished)
            except Exception:  # a storage hiccup only delays the bar
                continue

    thread = threading.Thread(target=watch, name="rnnguard-tune-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def default_study_name(task: str, length: int, space: str) -> str:
    """``<task>-T<length>-<space>``, e.g. ``adding-T500-default``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{task}-T{length}-{space}")


def search(
    task: str = "adding",
    length: int = 200,
    trials: int = 20,
    *,
    budget_steps: int = 300,
    storage: str | os.PathLike[str] | None = None,
    study: str | None = None,
    workers: int = 1,
    out: str | os.PathLike[str] | None = None,
    space: str = "default",
    base_recipe: Any = None,
    task_kwargs: dict[str, Any] | None = None,
    hidden_size: int | None = None,
    batch_size: int = 32,
    eval_every: int | None = None,
    eval_batches: int = 4,
    seed: int | None = None,
    device: str = "cpu",
    heartbeat: float = DEFAULT_HEARTBEAT_S,
    report: bool = True,
    verbose: bool = True,
    ray: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    progress: bool | None = None,
) -> SearchResult:
    """Search stability recipes for ``task`` at ``length``: exactly ``trials`` trials in the study.

    Each trial trains the recipe a :mod:`~rnnguard.tune.space` suggests for ``budget_steps`` and
    scores it by the task's metric; the median pruner stops poor trials at evaluations and
    diverging ones (non-finite loss, repeated gradient explosions) are pruned at once. The study
    lives in ``storage`` (default: ``<out>/study.journal``), so calling ``search`` again with the
    same arguments resumes it, and other processes or machines may work on it at the same time.
    With ``ray`` the ``workers`` run as tasks on a Ray cluster (see
    :class:`~rnnguard.utils.ray_pool.RayPool`); a cluster of several machines needs a ``storage``
    they can all reach (a database URL). ``progress``: a bar over the finished trials (default:
    when stderr is a terminal).

    Example:
        >>> result = search("adding", length=100, trials=20, workers=2)  # doctest: +SKIP
        >>> result.best_recipe.to_yaml("best.yaml")  # doctest: +SKIP
    """
    require_extra("optuna", "tune")
    import optuna

    from rnnguard.tasks import create_task
    from rnnguard.tune.objective import TrainObjective
    from rnnguard.tune.report import write_report
    from rnnguard.tune.space import get_space
    from rnnguard.tune.storage import open_storage, parse_storage
    from rnnguard.tune.study import count_trials, ensure_study
    from rnnguard.tune.workers import WorkerJob, load_study, run_jobs

    trials = positive_int("trials", trials)
    budget_steps = positive_int("budget_steps", budget_steps)
    workers = positive_int("workers", workers)
    batch_size = positive_int("batch_size", batch_size)
    eval_batches = positive_int("eval_batches", eval_batches)
    if eval_every is None:
        eval_every = max(1, budget_steps // 5)  # five reports per trial for the median pruner
    eval_every = positive_int("eval_every", eval_every)
    if hidden_size is not None:
        hidden_size = positive_int("hidden_size", hidden_size)
    if seed is not None:
        check_seed("seed", seed)
    if not isinstance(heartbeat, (int, float)) or heartbeat <= 0:
        raise ConfigError(f"heartbeat must be a positive number of seconds, got {heartbeat!r}")
    from rnnguard.train.config import TrainConfig

    # Checked here, before the study exists, rather than in every worker's first trial.
    TrainConfig(steps=budget_steps, batch_size=batch_size, eval_every=eval_every, device=device)
    search_space = get_space(space)
    if task_kwargs is not None and not isinstance(task_kwargs, dict):
        raise ConfigError(f"task_kwargs must be a mapping, got {task_kwargs!r}")
    task_kwargs = dict(task_kwargs or {})
    the_task = create_task(task, length=length, **task_kwargs)
    length = int(the_task.length)
    base = _base_recipe(base_recipe, hidden_size).to_dict()

    study_name = study or default_study_name(task, length, search_space.name)
    out_dir = Path(out) if out is not None else DEFAULT_OUT_ROOT / study_name
    spec = parse_storage(storage, out_dir)
    direction = "maximize" if the_task.higher_is_better else "minimize"
    metric = str(the_task.metric_name)
    # Trials of one study must be comparable: refuse to mix budgets, tasks or spaces.
    meta = {
        "task": task,
        "task_kwargs": task_kwargs,
        "length": length,
        "budget_steps": budget_steps,
        "space": search_space.name,
        "metric": metric,
        "batch_size": batch_size,
        "base_recipe": base,
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
    ensure_study(open_storage(spec), study_name, direction, meta)

    objective = TrainObjective(
        task=task,
        length=length,
        task_kwargs=task_kwargs,
        budget_steps=budget_steps,
        space=search_space.name,
        base_recipe=base,
        batch_size=batch_size,
        eval_every=eval_every,
        eval_batches=eval_batches,
        seed=0 if seed is None else seed,
        device=device,
    )
    job = WorkerJob(
        storage=spec.url,
        study_name=study_name,
        n_trials=trials,
        objective=objective,
        seed=seed,
        heartbeat=float(heartbeat),
        verbose=verbose,
    )
    if verbose:
        print(
            f"study {study_name!r} in {spec.url}: {trials} trials of {budget_steps} steps, "
            f"{workers} worker(s), {direction} {metric}",
            flush=True,
        )
    pool = None
    if ray is not None:
        from rnnguard.utils.ray_pool import RayPool

        if ray not in ("local", "auto") and spec.kind == "journal":
            raise ConfigError(
                f"storage must be a database every Ray node can reach with ray={ray!r} "
                "(e.g. --storage postgresql://USER:PASSWORD@HOST/DB), got the local file "
                f"{spec.target!r}"
            )
        pool = RayPool(ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    with (
        progress_bar(trials, f"tune {study_name}", unit="trial", enabled=progress) as bar,
        _count_finished(spec, study_name, bar),
    ):
        codes = run_jobs(job, workers, pool=pool)

    final = load_study(job, spec)
    result = SearchResult(
        study_name=study_name,
        storage=spec.url,
        out=out_dir,
        direction=direction,
        metric_name=metric,
        counts=count_trials(final),
        worker_exit_codes=codes,
    )
    recipe_name = f"tuned-{task}-T{length}"
    # best.yaml and trials.csv always; ``report`` only decides the plots and report.md.
    rep = write_report(
        final,
        out_dir,
        recipe_name=recipe_name,
        metric=metric,
        title=f"Recipe search: {task} at T={length} ({search_space.name} space)",
        plots=report,
        markdown=report,
    )
    result.report = rep
    result.best_recipe_path = rep.best_recipe
    if rep.best_recipe is not None:
        from rnnguard.train.recipes import Recipe

        result.best_recipe = Recipe.from_yaml(rep.best_recipe)
    from rnnguard.tune.report import best_recipe, ranked_trials

    ranked = ranked_trials(final)
    if ranked:
        result.best_value = float(ranked[0].value)
        result.best_params = dict(ranked[0].params)
        if result.best_recipe is None:
            result.best_recipe = best_recipe(final, recipe_name)
    return result
