"""Crash-safe result store: one JSON file per finished run, keyed by the run's spec hash.

A run's file is written atomically (temp file + rename) only once the run has finished, so a
killed benchmark loses at most the runs in flight, and a rerun skips every run already stored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnguard.bench.grid import RunSpec
from rnnguard.errors import ConfigError, DataError
from rnnguard.utils.io import append_jsonl, atomic_write_json, read_jsonl

__all__ = ["ResultStore"]

RUNS_DIR = "runs"
MANIFEST = "bench.json"
EVENTS = "events.jsonl"

_log = logging.getLogger(__name__)


def _load_json(path: Path) -> Any:
    """``path``'s JSON; ``FileNotFoundError`` when absent, ``ValueError`` (with why) when unreadable."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc


class ResultStore:
    """Results of finished runs under ``root/runs/<key>.json``, plus a manifest and an event log."""

    def __init__(
        self, root: str | os.PathLike[str], warn: Callable[[str], None] | None = None
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"out must be a folder, got existing file {str(self.root)!r}")
        self.runs = self.root / RUNS_DIR
        self.warn = warn or _log.warning
        """Told about every unreadable run file (it is treated as not finished)."""
        self.unreadable: dict[Path, str] = {}
        """Run files that could not be read, and why."""

    def _read_run(self, path: Path, consequence: str) -> dict[str, Any] | None:
        try:
            data = _load_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            why = str(exc)
        else:
            if isinstance(data, dict):
                return data
            why = f"a JSON {type(data).__name__}, not an object"
        if path not in self.unreadable:
            self.unreadable[path] = why
            self.warn(f"unreadable run file {path} ({why}); {consequence}")
        return None

    def path(self, spec: RunSpec) -> Path:
        return self.runs / f"{spec.key()}.json"

    def get(self, spec: RunSpec) -> dict[str, Any] | None:
        """The stored result of ``spec``, or None if it has not finished."""
        return self._read_run(self.path(spec), "the run is trained again")

    def has(self, spec: RunSpec) -> bool:
        return self.get(spec) is not None

    def put(self, spec: RunSpec, result: dict[str, Any]) -> Path:
        """Store a finished run (atomically)."""
        record = {**result, "key": spec.key(), "spec": spec.to_dict()}
        return atomic_write_json(self.path(spec), record)

    def all(self) -> list[dict[str, Any]]:
        """Every stored run, in key order."""
        if not self.runs.is_dir():
            return []
        out = []
        for path in sorted(self.runs.glob("*.json")):
            data = self._read_run(path, "left out until `rnnguard bench` runs it again")
            if data is not None:
                out.append(data)
        return out

    # ------------------------------------------------------------------ manifest and events
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.root / MANIFEST, manifest)

    def manifest(self) -> dict[str, Any]:
        """The benchmark's manifest (``{}`` when there is none); raises DataError when unreadable."""
        path = self.root / MANIFEST
        if not path.is_file():
            return {}
        try:
            data = _load_json(path)
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0]
        else:
            if isinstance(data, dict):
                return data
            why = f"a JSON {type(data).__name__}, not an object"
        raise DataError(
            f"benchmark manifest {path} is unreadable ({why}); delete it and rerun `rnnguard "
            "bench` with the folder's preset to write it again (finished runs are kept)"
        )

    def log(self, event: dict[str, Any]) -> None:
        append_jsonl(self.root / EVENTS, event)

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.root / EVENTS)
