"""Shared fixtures: deterministic seeds, a small thread count, and the two fused backends.

The native C kernels are optional for a user (no compiler: the pure-PyTorch loops run), but not
for CI: where the ``CI`` environment variable is set, a failed build fails the tests that need
the kernels instead of skipping them. Only ``RNNGUARD_NATIVE=0`` (the user's opt-out) skips them
there. Every fused test records which backend ran and how many native kernel calls it made; the
summary at the end of the run adds them up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

# Tests use tiny tensors: one thread avoids oversubscription on small CI machines.
torch.set_num_threads(1)

# Without a GPU the Triton kernels' tests run under Triton's interpreter. It must be chosen before
# triton is first imported (rnnguard.nn.fused imports it indirectly, through torch.compiler).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_FALSE = ("", "0", "false", "no", "off")


def native_opted_out() -> bool:
    """The user switched the native kernels off (``RNNGUARD_NATIVE=0``)."""
    return os.environ.get("RNNGUARD_NATIVE", "").strip().lower() in ("0", "off", "false", "no")


def native_expected() -> bool:
    """The kernels must build: running on CI (``CI`` set, as CI services do) and not opted out."""
    return os.environ.get("CI", "").strip().lower() not in _FALSE and not native_opted_out()


def require_native() -> None:
    """Skip (or, where the kernels are expected, fail) a test that needs the native kernels."""
    from rnnguard.nn.fused import native

    if native.available():
        return
    if native_opted_out():
        pytest.skip("native kernels switched off (RNNGUARD_NATIVE=0)")
    why = native.build_error() or "not loaded"
    if native_expected():
        pytest.fail(f"native kernels must build where CI is set, but: {why}", pytrace=False)
    pytest.skip(f"native kernels unavailable: {why}")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Each test starts on one intra-op thread, and a test that changes the count (a trainer's
    # num_threads) does not leak it into the next one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def native_kernels() -> None:
    """For a test that only means something on the native kernels (see :func:`require_native`)."""
    require_native()


@pytest.fixture
def native_policy():  # type: ignore[no-untyped-def]
    """:func:`require_native` itself, for the test of the policy."""
    return require_native


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the native entry points looked up while the test runs (proof that they ran)."""
    from rnnguard.nn.fused import native

    calls: list[str] = []
    real = native.kernel

    def spy(lib, name, dtype):  # type: ignore[no-untyped-def]
        calls.append(name + native.SUFFIXES[dtype])
        return real(lib, name, dtype)

    monkeypatch.setattr(native, "kernel", spy)
    return calls


@contextmanager
def _backend(name: str, request: pytest.FixtureRequest, calls: list[str]) -> Iterator[str]:
    """Run the block on the named fused backend and record on the test which one ran.

    On the PyTorch backend a single native kernel call fails the test: the fallback must really
    be the fallback.
    """
    from rnnguard.nn.fused import native

    if name == "native":
        require_native()
        yield name
    else:
        with native.disabled():
            yield name
        assert not calls, f"the pure-PyTorch backend called native kernels: {sorted(set(calls))}"
    request.node.user_properties.append(("fused_backend", name))
    request.node.user_properties.append(("native_kernel_calls", len(calls)))


@pytest.fixture(params=["native", "torch"])
def fused_backend(request: pytest.FixtureRequest, kernel_calls: list[str]) -> Iterator[str]:
    """Run a fused-path test on the native kernels and on the pure-PyTorch loops.

    The pure-PyTorch loops are the fallback wherever no C compiler is found, so both must match
    the reference. The native half skips only where the user switched the kernels off or, off
    CI, where they cannot be built.
    """
    with _backend(request.param, request, kernel_calls) as name:
        yield name


@pytest.fixture(params=["reference", "fused-native", "fused-torch"])
def layer_impl(request: pytest.FixtureRequest, kernel_calls: list[str]) -> Iterator[str]:
    """The ``impl=`` to build a layer with: the reference loop, or the fused path on each backend."""
    if request.param == "reference":
        yield "reference"
        return
    with _backend(request.param.split("-", 1)[1], request, kernel_calls):
        yield "fused"


def pytest_report_header(config: pytest.Config) -> str:
    if native_opted_out():
        policy = "switched off (RNNGUARD_NATIVE=0)"
    else:
        policy = (
            "required (CI is set)" if native_expected() else "optional (skipped if unbuildable)"
        )
    return f"rnnguard native kernels: {policy}"


_ran: dict[str, list[int]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The fixture records the backend at teardown, when the kernel calls are known.
    if report.when != "teardown":
        return
    props = dict(report.user_properties)
    if "fused_backend" in props:
        tally = _ran.setdefault(str(props["fused_backend"]), [0, 0])
        tally[0] += 1
        tally[1] += int(props["native_kernel_calls"])


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _ran:
        parts = [f"{name}: {n} tests, {calls} native kernel calls" for name, (n, calls) in
                 sorted(_ran.items())]  # fmt: skip
        terminalreporter.write_line("fused backends that ran -- " + "; ".join(parts))
