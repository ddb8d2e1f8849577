"""Output heads: the 1×1 segmentation head and the pooled MLP classification head."""
from __future__ import annotations

import torch
from torch import nn

from xtlunet.networks.layers import conv


def seg_head(dim: int, channels: int, num_classes: int) -> nn.Module:
    """A 1×1 convolution to per-voxel class logits."""
    return conv(dim, channels, num_classes, [1] * dim, bias=True)


class ClassificationHead(nn.Module):
    """Global average pooling → fc1 → ReLU → dropout → fc2; the same parameters in 2D and 3D."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from a (B, C, *spatial) feature map."""
        pooled = features.flatten(2).mean(dim=2)
        return self.fc2(self.dropout(self.act(self.fc1(pooled))))
