"""Atomic writers: complete files, readable modes, torn JSON lines ignored."""

from __future__ import annotations

import json
import os
import stat

from rnnguard.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_written_files_have_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a") as fh:
        fh.write('{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def test_jsonl_is_strict_json_and_non_finite_numbers_come_back(tmp_path):
    import math

    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"loss": float("nan"), "norm": float("inf"), "low": -math.inf, "x": 1.5})
    append_jsonl(path, {"curve": [1.0, float("nan")], "name": "NaN-free text"})

    def no_constants(token):
        raise AssertionError(f"bare {token} is not JSON")

    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=no_constants)
    first, second = read_jsonl(path)
    assert math.isnan(first["loss"]) and first["norm"] == math.inf and first["low"] == -math.inf
    assert first["x"] == 1.5 and math.isnan(second["curve"][1])
    assert second["name"] == "NaN-free text"
