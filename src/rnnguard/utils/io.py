"""Crash-safe file writing: every file is written to a temp file and renamed into place.

A write that fails (no space left, no permission, a folder where the file should be) leaves the
file as it was, and raises an ``OSError`` whose ``filename`` is the file that was being written,
not the temp file.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write via ``write(fileobj)`` to a temp file in the same folder, fsync, then rename."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file path", str(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _naming(exc, target.parent) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)  # atomic on POSIX and Windows
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, target) from None
        raise
    return target


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``filename`` set to ``path`` (what the user asked for), same type and errno."""
    if exc.errno is None:
        return exc
    if exc.errno == errno.EEXIST and exc.filename is not None:
        path = Path(exc.filename)  # mkdir met a file: that file is the culprit
    named = type(exc)(exc.errno, exc.strerror, str(path))
    named.__traceback__ = exc.__traceback__
    return named


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically replace ``path`` with ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` that never leaves a half-written file behind."""
    import torch

    # Serialised in memory first: torch turns a failed write into a RuntimeError that no longer
    # says why (disk full, permission); a plain file write keeps the OSError.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return _atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))


# Strict JSON has no NaN or infinities: they are written as these strings and read back as floats.
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by its name in :data:`_NONFINITE`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def _restore_nonfinite(obj: Any) -> Any:
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    if isinstance(obj, dict):
        return {k: _restore_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore_nonfinite(v) for v in obj]
    return obj


def json_line(record: dict[str, Any]) -> str:
    """One strict-JSON line (non-finite numbers spelled as strings), newline included."""
    return json.dumps(_finite_json(record), sort_keys=True, default=str, allow_nan=False) + "\n"


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and fsync, so a killed process loses at most the line in flight."""
    target = Path(path)
    line = json_line(record)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _naming(exc, target) from None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, ignoring a torn last line left by a killed writer.

    Non-finite numbers written by :func:`append_jsonl` come back as floats.
    """
    target = Path(path)
    if not target.exists():
        return []
    records: list[dict[str, Any]] = []
    for raw in target.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            records.append(_restore_nonfinite(json.loads(raw.decode("utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # torn write from a crash: the record is simply lost
    return records
