"""Two gloo processes under torchrun on CPU: identical parameters across ranks, exact resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    from rnnguard.tasks import create_task
    from rnnguard.train.callbacks import Callback
    from rnnguard.train.config import TrainConfig
    from rnnguard.train.recipes import get_recipe
    from rnnguard.train.trainer import fit

    class Keep(Callback):
        def on_step_end(self, ctx, record):
            self.losses = getattr(self, "losses", []) + [record["loss"]]
        def on_train_end(self, ctx, result):
            self.params = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
            self.rank, self.world = ctx.dist.rank, ctx.dist.world_size

    out_dir = sys.argv[1]
    keep = Keep()
    recipe = get_recipe("gru").replace(hidden_size=8)
    cfg = TrainConfig(steps=12, batch_size=8, eval_every=6, eval_batches=1, checkpoint_every=6,
                      progress=False, stop_when_solved=False, out=os.path.join(out_dir, "run"))
    result = fit(recipe, create_task("adding", length=10), cfg, [keep])

    # Exact resume under DDP: 6 steps, then resume to 12, against 12 uninterrupted steps.
    # The first fit joined the process group and left it up; these fits reuse it.
    assert torch.distributed.is_initialized()
    flat = recipe.replace(**{"schedule.name": "constant"})
    part = cfg.replace(eval_every=0, checkpoint_every=3)
    task = create_task("adding", length=10)
    straight = Keep()
    fit(flat, task, part.replace(out=os.path.join(out_dir, "straight")), [straight])
    fit(flat, task, part.replace(steps=6, out=os.path.join(out_dir, "split")))
    resumed = Keep()
    fit(flat, task, part.replace(out=os.path.join(out_dir, "split"), resume=True), [resumed])
    from rnnguard.train.distributed import shutdown
    shutdown()
    torch.save({"params": keep.params, "losses": keep.losses, "world": keep.world,
                "stats": result.guard_stats, "steps": result.steps,
                "straight": straight.params, "resumed": resumed.params,
                "resumed_losses": resumed.losses, "straight_losses": straight.losses},
               os.path.join(out_dir, f"rank{keep.rank}.pt"))
    """
)


def test_two_process_gloo_ddp_ends_with_identical_parameters(tmp_path: Path) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 12
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    assert r0["losses"] != r1["losses"], "both ranks drew the same batches"
    assert r0["stats"] == r1["stats"]
    for r in (r0, r1):  # each rank continued its own batch stream exactly after the resume
        assert r["resumed_losses"] == r["straight_losses"][6:]
        for k, v in r["straight"].items():
            assert torch.equal(v, r["resumed"][k]), k
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt-00000006.pt",
        "ckpt-00000012.pt",
    ]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"kind": "eval"' in ln]) == 2  # rank 0 alone writes
