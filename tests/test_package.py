"""The package root and the command-line entry point."""

from __future__ import annotations

import pytest

import rnnguard
from rnnguard.cli import build_parser, main


def test_public_names_resolve() -> None:
    missing = [name for name in rnnguard.__all__ if not hasattr(rnnguard, name)]
    assert missing == []


def test_every_area_registers_its_commands() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {
        "train",
        "list",
        "doctor",
        "figure",
        "bench",
        "report",
        "download",
        "tune",
        "speed",
    } <= set(commands)


def test_every_command_has_its_text_and_the_presets_are_all_named() -> None:
    from rnnguard.bench.grid import PRESETS
    from rnnguard.cli.args import COMMANDS

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == set(COMMANDS)  # no command without its summary, no stale summary
    for name, sub in commands.items():
        summary, description = COMMANDS[name]
        assert summary and sub.description == (description or None)
    preset = next(a for a in commands["bench"]._actions if a.dest == "preset")
    assert all(name in preset.help for name in PRESETS), preset.help


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: rnnguard" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert rnnguard.__version__ in capsys.readouterr().out
