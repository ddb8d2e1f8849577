"""Structural parsing of tensor names, wrapper prefixes and source-format detection."""
from __future__ import annotations

import torch

from xtlunet.transfer.keys import (StructuralKey, detect_source_format, infer_torchvision_family, parse_key,
                                   to_structural)


def test_parse_encoder_decoder_head_names() -> None:
    k = parse_key("encoder.stages.2.blocks.1.conv.weight")
    assert k == StructuralKey("encoder", 2, 1, "conv", "weight")
    assert parse_key("stages.2.blocks.1.conv.weight") == k                       # bare Encoder
    assert parse_key("module._orig_mod.encoder.stages.2.blocks.1.conv.weight") == k
    assert parse_key("_orig_mod.module.stages.2.blocks.1.conv.weight") == k
    ds = parse_key("encoder.stages.3.blocks.0.downsample.norm.running_var")
    assert ds == StructuralKey("encoder", 3, 0, "downsample.norm", "running_var")
    assert ds.name == "encoder.stages.3.blocks.0.downsample.norm.running_var"
    up = parse_key("decoder.stages.1.up.weight")
    assert (up.group, up.stage, up.block, up.layer, up.coverage_group) == ("decoder", 1, None, "up", "decoder")
    seg = parse_key("decoder.seg_heads.3.bias")
    assert seg.name == "decoder.seg_heads.3.bias" and seg.coverage_group == "head"
    fc = parse_key("head.fc2.weight")
    assert fc == StructuralKey("head", None, None, "fc2", "weight") and fc.name == "head.fc2.weight"


def test_unknown_names_do_not_parse() -> None:
    for name in ("backbone.layer1.0.conv1.weight", "layer1.0.conv1.weight", "features.0.weight", "encoder.weight",
                 "fc.bias"):
        assert parse_key(name) is None


def test_detect_format() -> None:
    assert detect_source_format(["module.encoder.stages.0.blocks.0.conv.weight"]) == "xtlunet"
    assert detect_source_format(["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"]) == \
        "torchvision-resnet"
    assert detect_source_format(["features.0.weight", "features.1.running_mean", "classifier.0.weight"]) == \
        "torchvision-vgg"
    assert detect_source_format(["backbone.conv1.weight", "backbone.layer1.0.conv1.weight"]) == "unknown"


def test_infer_torchvision_family() -> None:
    def resnet(blocks: list[int], bottleneck: bool) -> list[str]:
        keys = ["conv1.weight", "bn1.weight"]
        for i, n in enumerate(blocks, start=1):
            for j in range(n):
                keys += [f"layer{i}.{j}.conv{c}.weight" for c in ((1, 2, 3) if bottleneck else (1, 2))]
        return keys

    assert infer_torchvision_family(resnet([2, 2, 2, 2], False)) == "resnet18"
    assert infer_torchvision_family(resnet([3, 4, 6, 3], False)) == "resnet34"
    assert infer_torchvision_family(resnet([3, 4, 6, 3], True)) == "resnet50"
    assert infer_torchvision_family(["features.0.weight", "features.1.running_mean"]) == "vgg16_bn"


def test_to_structural_indexes_and_reports_unrecognised() -> None:
    t = torch.zeros(2)
    index, unrecognised, fmt = to_structural({
        "module.encoder.stages.0.blocks.0.norm.weight": t,
        "encoder.stages.0.blocks.0.norm.weight": t,          # the same position without prefix: a duplicate
        "optimizer_step": t,
        "not_a_tensor": 3,                                   # ignored: state dicts hold tensors only
    })
    assert fmt == "xtlunet"
    assert list(index) == [StructuralKey("encoder", 0, 0, "norm", "weight")]
    reasons = {k: r for k, _, r in unrecognised}
    assert "duplicate" in reasons["encoder.stages.0.blocks.0.norm.weight"]
    assert "not a network tensor name" in reasons["optimizer_step"]
