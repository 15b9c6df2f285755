"""A tiny version of the quick preset end to end: every column filled for every recipe, the
report files, re-rendering, and the CLI's one-line errors."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnguard.bench.benchmark import run_benchmark
from rnnguard.bench.grid import LengthSettings, LMSettings, RunSpec, SingleSettings, get_preset
from rnnguard.bench.report import COLUMNS
from rnnguard.bench.store import ResultStore
from rnnguard.cli import main
from rnnguard.errors import DataError


def write_ptb(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("train.txt", "valid.txt", "test.txt")):
        lines = [" a b _ c a \n", " b _ < u n k > \n", " N _ a \n"] * (60 if i == 0 else 10)
        (folder / name).write_text("".join(lines[i:] + lines[:i]), encoding="utf-8")
    return folder


def write_mnist(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(20) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(8) % 10,
    }
    for name, arr in arrays.items():
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (folder / name).write_bytes(header + arr.astype(np.uint8).tobytes())
    return folder


def tiny_preset() -> object:
    return dataclasses.replace(
        get_preset("quick"),
        name="tiny",
        length_tasks=(
            LengthSettings("adding", (4, 8), steps=3, batch_size=4, eval_every=3, eval_batches=1),
            LengthSettings("copy", (2,), steps=2, batch_size=4, eval_every=2, eval_batches=1),
        ),
        lm=LMSettings(length=6, steps=3, batch_size=2, eval_tokens=60, steps_per_epoch=2),
        hidden_size=8,
        lm_hidden_size=8,
        single_tasks=(SingleSettings("smnist", 28, steps=2, batch_size=4, eval_limit=8),),
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench")
    data = write_ptb(root / "data" / "ptb-char")
    write_mnist(root / "data" / "mnist")
    out = root / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread avoids contention on a shared machine
    try:
        summary = run_benchmark(tiny_preset(), out=out, data_dir=data.parent, workers=1, log=None,
                                command="test")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert summary["counts"]["errors"] == 0, [
        e for e in ResultStore(out).events() if e["event"] == "error"
    ]
    return out, summary


def test_every_column_filled_for_every_recipe(tiny_run: tuple[Path, dict]) -> None:
    from rnnguard.train.recipes import list_recipes

    _, summary = tiny_run
    rows = {r["recipe"]: r for r in summary["rows"]}
    assert set(rows) == set(list_recipes())  # every registered recipe, LRU and Transformer included
    for recipe, row in rows.items():
        for key, header in COLUMNS:
            value = row.get(key, "")
            assert value and value not in ("n/a", "incomplete", "not run"), (recipe, header, value)
            assert "n/a" not in value and "failed" not in value, (recipe, header, value)
        float(row["bpc_valid"].split()[0]), float(row["bpc_test"])
        runs, steps, seconds = re.fullmatch(
            r"(\d+) runs, (\d+) steps, ([\d.]+)", row["wall"]
        ).groups()
        assert int(runs) >= 3 and int(steps) >= int(runs) and float(seconds) > 0
    assert summary["complete"]
    # MNIST, run once per recipe, has its own table with a measured accuracy per recipe.
    singles = summary["single_rows"]
    assert {r["recipe"] for r in singles} == set(rows) and {r["task"] for r in singles} == {
        "smnist"
    }
    for r in singles:
        assert 0.0 <= float(r["accuracy"]) <= 100.0
    # The guide's claims appear only in their own column, for the four rows it has.
    assert rows["vanilla"]["guide"] == "20 / 1.57 / 47"
    assert rows["lru"]["guide"] == "–"


def test_report_files_and_rerender(
    tiny_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = tiny_run
    md = (out / "report.md").read_text()
    assert "not measured" in md and "| vanilla |" in md and "## Sequential / permuted MNIST" in md
    # The appendix lists every stored run, each pointing at its own file.
    stored = sorted(p.name for p in (out / "runs").glob("*.json"))
    listed = sorted(r["key"].removeprefix("runs/") for r in tiny_run[1]["run_rows"])
    assert listed == stored and "## Every run behind the table" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # plots are inline: the page stands alone
    assert "src='plots/" not in page
    assert (out / "plots" / "effective_length.png").stat().st_size > 1000
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert "| lstm |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and len(summary["rows"]) == len(summary["manifest"]["searches"]) // 2


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("RNNGUARD_DATA", raising=False)
    empty = tmp_path / "nodata"
    empty.mkdir()
    code = main(
        ["bench", "--tasks", "ptb-char", "--data-dir", str(empty), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(empty) in err and "rnnguard download ptb-char" in err
    assert main(["bench", "--recipes", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["bench", "--preset", "huge"]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "bench.json" in capsys.readouterr().err


def test_parallel_workers_and_resume(tmp_path: Path) -> None:
    preset = dataclasses.replace(tiny_preset(), lm=None)  # type: ignore[type-var]
    lines: list[str] = []
    first = run_benchmark(preset, out=tmp_path, recipes=["vanilla", "lru"], tasks=["adding"],
                          workers=2, log=lines.append)  # fmt: skip
    # Three steps solve nothing: one run per recipe at the first length, and the search stops.
    assert first["counts"] == {"trained": 2, "cached": 0, "errors": 0}
    runs = sorted((r["recipe"], r["length"], r["seed"]) for r in first["run_rows"])
    assert runs == [("lru", "4", "0"), ("vanilla", "4", "0")]
    stored = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert sorted(r["key"].removeprefix("runs/") for r in first["run_rows"]) == stored
    assert {r["recipe"] for r in first["rows"]} == {"vanilla", "lru"}
    assert first["rows"][0]["bpc_valid"] == "no data"
    again = run_benchmark(preset, out=tmp_path, recipes=["vanilla", "lru"], tasks=["adding"],
                          workers=2, log=lines.append)  # fmt: skip
    assert (
        again["counts"]["trained"] == 0 and again["counts"]["cached"] == first["counts"]["trained"]
    )
    assert any("cached" in line for line in lines)
    assert again["rows"] == first["rows"]


def test_quick_uses_the_built_in_language(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnguard.bench.plan import plan_preset

    monkeypatch.delenv("RNNGUARD_DATA", raising=False)
    plan = plan_preset(get_preset("quick"))
    assert plan.lm_task == "synthlang" and plan.lm_runs is not None
    kwargs = dict(plan.lm_specs[0].task_kwargs)
    assert kwargs["distances"] == (2, 8, 32) and plan.lm_note == ""
    assert len(plan.searches) == 2 * len(plan.recipes)  # synthetic tasks always run


def test_standard_falls_back_to_the_built_in_language_without_ptb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rnnguard.bench.plan import plan_preset

    monkeypatch.delenv("RNNGUARD_DATA", raising=False)
    plan = plan_preset(get_preset("standard"))
    assert plan.lm_task == "synthlang"
    assert "PTB-char not found" in plan.lm_note and "RNNGUARD_DATA" in plan.lm_note
    with pytest.raises(DataError, match="RNNGUARD_DATA"):  # asked for by name: no substitute
        plan_preset(get_preset("standard"), tasks=["adding", "ptb-char"])


@pytest.mark.slow
def test_quick_preset_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job, as a user runs it (minutes; PTB-char only if RNNGUARD_DATA is set)."""
    import time

    t0 = time.time()
    assert main(["bench", "--preset", "quick", "--out", str(tmp_path)]) == 0
    assert time.time() - t0 < 600
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"]
    for row in summary["rows"]:
        for key, header in COLUMNS:
            assert row[key] and row[key] not in ("n/a", "incomplete"), (row["recipe"], header)
    assert "| transformer |" in capsys.readouterr().out


