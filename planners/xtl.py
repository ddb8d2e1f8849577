"""XTLPlanner: a 3D topology whose stages and widths match a pretrained 2D encoder, so every in-plane kernel transfers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.networks.description import FAMILIES, ArchitectureDescription, family_description
from xtlunet.planners import rules
from xtlunet.planners.default import DefaultPlanner


def pretrained_description(pretrained: str) -> tuple[ArchitectureDescription, dict]:
    """The 2D encoder description of a pretrain-2d checkpoint path or a named family (resnet18, ...)."""
    if pretrained in FAMILIES and pretrained != "plain":
        return family_description(pretrained, 2, 1), {"source": pretrained}
    path = Path(pretrained)
    if not path.exists():
        raise XtlunetError(f"--pretrained '{pretrained}' is neither a checkpoint file nor an encoder family",
                           path=path, fix=f"give a pretrain-2d checkpoint or one of: {', '.join(f for f in FAMILIES if f != 'plain')}")
    from xtlunet.transfer.checkpoint import file_digest, load_checkpoint_state

    _, meta = load_checkpoint_state(path)
    arch = meta.get("architecture")
    if not arch:
        raise XtlunetError("checkpoint holds no architecture description", path=path,
                           fix="use a checkpoint written by 'xtlunet pretrain-2d', or name the family (e.g. resnet18)")
    desc = ArchitectureDescription.from_json(arch)
    if desc.dim != 2:
        raise XtlunetError(f"checkpoint encoder is {desc.dim}D; the XTL planner needs a 2D encoder", path=path,
                           fix="pass a 2D (pretrain-2d) checkpoint")
    return desc, {"source": str(path.resolve()), "sha256": file_digest(path)}


TRANSFER_NORMS = ("instance", "batch")
# Why instance norm is the default for transferred encoders (documentation/transfer.md says the same):
NORM_REASON = {
    "instance": "instance norm (default): 3D batches are small (often 2), so batch statistics are noisy, and the 2D "
                "source's running statistics describe another modality; the source's affine scale and shift are "
                "still copied",
    "batch": "batch norm (--transfer-norm batch): the 2D source's affine parameters and running statistics are "
             "carried into BatchNorm3d (synchronised across DDP ranks)",
}


class XTLPlanner(DefaultPlanner):
    """Plans 3D networks constrained to a pretrained 2D encoder (family, stages, widths, in-plane kernels)."""

    plans_name = "xtlunetPlansXTL"

    def __init__(self, *args, pretrained: str = "resnet18", transfer_norm: str = "instance", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.source, self.source_info = pretrained_description(pretrained)
        self.norm = look_up_option(transfer_norm, TRANSFER_NORMS, "--transfer-norm")

    def architecture(self, spacing: list[float], patch: list[int]) -> ArchitectureDescription:
        """The source's stages and widths; per-axis strides and depth kernels (1 or cubic) planned from the spacing."""
        src = self.source
        dim = len(spacing)
        cur_sp = np.asarray(spacing, float)
        cur_sz = np.asarray(patch, float)
        strides, kernels = [], []
        for i in range(src.num_stages):
            want = [1] * (dim - 2) + list(src.strides[i])       # the source's in-plane strides
            stride = []
            for a in range(dim):
                depth = a < dim - 2
                ok_spacing = cur_sp[a] / cur_sp[dim - 2:].min() < 2 if depth else True
                pool = (want[a] > 1 or (depth and max(src.strides[i]) > 1)) and ok_spacing and cur_sz[a] >= 2 * rules.MIN_EDGE
                stride.append(2 if pool else 1)
            cur_sp = cur_sp * np.asarray(stride)
            cur_sz = cur_sz / np.asarray(stride)
            k = list(src.kernel_sizes[i])
            depth_k = [k[0] if cur_sp[a] / cur_sp[dim - 2:].min() < 2 else 1 for a in range(dim - 2)]
            strides.append(stride)
            kernels.append(depth_k + k)
        return ArchitectureDescription(family=src.family, dim=dim, in_channels=self.spec.num_channels,
                                       widths=list(src.widths), strides=strides, kernel_sizes=kernels,
                                       blocks=list(src.blocks), norm=self.norm)

    def constraint(self) -> dict:
        """Records which 2D encoder fixed the topology and what stayed free."""
        return {**self.source_info, "family": self.source.family, "widths": list(self.source.widths),
                "blocks": list(self.source.blocks), "in_plane_kernels": [k[-2:] for k in self.source.kernel_sizes],
                "depth_axis": 0, "transfer_norm": self.norm, "transfer_norm_reason": NORM_REASON[self.norm],
                "rule": "stages, widths, blocks and in-plane kernels copied from the 2D encoder; per stage a depth "
                        "kernel of 1 (exact copy) or the in-plane size (cubic: inflate, center and acs all apply) "
                        "and per-axis strides planned from the spacing"}
