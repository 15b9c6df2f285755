"""Overhead of the HorizonMonitor on a training run (not a test; prints the ratio).

Trains the same recipe twice with the same seed, without and with ``HorizonMonitor(every=N)``,
and reports the monitor's share of the training time, measured two ways: the time spent inside
the monitor divided by the plain run's time (robust on a busy machine), and the wall-clock ratio
of the two runs.

    python benchmarks/monitor_overhead.py [--steps 500] [--every 100] [--length 200]
"""

from __future__ import annotations

import argparse
import time

import torch

from rnnguard.diagnose.monitor import HorizonMonitor
from rnnguard.tasks.registry import create_task
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import get_recipe
from rnnguard.train.trainer import fit


def _run(args: argparse.Namespace, monitor: HorizonMonitor | None) -> float:
    task = create_task("adding", length=args.length)
    recipe = get_recipe(args.recipe).replace(hidden_size=args.hidden)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, eval_every=0, progress=False,
        stop_when_solved=False, checkpoint_every=0, tensorboard=False, seed=0, device=args.device,
    )  # fmt: skip
    start = time.perf_counter()
    fit(recipe, task, config, [monitor] if monitor is not None else [])
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="lstm")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    plain = _run(args, None)
    monitor = HorizonMonitor(every=args.every, batch_size=8)
    monitored = _run(args, monitor)
    inside = monitor.seconds / plain
    wall = monitored / plain - 1.0
    print(
        f"recipe {args.recipe}, adding T={args.length}, hidden {args.hidden}, batch {args.batch_size}, "
        f"{args.steps} steps, horizon every {args.every} ({len(monitor.records)} measurements)"
    )
    print(f"plain run      : {plain:.2f} s")
    print(f"monitored run  : {monitored:.2f} s")
    print(f"monitor time   : {monitor.seconds:.2f} s")
    print(f"overhead ratio : {inside:.2%} (monitor time / plain run), wall-clock {wall:+.2%}")


if __name__ == "__main__":
    main()
