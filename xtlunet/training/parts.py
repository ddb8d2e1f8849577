"""TrainingParts: everything a Loop needs, built by a trainer (the composition root) and handed over once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn

from xtlunet.training.optim import Schedule, poly


class BatchTask(Protocol):
    """The task-specific data side of training: batches, targets on the device, per-epoch validation."""

    metric_name: str
    mirror_axes: tuple[int, ...]

    def batches(self, batch_size: int, workers: int, seed: int, forced: int | None = None) -> Iterator[dict[str, Any]]:
        """Augmented training batches (`forced`: samples per batch centred on foreground, where that applies)."""

    def to_device(self, batch: dict[str, Any], net: nn.Module, device: torch.device) -> tuple[torch.Tensor, Any]:
        """(input, target) of a batch on the device, targets as the loss takes them."""

    def validate(self, net: nn.Module, loss_fn: nn.Module, device: torch.device, iters: int, batch_size: int,
                 epoch: int, autocast: Any) -> tuple[float, float]:
        """(validation loss with the training loss, validation metric)."""


@dataclass
class TrainingParts:
    """The network and how to initialise, feed, score and optimise it; the Loop never asks its trainer for more."""

    trainer: str
    network: nn.Module
    task: BatchTask
    loss: nn.Module
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    schedule: Schedule = poly
    initialise: Callable[[nn.Module], Any] = lambda net: None
    frozen: list[nn.Parameter] = field(default_factory=list)
    freeze_epochs: int = 0
    grad_clip: float = 12.0
