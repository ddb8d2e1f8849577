"""Structural key matching: parse tensor names into (group, stage, block, layer, param).

A source state dict may come from a whole 2D SegmentationNet or ClassificationNet, a bare Encoder
(keys without the ``encoder.`` prefix), a DataParallel/DDP or ``torch.compile`` wrapper (``module.``
and ``_orig_mod.`` prefixes), or torchvision (``layer1.0.conv1.weight``, ``features.0.weight``), which
is mapped onto our names through ``xtlunet.networks.torchvision_keys.torchvision_to_xtlunet``.
"""
from __future__ import annotations

import re
from typing import Mapping, NamedTuple

import torch
from torch import Tensor

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.networks.build import GROUPS, parameter_group, strip_wrapper_prefixes as strip_prefixes
from xtlunet.networks.description import FAMILIES
from xtlunet.networks.torchvision_keys import torchvision_to_xtlunet, xtlunet_to_torchvision

INDEXED = ("stages", "blocks", "seg_heads")

_TORCHVISION_RESNET = re.compile(r"^(conv1|bn1|layer[1-4]\.\d+\.|fc)\b")
_TORCHVISION_VGG = re.compile(r"^(features|classifier)\.\d+\.")
_EMPTY = torch.empty(0)


class StructuralKey(NamedTuple):
    """Where a tensor sits in a network, independent of dimension and wrapper prefixes."""

    group: str               # encoder / decoder / head
    stage: int | None        # encoder or decoder stage (seg head index for `seg_heads`)
    block: int | None        # block within the stage
    layer: str               # e.g. conv, norm, conv2, downsample.conv, up, seg_heads, fc1
    param: str               # weight, bias, running_mean, ...

    @property
    def coverage_group(self) -> str:
        """The group a tensor counts toward: networks.parameter_group of its canonical name (seg heads are heads)."""
        return parameter_group(self.name)

    @property
    def module(self) -> tuple[str, int | None, int | None, str]:
        """The structural key of the owning layer (without the parameter name)."""
        return self.group, self.stage, self.block, self.layer

    @property
    def name(self) -> str:
        """Canonical dotted name (as in a full SegmentationNet/ClassificationNet)."""
        parts = [self.group]
        if self.layer == "seg_heads":
            parts += ["seg_heads", str(self.stage)]
        else:
            if self.stage is not None:
                parts += ["stages", str(self.stage)]
            if self.block is not None:
                parts += ["blocks", str(self.block)]
            parts.append(self.layer)
        return ".".join(parts + [self.param])


def parse_key(key: str) -> StructuralKey | None:
    """Parse a tensor name into its structural key; None when it is not one of our network's names."""
    tokens = strip_prefixes(key).split(".")
    if tokens[0] in GROUPS:
        group, tokens = tokens[0], tokens[1:]
    elif tokens[0] == "stages":
        group = "encoder"  # a bare Encoder's state dict
    else:
        return None
    if len(tokens) < 2:
        return None
    param, tokens = tokens[-1], tokens[:-1]
    stage = block = None
    layer: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in INDEXED and i + 1 < len(tokens) and tokens[i + 1].isdigit():
            index = int(tokens[i + 1])
            if tok == "blocks":
                block = index
            else:
                stage = index
                if tok == "seg_heads":
                    layer.append(tok)
            i += 2
            continue
        layer.append(tok)
        i += 1
    if not layer:
        return None
    return StructuralKey(group, stage, block, ".".join(layer), param)


def detect_source_format(keys: list[str]) -> str:
    """'xtlunet', 'torchvision-resnet', 'torchvision-vgg' or 'unknown', judged from the key names."""
    stripped = [strip_prefixes(k) for k in keys]
    if any(parse_key(k) is not None for k in stripped):
        return "xtlunet"
    if any(_TORCHVISION_RESNET.match(k) for k in stripped) and any(k.startswith("layer") for k in stripped):
        return "torchvision-resnet"
    if any(_TORCHVISION_VGG.match(k) for k in stripped):
        return "torchvision-vgg"
    return "unknown"


def infer_torchvision_family(keys: list[str]) -> str:
    """The torchvision family of a ResNet/VGG state dict (resnet18/34/50, vgg16_bn) from its keys."""
    stripped = [strip_prefixes(k) for k in keys]
    if any(k.startswith("features.") for k in stripped):
        if not any(k.endswith("running_mean") for k in stripped):
            raise XtlunetError("torchvision VGG state dict without batch norm: only vgg16_bn is supported",
                               fix="use torchvision's vgg16_bn weights")
        return "vgg16_bn"
    if any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in stripped):
        return "resnet50"
    layer3_blocks = {int(m.group(1)) for k in stripped if (m := re.match(r"layer3\.(\d+)\.", k))}
    return "resnet34" if len(layer3_blocks) > 2 else "resnet18"


def to_structural(state_dict: Mapping[str, Tensor], source_family: str | None = None,
                  ) -> tuple[dict[StructuralKey, tuple[str, Tensor]], list[tuple[str, Tensor, str]], str]:
    """Index a source state dict by structural key.

    Returns (structural key → (source key, tensor), unmatched (key, tensor, reason) rows, format); the
    unmatched rows include torchvision classifier keys and VGG conv biases folded into BatchNorm.
    """
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    fmt = detect_source_format(list(tensors))
    unrecognised: list[tuple[str, Tensor, str]] = []
    named = {k: (k, v) for k, v in tensors.items()}  # our name → (source key, tensor)
    if fmt.startswith("torchvision"):
        family = source_family or infer_torchvision_family(list(tensors))
        named, unrecognised = _from_torchvision(tensors, family)
        fmt = f"{fmt}:{family}"
    index: dict[StructuralKey, tuple[str, Tensor]] = {}
    for key, (original, value) in named.items():
        parsed = parse_key(key)
        if parsed is None:
            unrecognised.append((original, value, "not a network tensor name this module recognises"))
        elif parsed in index:
            unrecognised.append((original, value, f"duplicate of '{index[parsed][0]}' after prefix stripping"))
        else:
            index[parsed] = (original, value)
    return index, unrecognised, fmt


def _from_torchvision(tensors: dict[str, Tensor], family: str,
                      ) -> tuple[dict[str, tuple[str, Tensor]], list[tuple[str, Tensor, str]]]:
    """Rename a torchvision state dict to our encoder names; keep each tensor's torchvision key."""
    look_up_option(family, [f for f in FAMILIES if f != "plain"], "torchvision source family")
    originals = {strip_prefixes(k): k for k in tensors}
    mapping = torchvision_to_xtlunet(tensors, family, prefix="encoder.")
    named: dict[str, tuple[str, Tensor]] = {}
    for key, value in mapping.state_dict.items():
        back = next(iter(xtlunet_to_torchvision({key: value}, family, fill_conv_bias=False).state_dict), key)
        named[key] = (originals.get(back, back), value)
    unrecognised = []
    for key in mapping.unused:
        is_head = re.match(r"(fc|classifier)\.", strip_prefixes(key))
        unrecognised.append((key, tensors[key], "torchvision classifier: heads differ between source and target"
                             if is_head else "no torchvision rule maps this key"))
    for key in mapping.folded:   # encoder-relative names of conv biases torchvision VGG carries before BN
        back = next(iter(xtlunet_to_torchvision({key: _EMPTY}, family, fill_conv_bias=False).state_dict), key)
        original = originals.get(back, back)
        unrecognised.append((original, tensors.get(original, _EMPTY), "conv bias folded into the following "
                             "BatchNorm's running_mean (our convs before batch norm have no bias)"))
    return named, unrecognised
