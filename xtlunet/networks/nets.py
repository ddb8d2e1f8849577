"""Task networks on a shared encoder: U-Net segmentation and pooled-feature classification.

Both declare, timm-style, `first_conv` (the input conv's parameter prefix) and `classifier` (the
prefixes of the layers whose shape depends on the number of classes), so weight transfer knows
which layers to adapt and which to leave new.
"""
from __future__ import annotations

import torch
from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.networks.decoder import Decoder
from xtlunet.networks.description import ArchitectureDescription
from xtlunet.networks.encoder import Encoder, build_encoder
from xtlunet.networks.heads import ClassificationHead


def check_input(desc: ArchitectureDescription, x: torch.Tensor, divisible: bool) -> None:
    """Refuse an input of the wrong rank or channel count, or (segmentation) not divisible by the total stride."""
    if x.ndim != desc.dim + 2 or x.shape[1] != desc.in_channels:
        raise XtlunetError(f"a {desc.dim}D network with {desc.in_channels} input channels got a tensor of shape "
                           f"{tuple(x.shape)}", fix=f"pass (batch, {desc.in_channels}, *{desc.dim} spatial axes)")
    stride = desc.total_stride()
    if divisible and any(size % s for size, s in zip(x.shape[2:], stride)):
        raise XtlunetError(f"input spatial size {tuple(x.shape[2:])} is not divisible by the network's total "
                           f"stride {stride}", fix="use a patch size that is a multiple of the total stride")


class SegmentationNet(nn.Module):
    """Encoder + U-Net decoder. Input spatial size must be divisible by `desc.total_stride()`.

    Returns full-resolution logits (B, num_classes, *spatial); with deep supervision (training mode and
    `desc.deep_supervision`, or `deep_supervision` set to True) a list of logits, full resolution first,
    downsampled by `deep_supervision_scales()`.
    """

    first_conv: str = f"encoder.{Encoder.first_conv}"

    def __init__(self, desc: ArchitectureDescription, num_classes: int) -> None:
        super().__init__()
        if desc.num_stages < 2:
            raise XtlunetError("a segmentation network needs at least 2 encoder stages",
                               fix="add a stage to the architecture")
        self.desc = desc
        self.encoder: Encoder = build_encoder(desc)
        self.decoder = Decoder(desc, num_classes)
        self.deep_supervision: bool | None = None  # None: follow desc.deep_supervision in training mode
        heads = range(len(self.decoder.seg_heads))
        self.classifier: tuple[str, ...] = tuple(f"decoder.seg_heads.{k}" for k in heads)

    def deep_supervision_scales(self) -> list[list[int]]:
        """Per deep-supervision output (full resolution first): its downsampling relative to the input."""
        return self.decoder.scales[::-1]

    def uses_deep_supervision(self) -> bool:
        """Whether forward returns a list of outputs now."""
        if self.deep_supervision is not None:
            return self.deep_supervision
        return self.training and self.desc.deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits, or the deep-supervision list of logits."""
        check_input(self.desc, x, divisible=True)
        return self.decoder(self.encoder(x), self.uses_deep_supervision())


class ClassificationNet(nn.Module):
    """Encoder + global-average-pooled MLP head; returns logits (B, num_classes)."""

    first_conv: str = f"encoder.{Encoder.first_conv}"
    classifier: str = "head.fc2"

    def __init__(self, desc: ArchitectureDescription, num_classes: int, hidden: int = 256,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.desc = desc
        self.encoder: Encoder = build_encoder(desc)
        self.head = ClassificationHead(desc.widths[-1], num_classes, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        check_input(self.desc, x, divisible=False)
        return self.head(self.encoder(x)[-1])
