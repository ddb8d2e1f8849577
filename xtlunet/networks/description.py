"""ArchitectureDescription: the one description from which 2D and 3D networks are built.

A network is a sequence of *stages*. Stage i first reduces resolution by ``strides[i]`` (per array
axis) and then applies ``blocks[i]`` blocks with ``kernel_sizes[i]`` kernels, ending at
``widths[i]`` channels. Families fix how a stage is made:

- ``plain``: nnU-Net-like; each stage = ``blocks[i]`` conv–norm–LeakyReLU, the first one strided.
- ``resnet18`` / ``resnet34`` (basic blocks) and ``resnet50`` (bottleneck blocks): stage 0 is the
  torchvision stem conv (7×7 in-plane, strided); stage 1 downsamples with the stem max-pool and
  holds ``layer1``; stages 2–4 hold ``layer2``–``layer4`` (first block strided).
- ``vgg16_bn``: stages of conv–BN–ReLU; stages 1–4 downsample with a max-pool first.

Axes are array axes: (z, y, x) in 3D, (y, x) in 2D. In 3D the last two axes are the in-plane axes
that carry a 2D network's kernels; the first is the *depth* axis along which 2D kernels are
converted (inflate / center / acs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from xtlunet.errors import look_up_option

FAMILIES = ("plain", "resnet18", "resnet34", "resnet50", "vgg16_bn")

# torchvision topologies: stage widths (output channels) and blocks per stage
FAMILY_TEMPLATES: dict[str, dict[str, list[int]]] = {
    "resnet18": {"widths": [64, 64, 128, 256, 512], "blocks": [1, 2, 2, 2, 2]},
    "resnet34": {"widths": [64, 64, 128, 256, 512], "blocks": [1, 3, 4, 6, 3]},
    "resnet50": {"widths": [64, 256, 512, 1024, 2048], "blocks": [1, 3, 4, 6, 3]},
    "vgg16_bn": {"widths": [64, 128, 256, 512, 512], "blocks": [2, 2, 3, 3, 3]},
}
IN_PLANE_KERNELS: dict[str, list[int]] = {  # in-plane kernel edge per stage for fixed families
    "resnet18": [7, 3, 3, 3, 3], "resnet34": [7, 3, 3, 3, 3], "resnet50": [7, 3, 3, 3, 3],
    "vgg16_bn": [3, 3, 3, 3, 3],
}


@dataclass
class ArchitectureDescription:
    """Topology of an encoder (and of the decoder/head built on it)."""

    family: str
    dim: int
    in_channels: int
    widths: list[int]
    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    blocks: list[int]
    norm: str = "instance"          # 'instance' or 'batch'
    decoder_blocks: list[int] = field(default_factory=list)   # per decoder stage (default 2 each)
    deep_supervision: bool = True

    def __post_init__(self) -> None:
        look_up_option(self.family, FAMILIES, "encoder family")
        look_up_option(self.norm, ("instance", "batch"), "norm")
        n = len(self.widths)
        for name in ("strides", "kernel_sizes", "blocks"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} stages, widths has {n}")
        for name in ("strides", "kernel_sizes"):
            for v in getattr(self, name):
                if len(v) != self.dim:
                    raise ValueError(f"{name} entry {v} does not have {self.dim} axes")
        if not self.decoder_blocks:
            self.decoder_blocks = [2] * (n - 1)

    @property
    def num_stages(self) -> int:
        """Number of encoder stages."""
        return len(self.widths)

    def total_stride(self) -> list[int]:
        """Product of strides per axis (the bottleneck's downsampling)."""
        out = [1] * self.dim
        for s in self.strides:
            out = [a * b for a, b in zip(out, s)]
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ArchitectureDescription":
        """Inverse of to_json."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def with_dim(self, dim: int, depth_kernels: list[int] | None = None,
                 depth_strides: list[int] | None = None) -> "ArchitectureDescription":
        """The same topology in `dim` dimensions (2D→3D: add a depth axis with given kernels/strides)."""
        if dim == self.dim:
            return ArchitectureDescription.from_json(self.to_json())
        if (self.dim, dim) == (3, 2):
            return ArchitectureDescription(**{**self.to_json(), "dim": 2,
                                              "strides": [s[1:] for s in self.strides],
                                              "kernel_sizes": [k[1:] for k in self.kernel_sizes]})
        n = self.num_stages
        dk = depth_kernels or [1] * n
        ds = depth_strides or [1] * n
        return ArchitectureDescription(**{**self.to_json(), "dim": 3,
                                          "strides": [[ds[i], *self.strides[i]] for i in range(n)],
                                          "kernel_sizes": [[dk[i], *self.kernel_sizes[i]] for i in range(n)]})


def family_description(family: str, dim: int, in_channels: int, strides: list[list[int]] | None = None,
                       depth_kernels: list[int] | None = None, norm: str | None = None) -> ArchitectureDescription:
    """The torchvision-like description of a fixed family (resnet*/vgg16_bn) with planned strides."""
    look_up_option(family, [f for f in FAMILIES if f != "plain"], "pretrainable encoder family")
    t = FAMILY_TEMPLATES[family]
    n = len(t["widths"])
    if strides is None:
        first = 1 if family.startswith("vgg") else 2
        strides = [[first] * dim] + [[2] * dim for _ in range(n - 1)]
    ks = IN_PLANE_KERNELS[family]
    dk = depth_kernels or [1] * n
    kernels = [[k, k] if dim == 2 else [dk[i], k, k] for i, k in enumerate(ks)]
    return ArchitectureDescription(family=family, dim=dim, in_channels=in_channels, widths=list(t["widths"]),
                                   strides=[list(s) for s in strides], kernel_sizes=kernels,
                                   blocks=list(t["blocks"]), norm=norm or "batch")
