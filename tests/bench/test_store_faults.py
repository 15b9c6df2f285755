"""A benchmark folder with damaged files: bad run files are named and run again, a corrupt
manifest is named, and a folder stays bound to one preset."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from rnnguard.bench.benchmark import run_benchmark
from rnnguard.bench.grid import LengthSettings, RunSpec, get_preset
from rnnguard.bench.store import ResultStore
from rnnguard.cli import main
from rnnguard.errors import ConfigError, DataError
from rnnguard.utils.io import append_jsonl, read_jsonl


def _preset(name: str = "quick") -> Any:
    return dataclasses.replace(
        get_preset(name),
        length_tasks=(LengthSettings("adding", (4, 8), steps=3, batch_size=4, eval_every=3),),
    )


def _bench(
    out: Path, calls: list[str], lines: list[str], name: str = "quick", recipes: Any = ("lstm",)
) -> dict[str, Any]:
    def fake(spec: RunSpec) -> dict[str, Any]:
        calls.append(spec.label)
        return {"solved": True, "metric": 0.0, "steps": 3}

    return run_benchmark(_preset(name), out=out, recipes=list(recipes), tasks=["adding"], workers=1,
                         train_fn=fake, log=lines.append)  # fmt: skip


DAMAGES = [(b'{"solved": true, "note": "\xff\xfe"}', "not UTF-8"), (b'{"solved": tr', "not JSON"),
           (b"[1, 2]", "JSON list")]  # fmt: skip


def test_unreadable_run_files_are_named_and_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    _bench(tmp_path, calls, [], recipes=["lstm", "gru"])
    first = len(calls)
    victims = sorted((tmp_path / "runs").glob("*.json"))[: len(DAMAGES)]
    assert len(victims) == len(DAMAGES)
    for victim, (damage, _) in zip(victims, DAMAGES, strict=True):
        victim.write_bytes(damage)

    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0  # the report still renders, naming the files
    err, report = capsys.readouterr().err, (tmp_path / "report.md").read_text()
    assert all(str(v) in err and str(v) in report for v in victims)

    lines: list[str] = []
    calls.clear()
    summary = _bench(tmp_path, calls, lines, recipes=["lstm", "gru"])
    assert len(calls) == len(DAMAGES)  # only the damaged runs are trained again
    for victim, (_, why) in zip(victims, DAMAGES, strict=True):
        named = [line for line in lines if str(victim) in line]
        assert named and why in named[0]
        assert json.loads(victim.read_text())["solved"] is True  # stored again, whole
    assert summary["counts"] == {"trained": 3, "cached": first - 3, "errors": 0}


def test_corrupt_manifest_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bench(tmp_path, [], [])
    (tmp_path / "bench.json").write_bytes(b'{"preset": "qu')
    with pytest.raises(DataError, match=r"bench\.json is unreadable"):
        ResultStore(tmp_path).manifest()
    for argv in (["report", str(tmp_path)], ["bench", "--tasks", "adding", "--out", str(tmp_path)]):
        assert main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(tmp_path / "bench.json") in err


def test_folder_is_bound_to_one_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bench(tmp_path, [], [])
    before = (tmp_path / "bench.json").read_bytes()
    with pytest.raises(ConfigError, match="holds a 'quick' benchmark"):
        _bench(tmp_path, [], [], name="standard")
    assert (tmp_path / "bench.json").read_bytes() == before  # nothing rewritten
    assert main(["bench", "--preset", "standard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--preset quick" in err


def test_events_with_a_bad_byte_still_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "ab") as fh:
        fh.write(b'{"b": "\xff"}\n')
    append_jsonl(path, {"c": 3})
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]