def test_table_cells_from_a_fake_trainer(tmp_path: Path) -> None:
    """Known outcomes in, exact cells out: the report shows what the runs measured."""
    data = write_ptb(tmp_path / "data" / "ptb-char")
    limits = {"vanilla": 4, "lstm": 8, "gru": 0}

    def fake(s: RunSpec) -> dict:
        if s.recipe == "indrnn-relu":  # seed 0 solves everything, seed 1 fails at 8
            solved = not (s.length == 8 and s.seed == 1)
        else:
            solved = s.length <= limits[s.recipe]
        valid = 9.0 if s.recipe == "vanilla" else 1.5  # vanilla: worse than the unigram model
        blown = s.recipe == "vanilla" and s.task == "ptb-char"  # its language model blew up
        return {"solved": solved, "blowups": 12 if blown else 0, "rollbacks": 3 if blown else 0,
                "diverged": blown, "solved_step": 10 * s.length if solved else None,
                "metric": 0.0, "metrics": {"valid_bpc": valid, "test_bpc": 1.625}, "num_params": 7,
                "wall_time": 0.5, "explosions_total": 3, "explosions_per_epoch": 1.5, "steps": 100,
                "baseline": 4.0}  # fmt: skip

    summary = run_benchmark(tiny_preset(), out=tmp_path / "out", data_dir=data.parent, workers=1,
                            recipes=["vanilla", "lstm", "gru", "indrnn-relu"], train_fn=fake,
                            log=None)  # type: ignore[arg-type]  # fmt: skip
    rows = {r["recipe"]: r for r in summary["rows"]}
    assert rows["vanilla"]["eff_adding"] == "4" and rows["vanilla"]["steps_to_solve"] == "40 (T=4)"
    assert rows["lstm"]["eff_adding"] == "≥8 (grid max)"
    assert rows["gru"]["eff_adding"] == "<4" and rows["gru"]["steps_to_solve"] == "never solved"
    assert rows["indrnn-relu"]["eff_adding"] == "4 (seed 0: 8)"
    assert rows["lstm"]["bpc_valid"] == "1.500" and rows["lstm"]["bpc_test"] == "1.625"
    assert rows["vanilla"]["bpc_valid"] == "9.000 (worse than unigram 4.000)"
    assert rows["lstm"]["explosions"] == "1.50" and rows["lstm"]["params"] == "7 / 7"
    assert rows["lstm"]["horizon"] == "n/a"  # the fake trainer measured none: said, not invented
    runs = {r: sum(1 for v in summary["run_rows"] if v["recipe"] == r) for r in rows}
    assert rows["vanilla"]["blowups"] == f"12 / 3 / 1 of {runs['vanilla']}"
    assert rows["lstm"]["blowups"] == f"0 / 0 / 0 of {runs['lstm']}"


def test_synthlang_cell_shows_floor_and_memory() -> None:
    from rnnguard.bench.summary import _memory_text

    metrics = {"valid_bpc": 0.62, "floor_bpc": 0.412, "memory_d32": 0.62, "memory_d2": 0.957,
               "memory_d8": 0.79}  # fmt: skip
    assert _memory_text(metrics) == "; memory at d=2/8/32: 0.96/0.79/0.62"
    assert _memory_text({"valid_bpc": 1.0}) == ""


def test_sub_second_training_time_is_not_printed_as_zero() -> None:
    # A fast machine trains a tiny recipe in hundredths of a second: the table still shows it.
    from rnnguard.bench.summary import _fmt_seconds

    assert _fmt_seconds(0.0421) == "0.042" and _fmt_seconds(12.34) == "12.3"
    assert float(_fmt_seconds(0.004)) > 0
