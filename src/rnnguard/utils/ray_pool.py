"""Runs on a Ray cluster behind the same small interface as :class:`~rnnguard.utils.pool.WorkerPool`.

``submit(fn, *args)`` returns a :class:`concurrent.futures.Future`, so the benchmark runner and the
tuner drive a Ray cluster exactly as they drive local processes: the driver keeps the result store,
and every finished run is stored before the next is scheduled, so a killed driver resumes by
skipping stored runs. Ray itself is an optional extra (``pip install 'rnnguard[ray]'``).

``address``: ``"local"`` starts a private Ray instance on this machine (stopped on exit);
``"auto"`` joins the cluster this machine belongs to (``ray start`` was run); anything else is a
cluster address (``HOST:6379`` or ``ray://HOST:10001``). Every node needs rnnguard installed, and
the same version as the driver.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

from rnnguard.errors import ConfigError
from rnnguard.utils.checks import integer, number

__all__ = ["RayPool", "ray_available"]

T = TypeVar("T")


def ray_available() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class RayPool:
    """Submit calls to Ray tasks, each holding ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.

    Use it as a context manager. Leaving the block by an exception (Ctrl-C, SIGTERM, an error)
    cancels the calls still running; leaving it normally waits for them. A private instance
    (``address="local"``) is shut down on exit.

    Example:
        >>> with RayPool("local", cpus_per_run=1) as pool:  # doctest: +SKIP
        ...     print(pool.capacity, pool.submit(pow, 2, 10).result())
    """

    def __init__(
        self,
        address: str = "auto",
        *,
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
        local_cpus: int | None = None,
    ) -> None:
        if not isinstance(address, str) or not address:
            raise ConfigError(f"ray address must be 'local', 'auto' or HOST:PORT, got {address!r}")
        self.address = address
        self.cpus_per_run = number("cpus_per_run", cpus_per_run, positive=True)
        self.gpus_per_run = number("gpus_per_run", gpus_per_run, positive=True, zero_ok=True)
        self.local_cpus = None if local_cpus is None else integer("local_cpus", local_cpus, 1)
        self._refs: list[Any] = []
        self._remote: dict[Any, Any] = {}  # fn -> its Ray task, exported once
        self._started_here = False
        self._ray: Any = None

    # ------------------------------------------------------------------ lifecycle
    def _connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "--ray needs Ray: pip install 'rnnguard[ray]' (on the driver and every node)"
            ) from exc
        # Ray reads these at start-up; quiet and light by default, as a CLI tool should be.
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
        if self.address == "local":
            kwargs["num_cpus"] = self.local_cpus or os.cpu_count() or 1
            self._started_here = not ray.is_initialized()
        else:
            kwargs["address"] = self.address
        if not ray.is_initialized():
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"could not reach Ray at {self.address!r}: {first}") from exc
        self._ray = ray
        return ray

    @property
    def capacity(self) -> int:
        """How many runs the cluster can hold at once with these per-run resources."""
        resources = self._connect().cluster_resources()
        slots = int(resources.get("CPU", 0) // self.cpus_per_run)
        if self.gpus_per_run > 0:
            gpus = resources.get("GPU", 0)
            if gpus < self.gpus_per_run:
                raise ConfigError(
                    f"gpus_per_run={self.gpus_per_run:g} but the Ray cluster has {gpus:g} GPUs"
                )
            slots = min(slots, int(gpus // self.gpus_per_run))
        if slots < 1:
            raise ConfigError(
                f"cpus_per_run={self.cpus_per_run:g} does not fit the Ray cluster "
                f"({resources.get('CPU', 0):g} CPUs)"
            )
        return slots

    def submit(self, fn: Callable[..., T], *args: Any) -> cf.Future[T]:
        """Run ``fn(*args)`` as a Ray task; its result comes back through the future."""
        ray = self._connect()
        if fn not in self._remote:
            self._remote[fn] = ray.remote(fn).options(
                num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0
            )
        ref = self._remote[fn].remote(*args)
        self._refs.append(ref)
        future: cf.Future[T] = ref.future()
        return future

    def stop(self) -> None:
        """Cancel the calls still running and leave the cluster (shut down a private one)."""
        if self._ray is None:
            return
        for ref in self._refs:
            # A call that already finished or whose worker is gone has nothing to cancel.
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)
        self._close()

    def shutdown(self) -> None:
        """Wait for the submitted calls, then leave the cluster."""
        if self._ray is None:
            return
        try:
            if self._refs:
                self._ray.wait(self._refs, num_returns=len(self._refs))
        except BaseException:
            self.stop()
            raise
        self._close()

    def _close(self) -> None:
        if self._started_here:
            self._ray.shutdown()
        self._refs.clear()
        self._remote.clear()
        self._ray = None

    def __enter__(self) -> RayPool:
        self._connect()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.shutdown()
        else:
            self.stop()
