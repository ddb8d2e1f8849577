"""Losses: Dice + cross-entropy with deep supervision (segmentation), cross-entropy (classification)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
                   batch_dice: bool = True) -> torch.Tensor:
    """1 − mean soft Dice over foreground classes: over the whole batch (batch Dice) or per sample, then averaged
    (nnU-Net's choice per configuration, recorded in the plan as `batch_dice`)."""
    probs = torch.softmax(logits.float(), 1)
    valid = (target >= 0).unsqueeze(1)
    onehot = F.one_hot(target.clamp_min(0).long(), logits.shape[1]).movedim(-1, 1).float()
    probs, onehot = probs * valid, onehot * valid
    axes = [0, *range(2, logits.ndim)] if batch_dice else list(range(2, logits.ndim))
    inter = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    dice = (2 * inter + smooth) / (denom + smooth).clamp_min(1e-8)      # (C,) or (B, C)
    return 1 - (dice[..., 1:].mean() if logits.shape[1] > 1 else dice.mean())


class DiceCELoss(nn.Module):
    """Soft Dice (batch or per-sample) + cross-entropy on one output; voxels labelled −1 (outside the image) are
    ignored."""

    def __init__(self, batch_dice: bool = True) -> None:
        super().__init__()
        self.batch_dice = batch_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss for logits (B, C, ...) and integer target (B, ...)."""
        ce = F.cross_entropy(logits.float(), target.long(), ignore_index=-1)
        return ce + soft_dice_loss(logits, target, batch_dice=self.batch_dice)


class DeepSupervisionLoss(nn.Module):
    """A loss over each deep-supervision output, weights halving per scale, the coarsest output's weight 0 (as
    nnU-Net), normalised to sum 1."""

    def __init__(self, loss: nn.Module, num_outputs: int) -> None:
        super().__init__()
        self.loss = loss
        w = torch.tensor([0.5 ** i for i in range(num_outputs)])
        if num_outputs > 1:
            w[-1] = 0.0
        self.register_buffer("weights", w / w.sum(), persistent=False)

    def forward(self, outputs: Sequence[torch.Tensor] | torch.Tensor, targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """Weighted sum over scales; outputs and targets full resolution first."""
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, targets[0])
        return sum(w * self.loss(o, t) for w, o, t in zip(self.weights, outputs, targets))


def block_centres(size: int, factor: int) -> torch.Tensor:
    """Index of the voxel at the centre of each `factor`-block of an axis (nnU-Net's 'nearest-exact' downsampling:
    voxel k·f + f // 2), the last block's clamped to the axis when `size` is not a multiple of `factor`."""
    return torch.clamp(torch.arange(math.ceil(size / factor)) * factor + factor // 2, max=size - 1)


def downsample_targets(seg: torch.Tensor, scales: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Targets for each deep-supervision scale, seg (B, ...) integer: per scale the centre voxel of each block, as
    nnU-Net (interpolate 'nearest-exact'); a plain stride would take each block's first voxel, half a coarse voxel
    off nnU-Net's target."""
    out = []
    for s in scales:
        down = seg
        for axis, v in enumerate(s):
            if v > 1:
                down = down.index_select(axis + 1, block_centres(down.shape[axis + 1], v).to(seg.device))
        out.append(down)
    return out


def classification_loss(label_smoothing: float = 0.0) -> nn.Module:
    """Cross-entropy with optional label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
