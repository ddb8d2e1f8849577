"""Training-memory estimate for planners: parameters + optimiser state + stored activations.

Parameters, gradients and optimiser state are fp32 (4 bytes); the layer activations autograd keeps
are counted at the autocast width (2 bytes: training runs under bf16/fp16 autocast on GPUs) unless
told otherwise; the loss's copies of the logits are fp32 (the loss casts the logits to float).

The network is built once per description on the meta device (no memory, no values) and its layers
are walked without running them, recording for every layer whose input autograd keeps (conv,
transposed conv, norm, pool, linear) the channel count and per-axis downsampling of that input. An
estimate for a patch size is then plain arithmetic: fast enough to call in a patch-shrinking loop,
and monotone in the patch.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Sequence

import torch
from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.networks.build import build_network, count_parameters
from xtlunet.networks.blocks import ResidualBlock
from xtlunet.networks.description import ArchitectureDescription
from xtlunet.networks.heads import ClassificationHead
from xtlunet.networks.nets import ClassificationNet

PARAMETER_COPIES = 4        # weights, gradients and two optimiser moments (Adam; SGD+momentum needs 3)
PARAMETER_BYTES = 4         # parameters, gradients and optimiser state stay fp32 under autocast
AUTOCAST_BYTES = 2          # activations under bf16/fp16 autocast (fp32 training, e.g. on CPU: 4)
LOSS_BYTES = 4              # the loss's logit copies (softmax, log-softmax) are fp32 whatever the autocast
OUTPUT_COPIES = 2           # logits and the loss's softmax
ACTIVATION_OVERHEAD = 1.3   # gradient buffers alive during backward, workspace, allocator slack

CONVS = (nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVS = (nn.ConvTranspose2d, nn.ConvTranspose3d)
SHAPE_KEEPING_SAVED = (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d)

# (channels, per-axis downsampling of the feature map relative to the input; () for a pooled vector)
Record = tuple[int, tuple[int, ...]]


def _trace(module: nn.Module, x: Record, saved: list[Record]) -> Record:
    """Propagate a feature-map record through a module, appending the inputs autograd keeps."""
    c, down = x
    if isinstance(module, CONVS + TRANSPOSED_CONVS + (nn.MaxPool2d, nn.MaxPool3d, nn.Linear) + SHAPE_KEEPING_SAVED):
        saved.append(x)
    if isinstance(module, CONVS):
        return module.out_channels, tuple(d * s for d, s in zip(down, module.stride))
    if isinstance(module, TRANSPOSED_CONVS):
        return module.out_channels, tuple(max(d // s, 1) for d, s in zip(down, module.stride))
    if isinstance(module, (nn.MaxPool2d, nn.MaxPool3d)):
        return c, tuple(d * s for d, s in zip(down, module.stride))
    if isinstance(module, nn.Linear):
        return module.out_features, ()
    if isinstance(module, ClassificationHead):
        x = (c, ())  # global average pooling
    if isinstance(module, ResidualBlock) and module.downsample is not None:
        _trace(module.downsample, x, saved)  # the shortcut reads the block input
    for name, child in module.named_children():
        if not (isinstance(module, ResidualBlock) and name == "downsample"):
            x = _trace(child, x, saved)
    return x


def _trace_network(net: nn.Module, desc: ArchitectureDescription) -> tuple[list[Record], list[Record]]:
    """Saved-input records and logit records of a training step of a SegmentationNet/ClassificationNet."""
    saved: list[Record] = []
    x: Record = (desc.in_channels, (1,) * desc.dim)
    skips = []
    for stage in net.encoder.stages:
        skips.append(x := _trace(stage, x, saved))
    if isinstance(net, ClassificationNet):
        return saved, [_trace(net.head, x, saved)]
    outputs, n_stages = [], len(net.decoder.stages)
    for k, (stage, head) in enumerate(zip(net.decoder.stages, net.decoder.seg_heads)):
        x = _trace(stage.up, x, saved)
        s = len(skips) - 2 - k  # the skip's stage; none for the full-resolution stage behind a strided stem
        x = (x[0] + (skips[s][0] if s >= 0 else 0), x[1])
        for block in stage.blocks:
            x = _trace(block, x, saved)
        if desc.deep_supervision or k == n_stages - 1:
            outputs.append(_trace(head, x, saved))
    return saved, outputs


@lru_cache(maxsize=64)
def _profile(desc_json: str, task: str, num_classes: int) -> tuple[int, tuple[Record, ...], tuple[Record, ...]]:
    """Parameter count, saved-input records and logit records of a network built on the meta device."""
    desc = ArchitectureDescription.from_json(json.loads(desc_json))
    with torch.device("meta"):
        net = build_network(desc, task, num_classes)
    saved, outputs = _trace_network(net, desc)
    return count_parameters(net), tuple(saved), tuple(outputs)


def _elements(records: Sequence[Record], patch_size: Sequence[int]) -> int:
    """Total elements of the recorded feature maps for one sample of `patch_size`."""
    return sum(c * math.prod(math.ceil(p / d) for p, d in zip(patch_size, down)) for c, down in records)


def _checked_profile(desc: ArchitectureDescription, patch_size: Sequence[int], num_classes: int,
                     task: str) -> tuple[int, tuple[Record, ...], tuple[Record, ...]]:
    """`_profile` of the description, once the patch is checked to fit it."""
    if len(patch_size) != desc.dim or min(patch_size) < 1:
        raise XtlunetError(f"patch size {list(patch_size)} does not fit a {desc.dim}D network",
                           fix=f"give {desc.dim} positive sizes")
    return _profile(json.dumps(desc.to_json(), sort_keys=True), task, num_classes)


def _activation_parts(saved: Sequence[Record], outputs: Sequence[Record], patch_size: Sequence[int]) -> tuple[int, int]:
    """(elements of the layer inputs kept for backward, elements of the loss's logit copies) for one sample."""
    return _elements(saved, patch_size), OUTPUT_COPIES * _elements(outputs, patch_size)


def estimate_activation_elements(desc: ArchitectureDescription, patch_size: Sequence[int], num_classes: int,
                                 task: str = "segmentation") -> tuple[int, int]:
    """Elements autograd stores for one training sample: (layer inputs kept for backward, the loss's logit copies)."""
    _, saved, outputs = _checked_profile(desc, patch_size, num_classes, task)
    return _activation_parts(saved, outputs, patch_size)


def estimate_memory_bytes(desc: ArchitectureDescription, patch_size: Sequence[int], batch_size: int,
                          num_classes: int, task: str = "segmentation",
                          activation_bytes: int = AUTOCAST_BYTES) -> int:
    """Approximate training memory in bytes: fp32 parameters and optimiser state, activations at autocast width.

    `activation_bytes` (the layer activations' width) is 2 for bf16/fp16 autocast (GPU training, the
    default), 4 for fp32 training; parameters, gradients, optimiser state and the loss's logit copies are fp32.

    Example:
        >>> from xtlunet.networks.description import family_description
        >>> estimate_memory_bytes(family_description("resnet18", 2, 1), [256, 256], 8, 2) > 0
        True
    """
    params, saved, outputs = _checked_profile(desc, patch_size, num_classes, task)
    layers, logits = _activation_parts(saved, outputs, patch_size)
    activations = batch_size * ACTIVATION_OVERHEAD * (activation_bytes * layers + LOSS_BYTES * logits)
    return int(PARAMETER_BYTES * PARAMETER_COPIES * params + activations)
