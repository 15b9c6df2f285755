"""``rnnguard doctor`` and ``rnnguard figure``: command-line access to the diagnostics."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnguard.cli.args import (
    add_command,
    add_progress_arg,
    check_out_file,
    check_out_folder,
    number,
    whole,
)
from rnnguard.errors import ConfigError

__all__ = ["load_factory", "register"]


def register(subparsers: Any) -> None:
    """Add the ``doctor`` and ``figure`` sub-commands."""
    p = add_command(subparsers, "doctor")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recipe", help="registered recipe name (see `rnnguard list`)")
    src.add_argument("--recipe-file", help="recipe YAML file (e.g. written by `rnnguard tune`)")
    src.add_argument(
        "--model",
        metavar="MODULE:FACTORY",
        help="your model: package.module:factory, called with no argument or with the task's spec",
    )
    src.add_argument(
        "--run",
        metavar="DIR",
        help="a finished `rnnguard train --out DIR` run: its trained model on its own task and "
        "data, with its explosion history, compared with the same model at initialisation",
    )
    p.add_argument(
        "--task", default=None, help="task name (default: adding, or the run's with --run)"
    )
    p.add_argument(
        "--length",
        type=whole,
        default=None,
        help="sequence length T (default 500, or the run's with --run)",
    )
    p.add_argument(
        "--text",
        default=None,
        metavar="FILE",
        help="diagnose on a character language model task over this UTF-8 file (the 'text' task)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with ptb-char/ for the 'ptb-char' task (default: $RNNGUARD_DATA)",
    )
    p.add_argument("--out", default=None, help="folder for report.html and diagnosis.json")
    p.add_argument(
        "--verify",
        action="store_true",
        help="train the top prescription, then the original on as many steps, and decide",
    )
    p.add_argument(
        "--verify-steps",
        type=whole,
        default=3000,
        help="most training steps per run for --verify (default 3000; it stops once solved)",
    )
    p.add_argument(
        "--verify-time",
        type=number,
        default=240.0,
        help="seconds --verify may train in all (default 240; half for the prescription)",
    )
    p.add_argument(
        "--verify-length",
        type=whole,
        default=None,
        help="task length for --verify (default: 4x the original's gradient horizon, at least 20,"
        " at most --length)",
    )
    p.add_argument("--batch-size", type=whole, default=16, help="sequences in the diagnosed batch")
    p.add_argument(
        "--hidden-size", type=whole, default=None, help="override the recipes' hidden size"
    )
    p.add_argument("--log", default=None, help="training run folder or metrics.jsonl to include")
    p.add_argument("--seed", type=whole, default=0, help="seed for the batch, init and training")
    add_progress_arg(p)
    p.set_defaults(func=_doctor)

    f = add_command(subparsers, "figure")
    fsub = f.add_subparsers(dest="figure", metavar="FIGURE")
    g = fsub.add_parser(
        "grad-norm",
        help="||dh_100/dh_{100-k}|| for recurrent matrices with spectral norm < 1, = 1, > 1",
    )
    g.add_argument(
        "--out", default="grad_norm.png", help="PNG file to write (default grad_norm.png)"
    )
    g.add_argument("--steps", type=whole, default=100, help="sequence length T (default 100)")
    g.add_argument("--hidden", type=whole, default=32, help="hidden size (default 32)")
    g.set_defaults(func=_figure_grad_norm)
    f.set_defaults(func=lambda args: _missing_figure(f))


def _missing_figure(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value}")


def load_factory(path: str) -> Any:
    """Import ``package.module:factory`` (the current folder is importable) and return the callable."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ConfigError(f"--model must look like package.module:factory, got {path!r}")
    module_name, attr = path.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the user's own folder is importable
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing user code is a bad --model
        raise ConfigError(
            f"--model: could not import module {module_name!r}: {type(exc).__name__}: {exc}".splitlines()[
                0
            ]
        ) from exc
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ConfigError(f"--model: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigError(f"--model: {path!r} is not callable (got a {type(factory).__name__})")
    return factory


def _build_user_model(factory: Any, spec: Any) -> Any:
    from torch import nn

    try:
        params = inspect.signature(factory).parameters.values()
        takes_arg = any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            for p in params
        )
    except (TypeError, ValueError):
        takes_arg = False
    model = factory(spec) if takes_arg else factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"--model factory must return a torch.nn.Module, got {type(model).__name__}"
        )
    return model


