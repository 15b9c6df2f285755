"""Sequential and permuted MNIST (pixel by pixel) read from the standard IDX files.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, optionally ``.gz``) are read from a data dir; nothing is bundled.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnguard.errors import ConfigError, DataError
from rnnguard.tasks.base import ClassificationTask, TaskSpec, check_batch_size
from rnnguard.tasks.registry import register_task

__all__ = ["MNIST_FILES", "SequentialMNIST", "find_mnist_dir", "read_idx"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
PIXELS = 784
PERMUTATION_SEED = 0  # the fixed pixel permutation of pMNIST (the same for every run)
_HOW_TO_GET = (
    "get them with `rnnguard download mnist --data-dir DIR` (needs internet) or copy the four IDX "
    "files (train-images-idx3-ubyte[.gz], ...) there, and pass the folder as data_dir or set "
    "RNNGUARD_DATA"
)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a numpy array of its declared shape."""
    file = Path(path)
    raw = file.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{str(file)!r} is not an unsigned-byte IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise DataError(
            f"{str(file)!r} is truncated or corrupt: header says {dims} = {expected} bytes, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _locate(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_mnist_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder with the four IDX files: ``data_dir`` (or its ``mnist/``), else ``$RNNGUARD_DATA``."""
    if data_dir is None:
        env = os.environ.get("RNNGUARD_DATA")
        if not env:
            raise DataError(
                f"MNIST data dir not given (no data_dir and RNNGUARD_DATA unset); {_HOW_TO_GET}"
            )
        data_dir = env
    base = Path(data_dir)
    for folder in (base / "mnist", base):
        if all(_locate(folder, stem) for stem in MNIST_FILES.values()):
            return folder
    missing = [s for s in MNIST_FILES.values() if not _locate(base, s)]
    raise DataError(
        f"MNIST files {missing} not found in {str(base)!r} nor its mnist/ subfolder; {_HOW_TO_GET}"
    )


class SequentialMNIST(ClassificationTask):
    """Classify an MNIST digit read ``784 // length`` pixels per step (784 steps: one pixel).

    ``permuted=True`` applies one fixed random permutation to the pixel order (pMNIST). Inputs are
    scaled to [0, 1]; loss: cross-entropy of the last step's output; metric: accuracy.

    Args:
        length: steps per image; must divide 784 (784, 392, 196, 112, 28, ...).
        data_dir: folder with the IDX files (default ``$RNNGUARD_DATA``[/mnist]).
        permuted: use the fixed pixel permutation.
        eval_limit: evaluate on the first this many test images (None: all 10,000).
        train_limit: draw training images from the first this many (None: all).
    """

    metric_name = "accuracy"
    higher_is_better = True
    solved_threshold = 0.9

    def __init__(
        self,
        length: int = PIXELS,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        permuted: bool = False,
        eval_limit: int | None = None,
        train_limit: int | None = None,
        eval_batch_size: int = 256,
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1 or PIXELS % length:
            raise ConfigError(
                f"length must be a positive divisor of 784 (784, 196, 28, ...), got {length!r}"
            )
        for key, value in (("eval_limit", eval_limit), ("train_limit", train_limit)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{key} must be a positive int or None, got {value!r}")
        self.length = length
        self.permuted = bool(permuted)
        self.name = "pmnist" if permuted else "smnist"
        self.pixels_per_step = PIXELS // length
        self.eval_batch_size = check_batch_size(eval_batch_size)
        folder = find_mnist_dir(data_dir)
        arrays = {k: read_idx(_locate(folder, stem)) for k, stem in MNIST_FILES.items()}  # type: ignore[arg-type]
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise DataError(
                    f"MNIST {split} files in {str(folder)!r} must hold N x 28 x 28 images and N labels, "
                    f"got {images.shape} and {labels.shape}"
                )
        self.train_x = torch.from_numpy(
            arrays["train_images"][:train_limit].reshape(-1, PIXELS).copy()
        )
        self.train_y = torch.from_numpy(arrays["train_labels"][:train_limit].astype(np.int64))
        self.test_x = torch.from_numpy(
            arrays["test_images"][:eval_limit].reshape(-1, PIXELS).copy()
        )
        self.test_y = torch.from_numpy(arrays["test_labels"][:eval_limit].astype(np.int64))
        gen = torch.Generator().manual_seed(PERMUTATION_SEED)
        self.permutation = (
            torch.randperm(PIXELS, generator=gen) if permuted else torch.arange(PIXELS)
        )
        self.spec = TaskSpec(
            input_size=self.pixels_per_step, output_size=10, token_input=False, output_mode="last"
        )
        # Trivial baseline: always answer the most frequent test class.
        self.baseline = float(torch.bincount(self.test_y, minlength=10).max()) / len(self.test_y)

    def to_sequence(self, images: torch.Tensor) -> torch.Tensor:
        """Flat uint8 images (B, 784) -> float sequences (B, length, pixels_per_step) in [0, 1]."""
        x = images[:, self.permutation].float() / 255.0
        return x.view(images.shape[0], self.length, self.pixels_per_step)

    def batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random training images (with replacement) as ``(x (B, T, p), labels (B,))``."""
        idx = torch.randint(
            0, len(self.train_y), (check_batch_size(batch_size),), generator=generator
        )
        return self.to_sequence(self.train_x[idx]), self.train_y[idx]

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(output[:, -1].float(), y)

    def metric(self, output: torch.Tensor, y: torch.Tensor) -> float:
        return float((output[:, -1].argmax(-1) == y).float().mean())

    @torch.no_grad()
    def evaluate(self, model: Any, device: torch.device | str = "cpu") -> dict[str, float]:
        """Test accuracy and loss over the (first ``eval_limit``) test images."""
        correct, total_loss, n = 0, 0.0, len(self.test_y)
        for i in range(0, n, self.eval_batch_size):
            x = self.to_sequence(self.test_x[i : i + self.eval_batch_size]).to(device)
            y = self.test_y[i : i + self.eval_batch_size].to(device)
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            total_loss += float(
                torch.nn.functional.cross_entropy(out[:, -1].float(), y, reduction="sum")
            )
            correct += int((out[:, -1].argmax(-1) == y).sum())
        return {"accuracy": correct / n, "loss": total_loss / n}


@register_task(
    "smnist", description="sequential MNIST, one pixel per step (accuracy), from IDX files"
)
def smnist(
    length: int = PIXELS, data_dir: str | os.PathLike[str] | None = None, **kw: Any
) -> SequentialMNIST:
    """Sequential MNIST."""
    return SequentialMNIST(length, data_dir, permuted=False, **kw)


@register_task(
    "pmnist", description="permuted sequential MNIST (fixed permutation), from IDX files"
)
def pmnist(
    length: int = PIXELS, data_dir: str | os.PathLike[str] | None = None, **kw: Any
) -> SequentialMNIST:
    """Permuted sequential MNIST."""
    return SequentialMNIST(length, data_dir, permuted=True, **kw)
