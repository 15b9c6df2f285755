"""Sequential / permuted MNIST from small generated IDX files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnguard.errors import ConfigError, DataError
from rnnguard.tasks.mnist import SequentialMNIST, find_mnist_dir, read_idx
from rnnguard.tasks.registry import create_task, list_tasks


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 12, compress: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([3, 3, 3, 1, 2, 3, 0, 5, 3, 9, 8, 7][:n_test]),
    }
    for name, arr in data.items():
        raw = idx_bytes(np.asarray(arr))
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


class ConstantClass(torch.nn.Module):
    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = torch.zeros(x.shape[0], x.shape[1], 10)
        out[..., self.cls] = 5.0
        return out, None


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reading(tmp_path: Path, compress: bool) -> None:
    folder = write_mnist(tmp_path, compress=compress)
    suffix = ".gz" if compress else ""
    images = read_idx(folder / f"train-images-idx3-ubyte{suffix}")
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert read_idx(folder / f"train-labels-idx1-ubyte{suffix}").tolist() == [
        i % 10 for i in range(30)
    ]


def test_sequential_task_shapes_and_accuracy(tmp_path: Path) -> None:
    assert {"smnist", "pmnist"} <= set(list_tasks())
    write_mnist(tmp_path / "mnist")
    task = create_task("smnist", data_dir=tmp_path)
    assert task.length == 784 and task.spec.input_size == 1 and task.spec.output_mode == "last"
    x, y = task.batch(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 784, 1) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # The sequence is the image read row by row.
    raw = read_idx(tmp_path / "mnist" / "train-images-idx3-ubyte").reshape(30, 784)
    match = [i for i in range(30) if np.allclose(raw[i] / 255.0, x[0, :, 0].numpy())]
    assert match and int(y[0]) == match[0] % 10
    # Constant answer 3: accuracy = share of 3s among the 12 test labels (5/12), also the baseline.
    assert task.evaluate(ConstantClass(3))["accuracy"] == pytest.approx(5 / 12)
    assert task.baseline == pytest.approx(5 / 12)
    rows = create_task("smnist", length=28, data_dir=tmp_path, eval_limit=4)
    assert rows.spec.input_size == 28 and len(rows.test_y) == 4


def test_permutation_is_fixed_and_a_permutation(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    a, b = create_task("pmnist", data_dir=tmp_path), create_task("pmnist", data_dir=tmp_path)
    assert torch.equal(a.permutation, b.permutation)
    assert sorted(a.permutation.tolist()) == list(range(784))
    assert not torch.equal(a.permutation, torch.arange(784))
    img = torch.arange(784).remainder(256).to(torch.uint8)[None]
    seq = a.to_sequence(img)[0, :, 0]
    assert torch.allclose(seq, img[0, a.permutation].float() / 255)


def test_missing_and_corrupt_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as info:
        find_mnist_dir(tmp_path)
    assert str(tmp_path) in str(info.value) and "rnnguard download mnist" in str(info.value)
    monkeypatch.delenv("RNNGUARD_DATA", raising=False)
    with pytest.raises(DataError, match="RNNGUARD_DATA"):
        SequentialMNIST()
    folder = write_mnist(tmp_path / "bad")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(DataError, match="truncated"):
        SequentialMNIST(data_dir=folder)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="magic"):
        SequentialMNIST(data_dir=folder)
    with pytest.raises(ConfigError, match="divisor of 784"):
        SequentialMNIST(length=100, data_dir=folder)
