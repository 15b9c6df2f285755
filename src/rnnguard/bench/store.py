"""Crash-safe result store: one JSON file per finished run, keyed by the run's spec hash.

A run's file is written atomically (temp file + rename) only once the run has finished, so a
killed benchmark loses at most the runs in flight, and a rerun skips every run already stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rnnguard.bench.grid import RunSpec
from rnnguard.errors import ConfigError
from rnnguard.utils.io import append_jsonl, atomic_write_json, read_jsonl

__all__ = ["ResultStore"]

RUNS_DIR = "runs"
MANIFEST = "bench.json"
EVENTS = "events.jsonl"


class ResultStore:
    """Results of finished runs under ``root/runs/<key>.json``, plus a manifest and an event log."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"out must be a folder, got existing file {str(self.root)!r}")
        self.runs = self.root / RUNS_DIR

    def path(self, spec: RunSpec) -> Path:
        return self.runs / f"{spec.key()}.json"

    def get(self, spec: RunSpec) -> dict[str, Any] | None:
        """The stored result of ``spec``, or None if it has not finished."""
        path = self.path(spec)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

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
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                out.append(data)
        return out

    # ------------------------------------------------------------------ manifest and events
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.root / MANIFEST, manifest)

    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def log(self, event: dict[str, Any]) -> None:
        append_jsonl(self.root / EVENTS, event)

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.root / EVENTS)
