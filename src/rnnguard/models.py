"""SequenceModel: (embedding | identity) -> a registered recurrent core -> linear head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.nn.registry import create_layer
from rnnguard.tasks.base import TaskSpec
from rnnguard.utils.checks import positive_int


class SequenceModel(nn.Module):
    """A sequence model for any task: ``forward(x, state=None) -> (outputs, state)``.

    Token inputs ``(B, T)`` go through an embedding, float inputs ``(B, T, input_size)`` straight
    to the core; the core is the layer registered as ``layer`` in ``rnnguard.nn.registry``, built
    with ``batch_first=True``; a linear head maps each step to ``spec.output_size``.

    Args:
        spec: the task's :class:`~rnnguard.tasks.base.TaskSpec`.
        layer: registered layer name (``"rnn"``, ``"lstm"``, ``"gru"``, ``"indrnn"``, ...).
        hidden_size: width of the core.
        num_layers: stacked layers in the core.
        embedding_dim: embedding width for token inputs (default: ``hidden_size``).
        **layer_kwargs: passed to the layer (``layer_norm=True``, ``forget_bias=1.0``, ``init=``...).

    Example:
        >>> from rnnguard.tasks import create_task
        >>> model = SequenceModel(create_task("adding", length=20).spec, "lstm", hidden_size=16)
        >>> out, state = model(torch.zeros(4, 20, 2))
        >>> out.shape
        torch.Size([4, 20, 1])
    """

    def __init__(
        self,
        spec: TaskSpec,
        layer: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        embedding_dim: int | None = None,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"spec must be a TaskSpec, got {type(spec).__name__}")
        positive_int("hidden_size", hidden_size)
        positive_int("num_layers", num_layers)
        if embedding_dim is not None and (not isinstance(embedding_dim, int) or embedding_dim < 1):
            raise ConfigError(
                f"embedding_dim must be a positive int or None, got {embedding_dim!r}"
            )
        self.spec = spec
        self.layer_name = layer
        if spec.token_input:
            embedding_dim = embedding_dim or hidden_size
            self.embedding: nn.Module = nn.Embedding(spec.input_size, embedding_dim)
            core_input = embedding_dim
        else:
            self.embedding = nn.Identity()
            core_input = spec.input_size
        self.core = create_layer(
            layer,
            input_size=core_input,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            **layer_kwargs,
        )
        out_features = getattr(self.core, "output_size", None)
        if not isinstance(out_features, int):
            raise ConfigError(
                f"layer {layer!r} must expose an int output_size, got {out_features!r}"
            )
        self.head = nn.Linear(out_features, spec.output_size)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Map ``x`` (B, T[, input_size]) to outputs (B, T, output_size) and the core's final state."""
        h = self.embedding(x)
        out, state = self.core(h, state) if state is not None else self.core(h)
        return self.head(out), state

    def extra_repr(self) -> str:
        return f"layer={self.layer_name!r}"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