def _task_kwargs(args: argparse.Namespace, task_name: str | None) -> dict[str, Any]:
    """``--text`` / ``--data-dir`` as task arguments, checked against the task they belong to."""
    kwargs: dict[str, Any] = {}
    for flag, key, value, owner in (
        ("--text", "path", args.text, "text"),
        ("--data-dir", "data_dir", args.data_dir, "ptb-char"),
    ):
        if value is None:
            continue
        if task_name is not None and task_name != owner:
            raise ConfigError(f"{flag} is for --task {owner}, got --task {task_name}")
        kwargs[key] = value
    return kwargs


def _doctor(args: argparse.Namespace) -> int:
    import torch

    from rnnguard.diagnose.doctor import DoctorConfig, doctor
    from rnnguard.tasks.registry import create_task
    from rnnguard.train.recipes import get_recipe
    from rnnguard.utils.memory import check_batch_fits

    _positive("--length", args.length, 2)
    _positive("--verify-steps", args.verify_steps)
    _positive("--batch-size", args.batch_size)
    _positive("--hidden-size", args.hidden_size)
    check_out_folder(args.out)
    if args.text is not None and args.data_dir is not None:
        raise ConfigError("--text and --data-dir name different tasks: give one of them")
    config = DoctorConfig(batch_size=args.batch_size, seed=args.seed)
    if args.run is not None:
        return _doctor_run(args, config)
    implied = "text" if args.text else ("ptb-char" if args.data_dir else None)
    task_name = args.task or implied or "adding"
    length = args.length if args.length is not None else 500
    task_kwargs = _task_kwargs(args, task_name)
    task = create_task(task_name, length=length, **task_kwargs)
    recipe = None
    if args.recipe is not None or args.recipe_file is not None:
        from rnnguard.train.recipes import Recipe

        recipe = get_recipe(args.recipe) if args.recipe else Recipe.from_yaml(args.recipe_file)
        if args.hidden_size is not None:
            recipe = recipe.replace(hidden_size=args.hidden_size)
        torch.manual_seed(args.seed)
        model = recipe.build_model(task.spec, length=length)
        original: Any = recipe
    else:
        factory = load_factory(args.model)
        torch.manual_seed(args.seed)
        model = _build_user_model(factory, task.spec)
        spec = task.spec

        def original() -> Any:  # a fresh copy with the same initialisation for --verify
            torch.manual_seed(args.seed)
            return _build_user_model(factory, spec)

    # The diagnosed batch: an impossible size is one line, not the machine swapping.
    check_batch_fits(args.batch_size, task, recipe.hidden_size if recipe is not None else 1)
    name = recipe.name if recipe is not None and args.recipe else None
    diagnosis = doctor(
        model, task, config=config, history=args.log, recipe=name, progress=args.progress
    )
    diagnosis.task_args = task_kwargs  # prescriptions train on the same data
    if args.hidden_size is not None:  # prescriptions keep the size asked for, so runs compare
        for p in diagnosis.prescriptions:
            p.overrides = {**p.overrides, "hidden_size": args.hidden_size}
    print(diagnosis.summary())
    report = _verify(
        args,
        diagnosis,
        original,
        task,
        lambda n: create_task(task_name, length=n, **_task_kwargs(args, task_name)),
    )
    if args.out:
        from rnnguard.diagnose.report import write_report

        path = write_report(diagnosis, args.out, report)
        print(f"report: {path}")
    return 0


