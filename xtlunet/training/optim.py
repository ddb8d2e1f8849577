"""Optimiser and schedule: SGD Nesterov with poly decay (nnU-Net's defaults), per-group learning rates."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def sgd(groups: Iterable[dict] | Iterable[nn.Parameter], lr: float = 1e-2, momentum: float = 0.99,
        weight_decay: float = 3e-5) -> torch.optim.SGD:
    """SGD with Nesterov momentum."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)


def poly_lr(initial: float, step: int, total: int, exponent: float = 0.9) -> float:
    """Polynomial decay from `initial` to 0 over `total` steps."""
    return initial * (1 - min(step, total) / max(total, 1)) ** exponent


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, total: int) -> float:
    """Set every group's lr to poly decay of its own initial lr; returns the first group's lr."""
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = poly_lr(g["initial_lr"], step, total)
    return optimizer.param_groups[0]["lr"]
