"""Building blocks: conv–norm–act, torchvision-style residual BasicBlock and Bottleneck."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from xtlunet.networks.layers import activation, conv, conv_bias, is_unit, norm


class ConvNormAct(nn.Module):
    """conv → norm → activation; the unit of plain and vgg stages and of every decoder stage."""

    def __init__(self, dim: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] | int = 1,
                 norm_kind: str = "instance", family: str = "plain") -> None:
        super().__init__()
        self.conv = conv(dim, cin, cout, kernel, stride, bias=conv_bias(norm_kind))
        self.norm = norm(norm_kind, dim, cout)
        self.act = activation(family)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, norm and activation."""
        return self.act(self.norm(self.conv(x)))


class Downsample(nn.Module):
    """The residual shortcut projection: strided 1×1 conv → norm (torchvision `downsample.0/1`)."""

    def __init__(self, dim: int, cin: int, cout: int, stride: Sequence[int], norm_kind: str) -> None:
        super().__init__()
        self.conv = conv(dim, cin, cout, [1] * dim, stride, bias=conv_bias(norm_kind))
        self.norm = norm(norm_kind, dim, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project the shortcut to the block's output shape."""
        return self.norm(self.conv(x))


class ResidualBlock(nn.Module):
    """A chain of (conv{n}, norm{n}) pairs with ReLU between them, added to a shortcut, then ReLU."""

    expansion = 1

    def __init__(self, dim: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int],
                 norm_kind: str) -> None:
        super().__init__()
        layers = self.layer_specs(dim, cin, cout, kernel, stride)
        bias = conv_bias(norm_kind)
        for n, (lcin, lcout, lkernel, lstride) in enumerate(layers, start=1):
            setattr(self, f"conv{n}", conv(dim, lcin, lcout, lkernel, lstride, bias=bias))
            setattr(self, f"norm{n}", norm(norm_kind, dim, lcout))
        self.num_layers = len(layers)
        self.act = nn.ReLU(inplace=True)
        needs_projection = not is_unit(stride) or cin != cout
        self.downsample = Downsample(dim, cin, cout, stride, norm_kind) if needs_projection else None

    @staticmethod
    def layer_specs(dim: int, cin: int, cout: int, kernel: Sequence[int],
                    stride: Sequence[int]) -> list[tuple[int, int, Sequence[int], Sequence[int]]]:
        """(in, out, kernel, stride) of each conv of the block (defined by BasicBlock and Bottleneck)."""
        ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        out = x
        for n in range(1, self.num_layers + 1):
            out = getattr(self, f"norm{n}")(getattr(self, f"conv{n}")(out))
            if n < self.num_layers:
                out = self.act(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(out + shortcut)


class BasicBlock(ResidualBlock):
    """ResNet-18/34 block: two k×k convs, the first strided."""

    @staticmethod
    def layer_specs(dim: int, cin: int, cout: int, kernel: Sequence[int],
                    stride: Sequence[int]) -> list[tuple[int, int, Sequence[int], Sequence[int]]]:
        """conv1 k (strided), conv2 k."""
        return [(cin, cout, kernel, stride), (cout, cout, kernel, [1] * dim)]


class Bottleneck(ResidualBlock):
    """ResNet-50 block (torchvision v1.5): 1×1 reduce, k×k strided, 1×1 expand by 4."""

    expansion = 4

    @staticmethod
    def layer_specs(dim: int, cin: int, cout: int, kernel: Sequence[int],
                    stride: Sequence[int]) -> list[tuple[int, int, Sequence[int], Sequence[int]]]:
        """conv1 1×1, conv2 k (strided), conv3 1×1; inner width = out / 4."""
        inner = cout // Bottleneck.expansion
        one = [1] * dim
        return [(cin, inner, one, one), (inner, inner, kernel, stride), (inner, cout, one, one)]
