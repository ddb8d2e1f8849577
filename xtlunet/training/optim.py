"""Optimiser and schedule: SGD Nesterov (nnU-Net's defaults) and learning-rate schedules as plain functions.

A schedule is any callable `(step, total_steps) -> factor`; the training loop calls it once per epoch with
(epoch, epochs), as nnU-Net's PolyLRScheduler steps, and multiplies every parameter group's initial
learning rate (`initial_lr`, recorded from the group's `lr` the first time) by it. An optimiser needs no
private keys: any torch optimiser with any groups works.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

Schedule = Callable[[int, int], float]


def sgd(groups: Iterable[dict] | Iterable[nn.Parameter], lr: float = 1e-2, momentum: float = 0.99,
        weight_decay: float = 3e-5) -> torch.optim.SGD:
    """SGD with Nesterov momentum."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)


def poly(step: int, total: int, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial decay factor: 1 at step 0, 0 at `total`."""
    return (1 - min(step, total) / max(total, 1)) ** exponent


def cosine(step: int, total: int) -> float:
    """Cosine decay factor from 1 to 0 over `total` steps."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, step: int, total: int) -> float:
    """Set every group's lr to its initial lr × schedule(step, total); returns the largest lr (for the log)."""
    factor = schedule(step, total)
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = g["initial_lr"] * factor
    return max(g["lr"] for g in optimizer.param_groups)


class EarlyStopping:
    """Tracks the best validation metric (higher is better) and its weights; says stop after `patience` epochs
    without improvement (never, with patience None)."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.epoch, self.metric, self.state = patience, -1, -math.inf, None

    def update(self, epoch: int, metric: float, net: nn.Module) -> bool:
        """Record an epoch; True when training should stop."""
        if metric == metric and metric > self.metric:   # NaN never improves
            self.epoch, self.metric = epoch, metric
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return self.patience is not None and epoch - max(self.epoch, 0) >= self.patience

    def restore(self, net: nn.Module) -> None:
        """Load the best epoch's weights back (nothing when no epoch had a metric)."""
        if self.state is not None:
            net.load_state_dict(self.state)
