"""Tiny descriptions of every family in 2D and 3D, shared by the network tests (imported by name)."""
from __future__ import annotations

from dataclasses import replace

from xtlunet.networks.description import ArchitectureDescription, family_description

TINY_WIDTHS = {
    "resnet18": [8, 8, 16, 16, 32], "resnet34": [8, 8, 8, 16, 16], "resnet50": [8, 16, 16, 32, 32],
    "vgg16_bn": [4, 8, 8, 16, 16],
}
# 3D: anisotropic first stages (no depth stride, depth-1 kernels), isotropic deeper ones
DEPTH_STRIDES = {"resnet": [1, 1, 2, 2, 1], "vgg16_bn": [1, 1, 2, 2, 1]}
DEPTH_KERNELS = [1, 1, 3, 3, 3]
FAMILIES = ("plain", "resnet18", "resnet34", "resnet50", "vgg16_bn")
INPUT_2D = (64, 64)
INPUT_3D = (16, 32, 32)


def tiny_description(family: str, dim: int, in_channels: int = 2) -> ArchitectureDescription:
    """A small-width description of `family`: 2D for 64×64 inputs, 3D (anisotropic) for 16×32×32."""
    if family == "plain":
        desc2 = ArchitectureDescription(family="plain", dim=2, in_channels=in_channels, widths=[4, 8, 16, 16],
                                        strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
                                        kernel_sizes=[[3, 3]] * 4, blocks=[2, 2, 2, 1], decoder_blocks=[1, 1, 2])
        return desc2 if dim == 2 else desc2.with_dim(3, depth_kernels=[1, 3, 3, 3], depth_strides=[1, 1, 2, 2])
    desc2 = replace(family_description(family, 2, in_channels), widths=TINY_WIDTHS[family])
    if dim == 2:
        return desc2
    depth_strides = DEPTH_STRIDES["vgg16_bn" if family.startswith("vgg") else "resnet"]
    return desc2.with_dim(3, depth_kernels=DEPTH_KERNELS, depth_strides=depth_strides)


def input_shape(dim: int) -> tuple[int, ...]:
    """The spatial input shape used with tiny descriptions."""
    return INPUT_2D if dim == 2 else INPUT_3D

