"""Every shell command shown in README.md and docs/*.md runs, with shrunk budgets.

Commands are read from the ```bash (sh, shell, console) blocks of each document and run in order,
in one scratch folder per document (so ``train --resume --out runs/lstm`` continues the run the
line above started), through the real command-line entry point. Each command is either

* shrunk by :data:`SHRINK` (steps, lengths, trials and sizes made tiny; presets replaced by tiny
  ones) and run: it must exit 0;
* or listed in :data:`CANNOT_RUN` with the reason it cannot run here (a GPU, a cluster, a
  database, the network).

A command this file does not know how to shrink fails the test: add a rule for it. Commands that
take more than a few seconds even when shrunk (the benchmark) run only with ``-m slow``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnguard.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = ("bash", "sh", "shell", "console")

CANNOT_RUN: list[tuple[str, str]] = [
    (r"^python3? dev\.py ", "sets up its own virtual environment, then runs the demo or the whole "
     "suite: CI runs exactly that"),
    (r"^pip install", "installs packages from the network"),
    (r"^createdb ", "needs a PostgreSQL server"),
    (r"--storage postgresql://", "needs a PostgreSQL server"),
    (r"^torchrun ", "starts several distributed processes (tests/train/test_distributed.py runs "
     "two on CPU)"),
    (r"^ray start|--ray\b", "needs a Ray cluster, or minutes to start a private one"),
    (r"--device cuda", "needs a GPU"),
    (r"\brnnguard download ", "downloads from the network"),
]  # fmt: skip

SLOW = (r"\brnnguard (bench|report)\b", r"\brnnguard speed\b")
"""Commands that take more than a few seconds even when shrunk; run with ``-m slow``."""

# Per sub-command: flags forced to a tiny value (replaced when present, added when absent) and
# flags added. ``None`` as a value: replaced only when the command gives the flag.
SHRINK: dict[str, dict[str, str | None]] = {
    "list": {},
    "train": {"--steps": "4", "--length": "8", "--batch-size": "4", "--eval-batches": "1",
              "--eval-every": "2", "--monitor-horizon": None, "--checkpoint-every": None,
              "--no-progress": ""},
    "doctor": {"--length": "8", "--batch-size": "2", "--hidden-size": "8",
               "--verify-steps": "2"},
    "figure": {"--steps": "8", "--hidden": "4"},
    "tune": {"--trials": "2", "--budget-steps": "3", "--length": "8", "--hidden-size": "4",
             "--batch-size": "4", "--workers": "1"},
    "speed": {"--quick": "", "--sizes": "tiny", "--repeats": "1", "--no-scaling": "",
              "--no-memory": ""},
    "bench": {"--workers": "1"},
    "report": {},
}  # fmt: skip
TINY_VALUE = {"--monitor-horizon": "2", "--checkpoint-every": "2"}
NOT_WITH = {  # flags that must not be added to these forms of a command
    ("train", "--resume"): {"--length", "--batch-size", "--eval-batches", "--eval-every"},
    ("doctor", "--run"): {"--length", "--hidden-size", "--batch-size"},
    ("doctor", "--model"): {"--hidden-size"},
}


def shell_commands(doc: Path) -> Iterator[tuple[int, str]]:
    """(line number, command) for each command in ``doc``'s shell blocks; ``\\`` joins lines."""
    in_block, lang, pending, start = False, "", "", 0
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        fence = re.match(r"\s*```(\S*)", line)
        if fence:
            in_block, lang = (not in_block), fence.group(1)
            continue
        if not in_block or lang not in SHELL_BLOCKS:
            continue
        text = line.strip().removeprefix("$ ")
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        command = re.sub(r"\s+#.*$", "", pending + text).strip()
        pending = ""
        if command and not command.startswith("#"):
            yield start, command


def why_not(command: str) -> str | None:
    return next((why for pattern, why in CANNOT_RUN if re.search(pattern, command)), None)


def split_env(command: str) -> tuple[dict[str, str], list[str]]:
    """Leading ``NAME=value`` assignments and the rest of the command's words."""
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def shrink(command: str) -> list[str]:
    """The argv of a shrunk ``rnnguard`` command; fails on a command with no rule."""
    argv = split_env(command)[1]
    if argv and argv[0].endswith("/rnnguard"):  # e.g. .venv/bin/rnnguard
        argv[0] = "rnnguard"
    if not argv or argv[0] != "rnnguard":
        pytest.fail(f"no rule to run {command!r}: add it to SHRINK or CANNOT_RUN")
    sub = argv[1] if len(argv) > 1 else ""
    if sub not in SHRINK:
        pytest.fail(f"no rule to shrink `rnnguard {sub}` ({command!r}): add one to SHRINK")
    out = list(argv[1:])
    if sub == "tune" and "--study" not in out:
        # The default study name holds the length; keep the one the document's paths use.
        given = dict(itertools.pairwise(out))
        out += ["--study", f"{given.get('--task', 'adding')}-T{given.get('--length', '200')}-"
                f"{given.get('--space', 'default')}"]  # fmt: skip
    banned: set[str] = set()
    for (name, flag), flags in NOT_WITH.items():
        if name == sub and flag in out:
            banned |= flags
    for flag, value in SHRINK[sub].items():
        if flag in out:
            i = out.index(flag)
            if value is None:
                value = TINY_VALUE[flag]
            if value:  # replace the value(s) that follow the flag
                j = i + 1
                while j < len(out) and not out[j].startswith("--"):
                    j += 1
                out[i + 1 : j] = [value]
        elif value is not None and flag not in banned:
            out += [flag, value] if value else [flag]
    if sub == "train" and "--resume" not in out and "--set" not in out:
        out += ["--set", "hidden_size=8"]
    if sub == "bench" and "--preset" not in out:
        out += ["--preset", "quick"]
    return out


