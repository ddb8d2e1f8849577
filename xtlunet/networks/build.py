"""The single entry for trainers, predictors and planners: build a task network from a description."""
from __future__ import annotations

from torch import nn

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.networks.description import ArchitectureDescription
from xtlunet.networks.encoder import Encoder
from xtlunet.networks.nets import ClassificationNet, SegmentationNet

TASKS = ("segmentation", "classification")
GROUPS = ("encoder", "decoder", "head")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def build_network(desc: ArchitectureDescription, task: str, num_classes: int) -> nn.Module:
    """A SegmentationNet or ClassificationNet for `desc`; num_classes = output channels (incl. background)."""
    look_up_option(task, TASKS, "task")
    if num_classes < 1:
        raise XtlunetError(f"num_classes must be at least 1, got {num_classes}",
                           fix="check the labels/classes in dataset.json")
    if task == "segmentation":
        return SegmentationNet(desc, num_classes)
    return ClassificationNet(desc, num_classes)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def strip_wrapper_prefixes(name: str) -> str:
    """A parameter name without DDP (`module.`) and torch.compile (`_orig_mod.`) prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return unwrap(inner)
    return model


def parameter_group(name: str, bare_encoder: bool = False) -> str:
    """'encoder', 'decoder', 'head' (seg heads or classification head) or 'other' for a parameter name."""
    name = strip_wrapper_prefixes(name)
    if bare_encoder or name.startswith("encoder."):
        return "encoder"
    if name.startswith(("head.", "decoder.seg_heads.")):
        return "head"
    if name.startswith("decoder."):
        return "decoder"
    return "other"


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names (as `model.named_parameters()` gives them) per group: encoder, decoder, head[, other]."""
    bare = isinstance(unwrap(model), Encoder)
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, _ in model.named_parameters():
        groups.setdefault(parameter_group(name, bare), []).append(name)
    return groups
