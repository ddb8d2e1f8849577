"""U-Net decoder over any encoder: upsample, concatenate the skip, conv–norm–LeakyReLU, 1×1 seg head.

Parameter names: ``stages.{k}.up`` (transposed conv), ``stages.{k}.blocks.{j}.conv/.norm`` and
``seg_heads.{k}``, k counted from the bottom; ``decoder_blocks[k]`` blocks with the skip stage's
kernels. When the encoder's first stage is strided (the resnet stem), a last stage ``stages.{n-1}``
upsamples to the input resolution without a skip: half the first stage's width, kernels capped at 3,
``decoder_blocks[n-1]`` blocks if given, else one.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.networks.blocks import ConvNormAct
from xtlunet.networks.description import ArchitectureDescription
from xtlunet.networks.heads import seg_head
from xtlunet.networks.layers import LEAKY_SLOPE, init_weights, is_unit, transposed_conv


class DecoderStage(nn.Module):
    """Upsample by a transposed conv, concatenate the skip (if any), then conv blocks."""

    def __init__(self, up: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.up = up
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """One decoder level."""
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        for block in self.blocks:
            x = block(x)
        return x


def _blocks(desc: ArchitectureDescription, cin: int, cout: int, kernel: Sequence[int], n: int) -> list[nn.Module]:
    """`n` conv–norm–LeakyReLU blocks, cin → cout then cout → cout."""
    return [ConvNormAct(desc.dim, cin if j == 0 else cout, cout, kernel, 1, desc.norm, "plain") for j in range(n)]


def has_full_resolution_stage(desc: ArchitectureDescription) -> bool:
    """True when the first encoder stage is strided, so the decoder needs an extra, skip-less stage."""
    return not is_unit(desc.strides[0])


class Decoder(nn.Module):
    """The U-Net decoder for `desc`, producing `num_classes` logits at every level."""

    def __init__(self, desc: ArchitectureDescription, num_classes: int) -> None:
        super().__init__()
        d, n = desc, desc.num_stages
        if len(d.decoder_blocks) < n - 1 or min(d.decoder_blocks, default=1) < 1:
            raise XtlunetError(f"decoder_blocks {d.decoder_blocks} must give at least one block for each of the "
                               f"{n - 1} decoder stages", fix="list one positive count per decoder stage")
        stages, heads, cin = [], [], d.widths[-1]
        for k in range(n - 1):
            s = n - 2 - k  # the skip's stage
            up = transposed_conv(d.dim, cin, d.widths[s], d.strides[s + 1])
            stages.append(DecoderStage(up, _blocks(d, 2 * d.widths[s], d.widths[s], d.kernel_sizes[s],
                                                   d.decoder_blocks[k])))
            heads.append(seg_head(d.dim, d.widths[s], num_classes))
            cin = d.widths[s]
        if has_full_resolution_stage(d):
            width = max(d.widths[0] // 2, 1)
            kernel = [min(k, 3) for k in d.kernel_sizes[0]]
            n_blocks = d.decoder_blocks[n - 1] if len(d.decoder_blocks) >= n else 1
            up = transposed_conv(d.dim, cin, width, d.strides[0])
            stages.append(DecoderStage(up, _blocks(d, width, width, kernel, n_blocks)))
            heads.append(seg_head(d.dim, width, num_classes))
        self.stages = nn.ModuleList(stages)
        self.seg_heads = nn.ModuleList(heads)
        self.scales = self._scales(d)
        init_weights(self, LEAKY_SLOPE)

    @staticmethod
    def _scales(desc: ArchitectureDescription) -> list[list[int]]:
        """Per decoder stage, bottom first: the downsampling of its output relative to the input."""
        cumulative, out = [1] * desc.dim, []
        for s in desc.strides:
            cumulative = [a * b for a, b in zip(cumulative, s)]
            out.append(list(cumulative))
        scales = [out[s] for s in range(desc.num_stages - 2, -1, -1)]
        return scales + ([[1] * desc.dim] if has_full_resolution_stage(desc) else [])

    def forward(self, skips: Sequence[torch.Tensor], deep_supervision: bool = False
                ) -> torch.Tensor | list[torch.Tensor]:
        """Logits at full resolution, or (deep supervision) at every level, full resolution first."""
        x, outputs, last = skips[-1], [], len(self.stages) - 1
        for k, stage in enumerate(self.stages):
            s = len(skips) - 2 - k
            x = stage(x, skips[s] if s >= 0 else None)
            if deep_supervision or k == last:
                outputs.append(self.seg_heads[k](x))
        return outputs[::-1] if deep_supervision else outputs[-1]
