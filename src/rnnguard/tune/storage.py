"""Where a study lives: parse a storage argument into an Optuna storage.

A plain path (the default is ``<out>/study.journal``) is an append-only journal file that several
local processes share safely and that survives a killed process; any Optuna storage URL
(``postgresql://...``, ``mysql://...``, ``sqlite:///...``, ``redis://...``, ``grpc://host:port``) lets
workers on several machines share one study.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnguard.errors import ConfigError, DataError, MissingExtraError, require_extra

# SQLAlchemy dialects Optuna's RDBStorage is tested with; "+driver" suffixes are allowed.
RDB_DIALECTS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
JOURNAL_SCHEMES = ("journal", "file")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
KNOWN_SCHEMES = (*JOURNAL_SCHEMES, *RDB_DIALECTS, "redis", "rediss", "grpc")


@dataclass(frozen=True)
class StorageSpec:
    """A parsed storage argument: its kind and what to open."""

    kind: str
    """``"journal"`` (local file), ``"rdb"`` (SQLAlchemy URL), ``"redis"`` or ``"grpc"``."""
    target: str
    """File path for ``journal``; the URL (or ``host:port`` for grpc) otherwise."""

    @property
    def url(self) -> str:
        """A string that :func:`parse_storage` maps back to this spec (passed to workers)."""
        if self.kind == "journal":
            return f"journal://{self.target}"
        if self.kind == "grpc":
            return f"grpc://{self.target}"
        return self.target

    @property
    def claim_lock_path(self) -> str | None:
        """A lock file serialising ticket claims, for storages whose own claim is not atomic.

        SQLite ignores ``SELECT ... FOR UPDATE``, so two processes can both move the same
        ``WAITING`` trial to ``RUNNING``; claims on a SQLite file therefore go through a file lock.
        Journal files and server databases claim atomically and need none.
        """
        if self.kind == "rdb" and self.target.startswith("sqlite:"):
            db = self.target.split(":///", 1)[-1]
            if db and db != ":memory:" and sys.platform != "win32":
                return db + ".claim.lock"
        return None

    @property
    def is_local(self) -> bool:
        """Whether the study lives in a file on this machine (no server involved)."""
        return self.kind == "journal" or self.target.startswith("sqlite:")


def parse_storage(
    storage: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str]
) -> StorageSpec:
    """Parse ``storage``; ``None`` means the journal file ``<out_dir>/study.journal``."""
    if storage is None:
        return StorageSpec("journal", str(Path(out_dir) / "study.journal"))
    if isinstance(storage, os.PathLike):
        storage = os.fspath(storage)
    if not isinstance(storage, str) or not storage.strip():
        raise ConfigError(f"storage must be a file path or a storage URL, got {storage!r}")
    text = storage.strip()
    if "://" not in text:
        # A bare path: SQLite by suffix, the crash-safe journal file otherwise.
        if text.endswith(SQLITE_SUFFIXES):
            return StorageSpec("rdb", f"sqlite:///{text}")
        return StorageSpec("journal", text)
    scheme, rest = text.split("://", 1)
    base = scheme.lower().split("+", 1)[0]
    if base in JOURNAL_SCHEMES:
        if not rest:
            raise ConfigError(f"storage {text!r} names no file; expected journal://PATH")
        return StorageSpec("journal", rest)
    if base in RDB_DIALECTS:
        return StorageSpec("rdb", text)
    if base in ("redis", "rediss"):
        return StorageSpec("redis", text)
    if base == "grpc":
        host, _, port = rest.rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"storage {text!r} must be grpc://HOST:PORT")
        return StorageSpec("grpc", f"{host}:{port}")
    raise ConfigError(
        f"storage has an unknown scheme {scheme!r} in {text!r}; expected a file path or a URL "
        f"starting with one of: {', '.join(s + '://' for s in KNOWN_SCHEMES)}"
    )


class FileLock:
    """An exclusive ``flock`` on ``path``: the kernel releases it when its holder dies.

    Optuna's default symlink lock survives a SIGKILLed holder and then blocks everyone for its
    grace period; an advisory ``flock`` cannot go stale that way.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def check_journal(path: Path) -> None:
    """Cut a torn last line (a writer killed mid-append), and name a damaged line with DataError.

    A last line without its newline never completed: Optuna skips it while it is last, but the
    next append would glue onto it and make the whole journal unreadable. Call it with the
    journal's lock held.
    """
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            fh.truncate(keep)
            data = data[:keep]
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            json.loads(line)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise DataError(
                f"study journal {str(path)!r} is damaged at line {number} ({exc}); move it "
                "aside to start the study afresh, or give another --storage"
            ) from None


def open_storage(spec: StorageSpec) -> Any:
    """Open ``spec`` as an Optuna storage object (needs the ``tune`` extra)."""
    require_extra("optuna", "tune")
    import optuna
    from optuna.storages import journal

    if spec.kind == "journal":
        path = Path(spec.target)
        if path.exists() and path.is_dir():
            raise ConfigError(f"storage {spec.target!r} is a folder; expected a journal file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock: Any = (
            journal.JournalFileOpenLock(str(path))
            if sys.platform == "win32"
            else FileLock(str(path) + ".lock")
        )
        if isinstance(lock, FileLock):
            with lock:  # writers append under this lock: no line is half-written while held
                check_journal(path)
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path), lock_obj=lock))
    if spec.kind == "rdb":
        kwargs: dict[str, Any] = {}
        if spec.target.startswith("sqlite:"):
            db = spec.target.split(":///", 1)[-1]
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            # Several local workers write to one SQLite file: wait for the lock, don't fail.
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        else:
            kwargs["engine_kwargs"] = {"pool_pre_ping": True}
        try:
            return optuna.storages.RDBStorage(spec.target, **kwargs)
        except ImportError as exc:
            raise MissingExtraError(
                f"storage {spec.target!r} needs a database driver that is not installed ({exc})"
            ) from exc
    if spec.kind == "redis":
        try:
            backend = journal.JournalRedisBackend(spec.target)
        except ImportError as exc:
            raise MissingExtraError(
                f"storage {spec.target!r} needs the 'redis' package: pip install redis"
            ) from exc
        return optuna.storages.JournalStorage(backend)
    host, _, port = spec.target.rpartition(":")
    try:
        return optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    except ImportError as exc:
        raise MissingExtraError(
            f"storage grpc://{spec.target} needs the 'grpcio' package: pip install grpcio"
        ) from exc
