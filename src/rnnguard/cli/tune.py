"""``rnnguard tune``: search stability recipes with Optuna (resumable, several workers)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rnnguard.cli.args import (
    add_command,
    add_progress_arg,
    add_ray_args,
    add_task_arg,
    check_out_folder,
    task_args,
    whole,
)
from rnnguard.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``tune`` sub-command."""
    p = add_command(subparsers, "tune")
    p.add_argument("--task", default="adding", help="task name (default: adding)")
    p.add_argument("--length", type=whole, default=200, help="sequence length T (default 200)")
    add_task_arg(p)
    p.add_argument("--trials", type=whole, default=20, help="trials in the study (default 20)")
    p.add_argument(
        "--budget-steps", type=whole, default=300, help="training steps per trial (default 300)"
    )
    p.add_argument(
        "--storage",
        default=None,
        help="file path or Optuna storage URL: journal://, sqlite:///, postgresql://, mysql://, "
        "redis://, grpc:// (default: OUT/study.journal)",
    )
    p.add_argument("--study", default=None, help="study name (default: TASK-TLENGTH-SPACE)")
    p.add_argument("--workers", type=whole, default=1, help="local worker processes (default 1)")
    p.add_argument("--out", default=None, help="output folder (default: runs/tune/STUDY)")
    p.add_argument("--space", default="default", help="search space (see --list-spaces)")
    p.add_argument(
        "--base-recipe",
        default=None,
        help="recipe name or YAML the space starts from (the 'training' space keeps its model)",
    )
    p.add_argument("--hidden-size", type=whole, default=None, help="hidden size (default 64)")
    p.add_argument("--batch-size", type=whole, default=32, help="batch size (default 32)")
    p.add_argument(
        "--eval-every",
        type=whole,
        default=None,
        help="steps between evaluations (default budget/5)",
    )
    p.add_argument("--seed", type=whole, default=None, help="sampler and training seed")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--no-report", action="store_true", help="skip plots and report.md")
    p.add_argument("--quiet", action="store_true", help="no line per finished trial")
    p.add_argument("--list-spaces", action="store_true", help="list search spaces and exit")
    add_ray_args(p, "workers")
    add_progress_arg(p)
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    """Handler of ``rnnguard tune``."""
    from rnnguard.tune.space import list_spaces

    if args.list_spaces:
        for name, space in list_spaces().items():
            print(f"  {name:<10} {space.description}")
        return 0
    from rnnguard.tune.search import search

    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be a positive int, got {args.trials}")
    check_out_folder(args.out)
    result = search(
        args.task,
        args.length,
        args.trials,
        progress=args.progress,
        budget_steps=args.budget_steps,
        storage=args.storage,
        study=args.study,
        workers=args.workers,
        out=args.out,
        space=args.space,
        base_recipe=args.base_recipe,
        task_kwargs=task_args(args),
        hidden_size=args.hidden_size,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        seed=args.seed,
        device=args.device,
        report=not args.no_report,
        verbose=not args.quiet,
        ray=args.ray,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
    )
    rep = result.report
    if rep is not None:
        print(rep.table)
    c = result.counts
    print(
        f"study {result.study_name!r}: {c.finished} finished ({c.complete} complete, {c.pruned} pruned)"
        + (f", {c.failed} failed" if c.failed else "")
        + f"; storage {result.storage}"
    )
    if result.best_value is not None:
        where = result.best_recipe_path or "(no report written)"
        print(f"best {result.metric_name}={result.best_value:.6g}; recipe: {where}")
        if result.best_recipe_path is not None:
            print(
                f"run it: rnnguard train --recipe-file {result.best_recipe_path} "
                f"--task {args.task} --length {args.length}"
            )
    else:
        print("no trial completed: every trial was pruned or failed", file=sys.stderr)
    bad = [code for code in result.worker_exit_codes if code != 0]
    if bad:
        print(f"{len(bad)} worker(s) exited with an error (see above)", file=sys.stderr)
        return 1
    return 0 if result.best_value is not None else 1