# ---------------------------------------------------------------------- the scratch folder
def _write_data(root: Path) -> None:
    """What the documents' placeholders name: DATA (PTB-char, MNIST), book.txt, best.yaml, a
    model factory ``mypkg.models:build``."""
    ptb = root / "DATA" / "ptb-char"
    ptb.mkdir(parents=True)
    for i, name in enumerate(("train.txt", "valid.txt", "test.txt")):
        lines = [" a b _ c a \n", " b _ < u n k > \n", " N _ a \n"] * (60 if i == 0 else 10)
        (ptb / name).write_text("".join(lines[i:] + lines[:i]), encoding="utf-8")
    mnist = root / "DATA" / "mnist"
    mnist.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 20), ("t10k", 8)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28))),
                          ("labels-idx1", np.arange(n) % 10)):  # fmt: skip
            head = bytes([0, 0, 8, arr.ndim]) + b"".join(
                int(d).to_bytes(4, "big") for d in arr.shape
            )
            (mnist / f"{stem}-{kind}-ubyte").write_bytes(head + arr.astype(np.uint8).tobytes())
    (root / "book.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    from rnnguard.train.recipes import get_recipe

    get_recipe("gru").replace(hidden_size=8).to_yaml(root / "best.yaml")
    pkg = root / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        "import torch\n\n\n"
        "class Model(torch.nn.Module):\n"
        "    def __init__(self, spec):\n"
        "        super().__init__()\n"
        "        self.rnn = torch.nn.GRU(spec.input_size, 8, batch_first=True)\n"
        "        self.head = torch.nn.Linear(8, spec.output_size)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.rnn(x)[0])\n\n\n"
        "def build(spec):\n"
        "    return Model(spec)\n"
    )


def _tiny_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every benchmark preset at toy sizes (same tasks and recipes, a handful of steps)."""
    from rnnguard.bench import grid
    from rnnguard.bench.grid import LengthSettings, LMSettings, SingleSettings

    def tiny(preset: Any) -> Any:
        return dataclasses.replace(
            preset,
            recipes=("gru", "lstm"),
            length_tasks=tuple(
                LengthSettings(s.task, (2, 4), steps=2, batch_size=2, eval_every=2, eval_batches=1)
                for s in preset.length_tasks
            ),
            lm=LMSettings(length=6, steps=2, batch_size=2, eval_tokens=60, steps_per_epoch=2),
            single_tasks=tuple(  # MNIST runs are asked for by name: tiny ones for each
                SingleSettings(task, 28, steps=2, batch_size=2, eval_limit=4)
                for task in ("smnist", "pmnist")
            ),
            hidden_size=4,
            lm_hidden_size=4,
        )

    monkeypatch.setattr(grid, "PRESETS", {k: tiny(p) for k, p in grid.PRESETS.items()})


def _run_document(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: bool) -> int:
    _write_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RNNGUARD_DATA", raising=False)
    monkeypatch.setenv("RNNGUARD_NO_PROGRESS", "1")
    _tiny_presets(monkeypatch)
    ran = 0
    for number, command in shell_commands(doc):
        if why_not(command) is not None:
            continue
        if not slow and any(re.search(p, command) for p in SLOW):
            continue
        argv = shrink(command)
        with monkeypatch.context() as env:
            for name, value in split_env(command)[0].items():
                env.setenv(name, value)
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse rejected the shrunk command
                code = exc.code if isinstance(exc.code, int) else 2
        assert code == 0, f"{doc.name}:{number}: `{command}` (run as {argv}) exited {code}"
        ran += 1
    return ran


# ---------------------------------------------------------------------- the tests
def test_every_command_has_a_rule() -> None:
    """Classify every command without running it: a new command without a rule fails here."""
    seen = 0
    for doc in DOCUMENTS:
        for _, command in shell_commands(doc):
            seen += 1
            if why_not(command) is None:
                shrink(command)
    assert seen >= 30, f"found only {seen} commands: is the block parser still right?"


def test_the_readme_example_is_parsed_as_written() -> None:
    commands = [c for _, c in shell_commands(ROOT / "README.md")]
    assert (
        "rnnguard train --recipe-file best.yaml --task copy --length 100 --set optimizer.lr=3e-3"
        in commands
    )
    assert any(c.startswith("rnnguard tune") and "--storage postgresql://" in c for c in commands)
    argv = shrink(
        "rnnguard tune --task adding --length 500 --trials 40 --workers 2 --out runs/tune"
    )
    assert argv[argv.index("--trials") + 1] == "2" and argv[argv.index("--length") + 1] == "8"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_document_commands_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run_document(doc, tmp_path, monkeypatch, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_document_commands_run_with_the_benchmark(
    doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_document(doc, tmp_path, monkeypatch, slow=True)
