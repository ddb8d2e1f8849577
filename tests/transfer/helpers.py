"""Tiny 2D/3D networks and helpers shared by the transfer tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xtlunet.networks.description import ArchitectureDescription

TINY_RESNET_WIDTHS = {"resnet18": [4, 4, 8, 8, 16], "resnet34": [4, 4, 8, 8, 16], "resnet50": [4, 8, 8, 16, 16]}
TINY_BLOCKS = {"resnet18": [1, 2, 2, 2, 2], "resnet34": [1, 3, 4, 6, 3], "resnet50": [1, 3, 4, 6, 3],
               "vgg16_bn": [2, 2, 3, 3, 3]}


def tiny_description(family: str = "plain", in_channels: int = 1, norm: str | None = None,
                     widths: list[int] | None = None, kernel: int = 3) -> ArchitectureDescription:
    """A 2D description with torchvision topology (resnet/vgg) or 3 plain stages, at tiny widths."""
    if family == "plain":
        return ArchitectureDescription(family="plain", dim=2, in_channels=in_channels, widths=widths or [4, 8, 16],
                                       strides=[[1, 1], [2, 2], [2, 2]], kernel_sizes=[[kernel, kernel]] * 3,
                                       blocks=[1, 2, 2], norm=norm or "instance")
    if family == "vgg16_bn":
        return ArchitectureDescription(family=family, dim=2, in_channels=in_channels,
                                       widths=widths or [4, 4, 8, 8, 8], strides=[[1, 1]] + [[2, 2]] * 4,
                                       kernel_sizes=[[3, 3]] * 5, blocks=TINY_BLOCKS[family], norm=norm or "batch")
    return ArchitectureDescription(family=family, dim=2, in_channels=in_channels,
                                   widths=widths or TINY_RESNET_WIDTHS[family], strides=[[2, 2]] * 5,
                                   kernel_sizes=[[7, 7]] + [[3, 3]] * 4, blocks=TINY_BLOCKS[family],
                                   norm=norm or "batch")


def to_3d(desc: ArchitectureDescription, depth_kernel: int | list[int] = 3,
          in_channels: int | None = None) -> ArchitectureDescription:
    """The 3D version of a 2D description with depth strides 1 and the given depth kernels."""
    n = desc.num_stages
    kernels = depth_kernel if isinstance(depth_kernel, list) else [depth_kernel] * n
    out = desc.with_dim(3, kernels, [1] * n)
    if in_channels is not None:
        out.in_channels = in_channels
    return out


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial affine parameters and BatchNorm running statistics, so copying them is visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                if m.weight is not None:
                    m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                if m.running_mean is not None:
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))


def replicate_depth_padding(model: nn.Module) -> None:
    """Pad every 3D conv's input by replication along depth only (zeros in-plane, as in 2D).

    With zero padding along depth an inflated kernel sees fewer than d copies of the edge slices, so
    only interior slices match the 2D network; replicating along depth makes every slice match.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv3d) and m.padding[0] > 0:
            pd = m.padding[0]
            m.padding = (0, *m.padding[1:])
            m.register_forward_pre_hook(
                lambda _m, args, pd=pd: (F.pad(args[0], (0, 0, 0, 0, pd, pd), mode="replicate"),))


def constant_depth(image: torch.Tensor, depth: int) -> torch.Tensor:
    """A (B, C, depth, H, W) volume whose every slice is `image` (B, C, H, W)."""
    return image.unsqueeze(2).repeat(1, 1, depth, 1, 1)
