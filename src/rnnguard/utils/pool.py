"""One process pool for benchmark runs and tuning workers.

Workers are *spawned*, not forked (forking a parent that already started torch's thread pools can
deadlock the child), and they never outlive the process that started them:

* They die with their parent, SIGKILL included: on Linux the kernel sends them SIGTERM when the
  parent goes (``PR_SET_PDEATHSIG``); everywhere a watchdog thread notices that the parent is gone
  (the parent pid changes) and does the same.
* SIGTERM stops a worker cleanly: an idle worker exits at once; a busy one gets a
  ``KeyboardInterrupt`` in its task, so the task's own clean-up runs (a tuning trial is marked
  failed, not left running), and it exits; after :data:`STOP_GRACE_S` it exits regardless.
* Ctrl-C is the parent's to handle: workers ignore SIGINT, and the parent's pool stops them.
* While a pool is open in the main thread, SIGTERM to the parent raises :class:`Terminated` (a
  ``KeyboardInterrupt``), so the parent's clean-up runs too instead of dying mid-way.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Any, TypeVar

from rnnguard.utils.checks import positive_int

__all__ = ["STOP_GRACE_S", "Terminated", "WorkerPool", "raise_terminated"]

T = TypeVar("T")

STOP_GRACE_S = 3.0
"""Seconds a stopping worker gets to finish its clean-up before it exits regardless."""
_WATCH_EVERY_S = 0.5
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM received; a ``KeyboardInterrupt`` so every interrupt clean-up path runs for it."""


# ---------------------------------------------------------------------- worker side
_busy = False  # a task is running in this worker
_stopping = False  # a stop was asked (SIGTERM, or the parent died)


def _exit_now(code: int = _EXIT_TERMINATED) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _stopping
    if _stopping:
        return  # already stopping; the grace timer bounds it
    _stopping = True
    if not _busy:
        _exit_now()
    # A hard deadline, in case the task is stuck where the interrupt cannot reach it.
    threading.Timer(STOP_GRACE_S, _exit_now).start()
    raise KeyboardInterrupt


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_EVERY_S)
    # Re-parented: the parent died without stopping us. Stop as SIGTERM would.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_S + 1.0)
    _exit_now()


def _ask_kernel_for_death_signal() -> None:
    """Linux: have the kernel send SIGTERM to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the watchdog thread still covers it
        pass


def _init_worker(parent_pid: int, threads: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _ask_kernel_for_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        _exit_now()
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="rnnguard-parent-watch", daemon=True
    ).start()
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


def _run_task(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _busy
    if _stopping:
        _exit_now()
    _busy = True
    try:
        return fn(*args)
    except KeyboardInterrupt:
        if _stopping:  # the task has cleaned up after itself; nobody waits for a result
            _exit_now()
        raise
    finally:
        _busy = False


# ---------------------------------------------------------------------- parent side
def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler raising :class:`Terminated`."""
    raise Terminated


class WorkerPool:
    """``workers`` spawned processes running submitted calls; use it as a context manager.

    Leaving the ``with`` block normally waits for the submitted calls; leaving it by an exception
    (``KeyboardInterrupt``, :class:`Terminated`, an error) stops the workers first (SIGTERM, then
    SIGKILL after :data:`STOP_GRACE_S`). Functions and arguments must be picklable.

    Example:
        >>> with WorkerPool(2) as pool:  # doctest: +SKIP
        ...     futures = [pool.submit(pow, 2, n) for n in range(4)]
        ...     print([f.result() for f in futures])
    """

    def __init__(self, workers: int, *, threads: int | None = None) -> None:
        self.workers = positive_int("workers", workers)
        if threads is not None:
            positive_int("threads", threads)
        self._threads = threads
        self._executor = self._new_executor()
        self._old_sigterm: Any = None
        self._closed = False

    def _new_executor(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(), self._threads),
        )

    def submit(self, fn: Callable[..., T], *args: Any) -> cf.Future[T]:
        """Run ``fn(*args)`` in a worker.

        A worker that died (killed for memory, say) fails the calls it had, whose futures raise
        ``BrokenProcessPool``; the pool then starts fresh workers for the calls that follow.
        """
        try:
            return self._executor.submit(_run_task, fn, args)
        except BrokenProcessPool:
            self._stop_executor(self._executor, grace=0.0)
            self._executor = self._new_executor()
            return self._executor.submit(_run_task, fn, args)

    def pids(self) -> list[int]:
        """Process ids of the workers started so far."""
        procs = getattr(self._executor, "_processes", None) or {}
        return [p.pid for p in procs.values() if p.pid is not None]

    def shutdown(self) -> None:
        """Wait for the submitted calls, then let the workers exit."""
        if self._closed:
            return
        try:
            self._executor.shutdown(wait=True)
        except BaseException:  # interrupted while waiting: stop the workers, not just us
            self.stop()
            raise
        self._closed = True

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop the workers now: SIGTERM (a clean stop), then SIGKILL for any left after ``grace``."""
        if self._closed:
            return
        self._closed = True
        self._stop_executor(self._executor, grace)

    @staticmethod
    def _stop_executor(executor: cf.ProcessPoolExecutor, grace: float) -> None:
        # ``_processes`` is the executor's own table of its workers; it has no public handle.
        procs = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)

    def __enter__(self) -> WorkerPool:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._old_sigterm = signal.signal(signal.SIGTERM, raise_terminated)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.shutdown()
            else:
                self.stop()
        finally:
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)
                self._old_sigterm = None
