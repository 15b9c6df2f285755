"""Storage argument parsing and opening."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnguard.errors import ConfigError
from rnnguard.tune.storage import open_storage, parse_storage

pytest.importorskip("optuna")


def test_default_is_a_journal_file_in_the_output_folder(tmp_path: Path) -> None:
    spec = parse_storage(None, tmp_path / "out")
    assert spec.kind == "journal"
    assert Path(spec.target) == tmp_path / "out" / "study.journal"
    assert spec.is_local
    # The URL form travels to worker processes and must parse back to the same spec.
    assert parse_storage(spec.url, "ignored") == spec


@pytest.mark.parametrize(
    ("arg", "kind", "target"),
    [
        ("runs/s.journal", "journal", "runs/s.journal"),
        ("journal:///abs/s.log", "journal", "/abs/s.log"),
        ("file://rel/s.log", "journal", "rel/s.log"),
        ("runs/s.db", "rdb", "sqlite:///runs/s.db"),
        ("sqlite:///x.sqlite3", "rdb", "sqlite:///x.sqlite3"),
        (
            "postgresql+psycopg2://u:p@db:5432/optuna",
            "rdb",
            "postgresql+psycopg2://u:p@db:5432/optuna",
        ),
        ("mysql://u@h/db", "rdb", "mysql://u@h/db"),
        ("redis://h:6379/0", "redis", "redis://h:6379/0"),
        ("grpc://tuner:13000", "grpc", "tuner:13000"),
    ],
)
def test_parse_known_forms(arg: str, kind: str, target: str) -> None:
    spec = parse_storage(arg, ".")
    assert (spec.kind, spec.target) == (kind, target)
    assert parse_storage(spec.url, ".") == spec


@pytest.mark.parametrize("arg", ["ftp://host/x", "mongodb://h/db", "s3://bucket/key"])
def test_unknown_scheme_is_a_clear_error(arg: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_storage(arg, ".")
    msg = str(info.value)
    assert "storage" in msg and arg in msg and "postgresql://" in msg and "journal://" in msg


@pytest.mark.parametrize("arg", ["", "  ", "grpc://nohostport", "journal://"])
def test_malformed_storage_is_rejected(arg: str) -> None:
    with pytest.raises(ConfigError, match="storage"):
        parse_storage(arg, ".")


def test_open_journal_and_sqlite(tmp_path: Path) -> None:
    import optuna

    for arg in (tmp_path / "a" / "s.journal", f"sqlite:///{tmp_path}/b/s.db"):
        storage = open_storage(parse_storage(arg, tmp_path))
        study = optuna.create_study(storage=storage, study_name="s")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        again = optuna.load_study(
            study_name="s", storage=open_storage(parse_storage(arg, tmp_path))
        )
        assert len(again.trials) == 2


def test_folder_as_journal_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder"):
        open_storage(parse_storage(str(tmp_path), "."))
