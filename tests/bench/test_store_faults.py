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


def _bench(out: Path, calls: list[str], lines: list[str], name: str = "quick") -> dict[str, Any]:
    def fake(spec: RunSpec) -> dict[str, Any]:
        calls.append(spec.label)
        return {"solved": True, "metric": 0.0, "steps": 3}

    return run_benchmark(_preset(name), out=out, recipes=["lstm"], tasks=["adding"], workers=1,
                         train_fn=fake, log=lines.append)  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "why"),
    [(b'{"solved": true, "note": "\xff\xfe"}', "not UTF-8"), (b'{"solved": tr', "not JSON"),
     (b"[1, 2]", "JSON list")],
)  # fmt: skip
def test_unreadable_run_file_is_named_and_run_again(
    tmp_path: Path, damage: bytes, why: str
) -> None:
    calls: list[str] = []
    _bench(tmp_path, calls, [])
    first = len(calls)
    victim = sorted((tmp_path / "runs").glob("*.json"))[0]
    victim.write_bytes(damage)

    lines: list[str] = []
    assert main(["report", str(tmp_path)]) == 0  # the report still renders, naming the file
    assert str(victim) in (tmp_path / "report.md").read_text()

    calls.clear()
    summary = _bench(tmp_path, calls, lines)
    assert len(calls) == 1 and first >= 1  # only the damaged run is trained again
    named = [line for line in lines if str(victim) in line]
    assert named and why in named[0]
    assert json.loads(victim.read_text())["solved"] is True  # stored again, whole
    assert summary["counts"] == {"trained": 1, "cached": first - 1, "errors": 0}


def test_report_warns_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bench(tmp_path, [], [])
    victim = sorted((tmp_path / "runs").glob("*.json"))[0]
    victim.write_bytes(b"\x80\x81")
    assert main(["report", str(tmp_path)]) == 0
    assert str(victim) in capsys.readouterr().err


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
