"""Encoders (plain, resnet, vgg) built from an ArchitectureDescription, with one attribute tree in 2D and 3D.

Parameter names (the contract that transfer/ relies on):

- plain / vgg: ``stages.{i}.blocks.{j}.conv`` and ``.norm``; plain strides with the first conv of a
  stage, vgg with a parameter-free ``stages.{i}.pool`` before the blocks.
- resnet: ``stages.0.blocks.0.conv/.norm`` (the stem); ``stages.1.pool`` (the stem max-pool);
  ``stages.{i}.blocks.{j}.conv{n}/.norm{n}`` and ``.downsample.conv/.norm`` for i ≥ 1.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.networks.blocks import BasicBlock, Bottleneck, ConvNormAct, ResidualBlock
from xtlunet.networks.description import ArchitectureDescription
from xtlunet.networks.layers import LEAKY_SLOPE, init_weights, is_unit, max_pool

RESIDUAL_BLOCKS: dict[str, type[ResidualBlock]] = {
    "resnet18": BasicBlock, "resnet34": BasicBlock, "resnet50": Bottleneck,
}


class Stage(nn.Module):
    """One resolution level: an optional parameter-free `pool`, then `blocks`."""

    def __init__(self, blocks: Sequence[nn.Module], pool: nn.Module | None = None) -> None:
        super().__init__()
        self.pool = pool
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool (if any), then the blocks in order."""
        if self.pool is not None:
            x = self.pool(x)
        for block in self.blocks:
            x = block(x)
        return x


class Encoder(nn.Module):
    """A stack of stages; forward returns every stage's output (the skips), highest resolution first."""

    first_conv: str = "stages.0.blocks.0.conv"
    classifier: tuple[str, ...] = ()

    def __init__(self, desc: ArchitectureDescription, stages: Sequence[Stage]) -> None:
        super().__init__()
        self.desc = desc
        self.stages = nn.ModuleList(stages)

    @property
    def out_channels(self) -> list[int]:
        """Channels of each stage's output."""
        return list(self.desc.widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage."""
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


def _plain_stage(desc: ArchitectureDescription, i: int, cin: int) -> Stage:
    """nnU-Net stage: conv–norm–LeakyReLU blocks, the first one strided."""
    d = desc
    return Stage([ConvNormAct(d.dim, cin if j == 0 else d.widths[i], d.widths[i], d.kernel_sizes[i],
                              d.strides[i] if j == 0 else 1, d.norm, d.family) for j in range(d.blocks[i])])


def _vgg_stage(desc: ArchitectureDescription, i: int, cin: int) -> Stage:
    """VGG stage: max-pool by the stride (if any), then conv–norm–ReLU blocks."""
    d = desc
    pool = None if is_unit(d.strides[i]) else max_pool(d.dim, d.strides[i], d.strides[i])
    return Stage([ConvNormAct(d.dim, cin if j == 0 else d.widths[i], d.widths[i], d.kernel_sizes[i],
                              1, d.norm, d.family) for j in range(d.blocks[i])], pool)


def stem_pool(dim: int, stride: Sequence[int]) -> nn.Module | None:
    """torchvision's stem MaxPool(3, 2, 1), per axis: kernel 3 and padding 1 where the stride is > 1."""
    if is_unit(stride):
        return None
    return max_pool(dim, [3 if s > 1 else 1 for s in stride], stride, [1 if s > 1 else 0 for s in stride])


def _resnet_stage(desc: ArchitectureDescription, i: int, cin: int) -> Stage:
    """ResNet stage: the stem conv (i = 0), or residual blocks (i ≥ 1; stage 1 behind the stem pool)."""
    d = desc
    if i == 0:
        if d.blocks[0] != 1:
            raise XtlunetError(f"a {d.family} stem has exactly one block, the description asks for {d.blocks[0]}",
                               fix="set blocks[0] = 1")
        return Stage([ConvNormAct(d.dim, cin, d.widths[0], d.kernel_sizes[0], d.strides[0], d.norm, d.family)])
    block = RESIDUAL_BLOCKS[d.family]
    if d.widths[i] % block.expansion:
        raise XtlunetError(f"{d.family} stage {i} width {d.widths[i]} is not divisible by {block.expansion}",
                           fix=f"use widths that are multiples of {block.expansion}")
    pool = stem_pool(d.dim, d.strides[i]) if i == 1 else None
    first_stride = [1] * d.dim if i == 1 else d.strides[i]
    blocks = [block(d.dim, cin if j == 0 else d.widths[i], d.widths[i], d.kernel_sizes[i],
                    first_stride if j == 0 else [1] * d.dim, d.norm) for j in range(d.blocks[i])]
    return Stage(blocks, pool)


def build_encoder(desc: ArchitectureDescription) -> Encoder:
    """The encoder of `desc` (any family, 2D or 3D), He-initialised."""
    if desc.family.startswith("resnet") and desc.num_stages < 2:
        raise XtlunetError(f"a {desc.family} encoder needs at least 2 stages (stem + layer1)",
                           fix="use the family_description() template")
    if min(desc.blocks) < 1 or min(desc.widths) < 1:
        raise XtlunetError(f"every stage needs at least one block and one channel (blocks {desc.blocks}, "
                           f"widths {desc.widths})", fix="fix the architecture in the plan")
    make = _plain_stage if desc.family == "plain" else _vgg_stage if desc.family.startswith("vgg") else _resnet_stage
    stages, cin = [], desc.in_channels
    for i in range(desc.num_stages):
        stages.append(make(desc, i, cin))
        cin = desc.widths[i]
    encoder = Encoder(desc, stages)
    init_weights(encoder, LEAKY_SLOPE if desc.family == "plain" else 0.0)
    return encoder