def _doctor_run(args: argparse.Namespace, config: Any) -> int:
    """``doctor --run DIR``: the run's trained model against the same model at initialisation."""
    from rnnguard.diagnose.run import doctor_run, load_run
    from rnnguard.utils.memory import check_batch_fits

    if args.hidden_size is not None:
        raise ConfigError("--hidden-size cannot change a trained run's model; leave it out")
    run = load_run(args.run)
    if args.task is not None and args.task != run.task_name:
        raise ConfigError(
            f"--task: the run trained on {run.task_name!r}; --run diagnoses it on its own task "
            f"(got --task {args.task})"
        )
    task_kwargs = _task_kwargs(args, run.task_name)
    task = run.build_task(task_kwargs, args.length)
    check_batch_fits(args.batch_size, task, run.recipe.hidden_size)
    result = doctor_run(
        args.run,
        config=config,
        task_args=task_kwargs,
        length=args.length,
        history=args.log,
        progress=args.progress,
    )
    print(result.trained.summary())
    print(result.comparison())
    report = _verify(
        args, result.trained, run.recipe, task, lambda n: run.build_task(task_kwargs, n)
    )
    if args.out:
        from rnnguard.diagnose.report import write_report
        from rnnguard.utils.io import atomic_write_json

        path = write_report(result.trained, args.out, report)
        init_path = Path(args.out) / "initial.json"
        atomic_write_json(init_path, json.loads(result.initial.to_json()))
        print(f"report: {path}")
        print(f"at initialisation: {init_path}")
    return 0


def _verify(
    args: argparse.Namespace,
    diagnosis: Any,
    original: Any,
    task: Any,
    make_task: Callable[[int], Any],
) -> Any:
    """``--verify``: the top prescription against the original until one is decided."""
    if not args.verify:
        return None
    if not diagnosis.prescriptions:
        print("verify: nothing to verify, the model was found healthy")
        return None
    from rnnguard.diagnose.verify import has_solved_threshold, verify, verify_length

    length = args.verify_length
    if length is None and has_solved_threshold(task):  # a language model keeps its BPTT window
        length = verify_length(diagnosis.horizons.input.horizon, task.length)
    if length is not None and length != task.length:
        task = make_task(length)
        print(
            f"verify: at T={length}, beyond the original's gradient horizon "
            f"({_h(diagnosis.horizons.input.to_dict())}), where a cure should show"
        )
    prescribed = diagnosis.prescriptions[0].build()
    report = verify(
        original, prescribed, task, steps=args.verify_steps, time_budget=args.verify_time,
        seed=args.seed, batch_size=32, progress=getattr(args, "progress", None),
    )  # fmt: skip
    for arm in (report.prescribed, report.original):
        solved = f"solved at step {arm.solved_step}" if arm.solved else "not solved"
        print(
            f"verify {arm.label} ({arm.recipe}): {solved} after {arm.steps_run} steps "
            f"({arm.wall_time:.0f} s), held-out {arm.metric_name} {arm.metric:.4g}, horizon "
            f"before {_h(arm.horizon_before)}, after {_h(arm.horizon_after)}"
        )
    print(f"verify: {report.statement}")
    return report


def _h(summary: dict[str, Any]) -> str:
    if "error" in summary:
        return "unavailable"
    h = summary.get("horizon")
    return f"{h} steps" if h is not None else f"beyond {summary.get('max_distance')} steps"


def _figure_grad_norm(args: argparse.Namespace) -> int:
    from rnnguard.diagnose.plots import grad_norm_curves, plot_grad_norm

    _positive("--steps", args.steps)
    _positive("--hidden", args.hidden)
    check_out_file(args.out, "--out")
    curves = grad_norm_curves(steps=args.steps, hidden=args.hidden)
    path = plot_grad_norm(curves, args.out)
    for label, norms in curves.items():
        print(f"{label}: ||dh_T/dh_(T-{len(norms)})|| = {norms[-1]:.3g}")
    print(f"figure: {path}")
    return 0
