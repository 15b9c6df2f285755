"""``rnnguard train`` and ``rnnguard list``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rnnguard.cli.args import add_command, add_task_arg, parse_pairs, task_args, whole
from rnnguard.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``train`` and ``list`` sub-commands."""
    p = add_command(subparsers, "train")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--recipe",
        help="registered recipe name (see `rnnguard list`; default lstm-ln-clip, or the resumed run's)",
    )
    src.add_argument("--recipe-file", help="recipe YAML file (e.g. written by `rnnguard tune`)")
    p.add_argument("--task", default=None, help="task name (default: adding, or the resumed run's)")
    p.add_argument("--length", type=whole, default=None, help="sequence length T of the task")
    p.add_argument(
        "--text",
        default=None,
        metavar="FILE",
        help="train a character language model on this UTF-8 file (the 'text' task)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with ptb-char/ for the 'ptb-char' task (default: $RNNGUARD_DATA)",
    )
    add_task_arg(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override (repeatable), e.g. --set optimizer.lr=3e-3 --set hidden_size=64",
    )
    p.add_argument("--steps", type=whole, default=None, help="training steps (default 1000)")
    p.add_argument("--batch-size", type=whole, default=None, help="batch size (default 32)")
    p.add_argument("--eval-every", type=whole, default=None, help="steps between evaluations")
    p.add_argument(
        "--eval-batches", type=whole, default=None, help="held-out batches per evaluation"
    )
    p.add_argument("--checkpoint-every", type=whole, default=None, help="steps between checkpoints")
    p.add_argument(
        "--log-every", type=whole, default=None, help="steps between logged training lines"
    )
    p.add_argument("--keep-last", type=whole, default=None, help="checkpoints kept on disk")
    p.add_argument("--seed", type=whole, default=None, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--amp",
        default=None,
        choices=("auto", "off", "fp16", "bf16"),
        help="mixed precision (default: the recipe's)",
    )
    p.add_argument(
        "--threads",
        dest="num_threads",
        type=whole,
        default=None,
        help="CPU threads for torch (1 is often fastest for small models)",
    )
    p.add_argument("--out", default=None, help="output folder for metrics and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-stop", action="store_true", help="keep training after the task is solved")
    p.add_argument(
        "--monitor-horizon",
        type=whole,
        default=None,
        metavar="N",
        help="measure the gradient horizon on a fixed batch every N steps and log it to "
        "metrics.jsonl (default: off, or the resumed run's setting)",
    )
    p.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="force the progress bar on",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run_train)

    lp = add_command(subparsers, "list")
    lp.add_argument(
        "what", nargs="?", default="all", choices=("all", "recipes", "tasks", "layers", "inits")
    )
    lp.set_defaults(func=run_list)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``rnnguard train``."""
    from rnnguard.tasks import create_task
    from rnnguard.train.config import TrainConfig
    from rnnguard.train.recipes import Recipe, get_recipe
    from rnnguard.train.trainer import fit

    # Numeric flags are validated by TrainConfig and the task, which name the offending value.
    monitor_every = args.monitor_horizon
    if monitor_every is not None and monitor_every < 1:
        raise ConfigError(f"--monitor-horizon must be a positive int, got {monitor_every}")
    saved = _saved_run(args) if args.resume else None

    # Recipe: explicit flag, else the resumed run's, else the default LSTM recipe. What a resume
    # may not change (model, task, seed) is refused by fit with the reason.
    if args.recipe_file:
        recipe = Recipe.from_yaml(Path(args.recipe_file))
    elif args.recipe:
        recipe = get_recipe(args.recipe)
    elif saved is not None:
        recipe = Recipe.from_dict(saved["recipe"])
    else:
        recipe = get_recipe("lstm-ln-clip")
    overrides = parse_pairs(args.set, "--set")
    if overrides:
        recipe = recipe.replace(**overrides)

    saved_task = (saved or {}).get("task") or {}
    implied = "text" if args.text else ("ptb-char" if args.data_dir else None)
    task_name = args.task or implied or saved_task.get("name") or "adding"
    length = args.length if args.length is not None else saved_task.get("length")
    task_kwargs = task_args(args)
    for flag, key, value, owner in (
        ("--text", "path", args.text, "text"),
        ("--data-dir", "data_dir", args.data_dir, "ptb-char"),
    ):
        if value is None:
            continue
        if task_name != owner:
            raise ConfigError(f"{flag} is for --task {owner}, got --task {task_name}")
        task_kwargs[key] = value
    if not task_kwargs and saved is not None and task_name == saved_task.get("name"):
        task_kwargs = dict(saved["config"].get("extra", {}).get("task_args", {}))
    task = create_task(task_name, length=length, **task_kwargs)

    base = TrainConfig.from_dict(saved["config"]) if saved is not None else TrainConfig()
    changes: dict[str, Any] = {}
    for name in (
        "steps",
        "batch_size",
        "eval_every",
        "eval_batches",
        "checkpoint_every",
        "keep_last",
        "log_every",
        "seed",
        "device",
        "amp",
        "out",
        "num_threads",
    ):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    changes["resume"] = bool(args.resume)
    # Kept with the run so `--resume` rebuilds the same task (e.g. a text file's path) and
    # keeps measuring the horizon.
    if monitor_every is None and saved is not None:
        monitor_every = base.extra.get("monitor_horizon")
    changes["extra"] = {**base.extra, "task_args": task_kwargs, "monitor_horizon": monitor_every}
    changes["progress"] = args.progress
    if args.no_stop:
        changes["stop_when_solved"] = False
    config = base.replace(**changes)

    callbacks: list[Any] = []
    if monitor_every is not None:
        from rnnguard.diagnose.monitor import HorizonMonitor  # only runs that ask pay for it

        callbacks.append(HorizonMonitor(every=int(monitor_every), seed=config.seed))
    try:
        result = fit(recipe, task, config, callbacks)
    finally:
        from rnnguard.train.distributed import shutdown

        shutdown()
    if _is_main_rank():
        stats = result.guard_stats
        print(
            f"{recipe.name} on {task_name}(T={getattr(task, 'length', '?')}): "
            f"{result.metric_name}={result.metric:.5g} (baseline {getattr(task, 'baseline', float('nan')):.4g}) "
            f"solved={result.solved}"
            + (f" at step {result.solved_step}" if result.solved_step else "")
            + f" steps={result.steps} explosions={stats.get('exploded', 0)} "
            f"skipped={stats.get('skipped', 0)} blowups={result.blowups} "
            f"rollbacks={result.rollbacks}"
            + (" DIVERGED" if result.diverged else "")
            + f" time={result.wall_time:.1f}s"
            + (f" out={result.out}" if result.out else "")
        )
    return 0


def _saved_run(args: argparse.Namespace) -> dict[str, Any] | None:
    """What ``--resume`` continues: the run file, else (older runs) the newest valid checkpoint.

    None when the folder holds neither and the flags say what to train (a fresh start there);
    with nothing to go on it is a one-line refusal rather than a default recipe.
    """
    from rnnguard.train.checkpoint import checkpoint_paths, latest_checkpoint
    from rnnguard.train.run_config import RUN_FILE, read_run_file

    if not args.out:
        raise ConfigError("--resume needs --out DIR naming the run to continue")
    out = Path(args.out)
    if not out.is_dir() or not os.access(out, os.R_OK | os.X_OK):
        raise ConfigError(f"--out must be a readable run folder to resume, got {args.out!r}")
    saved = read_run_file(out)
    if saved is None and checkpoint_paths(out):
        ckpt = latest_checkpoint(out)
        if ckpt is not None:
            saved = {k: ckpt[k] for k in ("recipe", "config", "task")}
    if saved is None and not any(
        (args.recipe, args.recipe_file, args.task, args.text, args.data_dir)
    ):
        raise ConfigError(
            f"--resume needs a run to continue, got {args.out!r} with no {RUN_FILE} or "
            "checkpoint; pass --recipe/--task to start one there"
        )
    return saved


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def run_list(args: argparse.Namespace) -> int:
    """Handler of ``rnnguard list``."""
    from rnnguard.nn.registry import list_layers
    from rnnguard.tasks import list_tasks
    from rnnguard.train.recipes import get_recipe, list_recipes

    layers = list_layers()
    what = args.what
    if what in ("all", "recipes"):
        print("recipes:")
        for name, info in list_recipes().items():
            try:
                layer = get_recipe(name).layer
            except Exception as exc:  # a broken third-party recipe must not break the listing
                layer = f"error: {exc}"
            note = "" if layer in layers else "  [layer not available in this build]"
            print(f"  {name:<14} {layer:<12} {info.description}{note}")
    if what in ("all", "tasks"):
        _print_described("tasks", list_tasks())
    if what in ("all", "layers"):
        _print_described("layers", layers)
    if what in ("all", "inits"):
        from rnnguard.nn.init import list_init_schemes

        _print_described("init schemes", list_init_schemes())
    return 0


def _print_described(title: str, entries: dict[str, Any]) -> None:
    """A ``title:`` line, then one line per entry: its name and its ``description``."""
    print(f"{title}:")
    for name, info in entries.items():
        print(f"  {name:<14} {info.description}")
