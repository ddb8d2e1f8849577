"""Layer factories indexed by spatial dimension, so 2D and 3D networks share code and parameter names."""
from __future__ import annotations

from typing import Sequence

from torch import nn

CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
NORM: dict[str, dict[int, type[nn.Module]]] = {
    "instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
}
LEAKY_SLOPE = 0.01


def same_padding(kernel: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the size of an odd kernel's output (kernel // 2 per axis)."""
    return tuple(k // 2 for k in kernel)


def conv(dim: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] | int = 1,
         bias: bool = True) -> nn.Module:
    """A `dim`-D convolution with per-axis kernel and stride and same-padding."""
    stride = tuple(stride) if isinstance(stride, Sequence) else (stride,) * dim
    return CONV[dim](cin, cout, tuple(kernel), stride=stride, padding=same_padding(kernel), bias=bias)


def transposed_conv(dim: int, cin: int, cout: int, stride: Sequence[int], bias: bool = True) -> nn.Module:
    """A `dim`-D transposed convolution that upsamples by `stride` (kernel = stride)."""
    return CONV_TRANSPOSE[dim](cin, cout, tuple(stride), stride=tuple(stride), bias=bias)


def norm(kind: str, dim: int, channels: int) -> nn.Module:
    """Instance norm (affine, no running statistics) or batch norm."""
    if kind == "instance":
        return NORM[kind][dim](channels, eps=1e-5, affine=True)
    return NORM[kind][dim](channels)


def activation(family: str) -> nn.Module:
    """LeakyReLU(0.01) for plain nets (nnU-Net) and for decoders, ReLU for resnet/vgg encoders."""
    if family == "plain":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    return nn.ReLU(inplace=True)


def max_pool(dim: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int] | int = 0) -> nn.Module:
    """A parameter-free `dim`-D max-pool with per-axis kernel, stride and padding."""
    padding = tuple(padding) if isinstance(padding, Sequence) else (padding,) * dim
    return MAX_POOL[dim](tuple(kernel), stride=tuple(stride), padding=padding)


def conv_bias(norm_kind: str) -> bool:
    """Convs carry a bias only before instance norm (nnU-Net); none before batch norm (torchvision)."""
    return norm_kind == "instance"


def is_unit(stride: Sequence[int]) -> bool:
    """True when a stride is 1 on every axis."""
    return all(s == 1 for s in stride)


def init_weights(module: nn.Module, negative_slope: float) -> None:
    """He-normal init for convs (fan-in for LeakyReLU nets as nnU-Net, fan-out for ReLU nets as torchvision)."""
    for m in module.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue  # shape-only networks (memory estimates, name checks) need no values
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=negative_slope, mode="fan_in" if negative_slope else "fan_out",
                                    nonlinearity="leaky_relu" if negative_slope else "relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
