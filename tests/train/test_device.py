"""Device handling that matters on CUDA, checked on the CPU with the CUDA calls observed."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.train import checkpoint
from rnnguard.train.device import autocast, host_copy, resolve_amp, resolve_device, to_device


class _SpyTensor(torch.Tensor):
    """Records the keyword arguments of every ``.to`` call."""

    calls: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.to:
            cls.calls.append(dict(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


def test_copies_to_the_host_are_blocking_and_to_the_gpu_asynchronous() -> None:
    _SpyTensor.calls = []
    t = torch.zeros(2).as_subclass(_SpyTensor)
    state = {"h": (t, t)}
    to_device(state, torch.device("cpu"))
    assert [c["non_blocking"] for c in _SpyTensor.calls] == [False, False]
    _SpyTensor.calls = []
    with pytest.raises((RuntimeError, AssertionError)):  # no CUDA here; the call is what counts
        to_device(t, torch.device("cuda", 0))
    assert _SpyTensor.calls == [{"non_blocking": True}]


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"get": [], "set": []}

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        seen["get"].append(torch.device(device))
        return torch.tensor([7], dtype=torch.uint8)

    def set_rng_state(state: torch.Tensor, device: Any = "cuda") -> None:
        seen["set"].append((int(state[0]), torch.device(device)))

    def every_gpu(*args: Any) -> Any:
        raise AssertionError("must not touch every GPU's generator")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_gpu)
    return seen


def test_cuda_rng_state_is_that_of_the_training_gpu_only(fake_cuda: dict[str, Any]) -> None:
    gpu1 = torch.device("cuda", 1)
    state = checkpoint.get_rng_state(gpu1)
    assert fake_cuda["get"] == [gpu1] and int(state["cuda"][0]) == 7
    assert "cuda" not in checkpoint.get_rng_state(
        torch.device("cpu")
    )  # a CPU run has no CUDA stream to keep
    assert "cuda" not in checkpoint.get_rng_state()
    checkpoint.set_rng_state(state, gpu1)
    assert fake_cuda["set"] == [(7, gpu1)]
    # One state per GPU (as torch.cuda.get_rng_state_all gives): this GPU's entry is used.
    per_gpu = {**state, "cuda": [torch.tensor([1], dtype=torch.uint8), state["cuda"]]}
    checkpoint.set_rng_state(per_gpu, gpu1)
    assert fake_cuda["set"][-1] == (7, gpu1)
    # A CUDA checkpoint resumed on the CPU restores the host generators and skips CUDA's.
    checkpoint.set_rng_state(state, torch.device("cpu"))
    assert len(fake_cuda["set"]) == 2
    assert torch.equal(torch.get_rng_state(), state["torch"])


def test_cuda_device_per_rank(fake_cuda: dict[str, Any]) -> None:
    assert resolve_device("cuda", 1, 2) == torch.device("cuda", 1)
    assert resolve_device("auto", 1, 2) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", 1, 2) == torch.device("cuda", 1)
    assert resolve_device("cuda:3", 0, 1) == torch.device("cuda", 3)  # one process: as asked
    with pytest.raises(ConfigError, match="under torchrun"):
        resolve_device("cuda:0", 1, 2)  # both ranks on one GPU


def test_autocast_and_amp_follow_the_device_type() -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_amp("auto", cuda) == "fp16" and resolve_amp("auto", cpu) == "off"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA not available, disabling autocast"
        ac: Any = autocast(cuda, "fp16")
    assert ac.device == "cuda" and ac.fast_dtype == torch.float16
    ac = autocast(cpu, "bf16")
    assert ac.device == "cpu" and ac.fast_dtype == torch.bfloat16


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="bfloat16"):
        resolve_amp("bf16", torch.device("cuda", 0))
    assert resolve_amp("bf16", torch.device("cpu")) == "bf16"


def test_rollback_snapshots_are_host_copies() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    snap = host_copy({"model": model.state_dict(), "optimizer": opt.state_dict()})
    weight = snap["model"]["weight"]
    assert weight.device.type == "cpu" and torch.equal(weight, model.weight.detach())
    assert weight.data_ptr() != model.weight.data_ptr()  # a copy, not a view of live weights
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(weight, model.weight.detach())
    opt.load_state_dict(snap["optimizer"])  # loads back as the trainer's rollback does
    assert opt.state_dict()["param_groups"] == snap["optimizer"]["param_groups"]
