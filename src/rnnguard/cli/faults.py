"""One line for the faults of an ordinary day: file-system errors and running out of memory.

Every command's exceptions pass through :func:`describe`; what it recognises becomes one line on
stderr naming the path (or the arguments that set the size) instead of a traceback.
"""

from __future__ import annotations

import errno
import re

__all__ = ["OOM_HINT", "describe", "is_out_of_memory"]

OOM_HINT = "lower --batch-size, --length or the hidden size"

_WHY = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "exists and is not a folder",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
}


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (Python's MemoryError, or torch's on CPU or GPU)."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError / cuda's
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _os_line(exc: OSError) -> str:
    path = exc.filename2 if exc.errno == errno.EISDIR and exc.filename2 else exc.filename
    why = _WHY.get(exc.errno or -1) or (exc.strerror or type(exc).__name__).lower()
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why += "; files written before are intact"
    return f"{str(path)!r}: {why}" if path is not None else why


def describe(exc: BaseException) -> str | None:
    """The one-line message for a file-system or out-of-memory fault; None for anything else."""
    if is_out_of_memory(exc):
        asked = re.search(r"tried to allocate (\d+) bytes", str(exc))
        size = f" allocating {int(asked.group(1)) / 2**30:,.1f} GiB" if asked else ""
        return f"out of memory{size}; {OOM_HINT}"
    if isinstance(exc, OSError):
        return _os_line(exc)
    return None
