"""2D/3D parameter-name identity, the attribute tree, first_conv/classifier declarations and groups."""
from __future__ import annotations

import pytest
import torch
from network_cases import FAMILIES, tiny_description

from xtlunet.networks import build_encoder, build_network, count_parameters, family_description, parameter_groups

TASKS = ("segmentation", "classification")


def meta_network(desc, task: str, num_classes: int = 3) -> torch.nn.Module:
    """A network with meta tensors: names and shapes without memory or initialisation cost."""
    with torch.device("meta"):
        return build_network(desc, task, num_classes)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_2d_and_3d_nets_share_parameter_names_and_in_plane_shapes(family: str, task: str) -> None:
    desc2 = tiny_description(family, 2)
    sd2 = meta_network(desc2, task).state_dict()
    sd3 = meta_network(desc2.with_dim(3, depth_kernels=[3] * desc2.num_stages), task).state_dict()
    assert list(sd2) == list(sd3)
    for name, t2 in sd2.items():
        t3 = sd3[name]
        if t2.ndim == 4:  # a conv kernel gains the depth axis in front of the in-plane axes
            assert t3.shape[:2] == t2.shape[:2] and t3.shape[3:] == t2.shape[2:], name
        else:
            assert t3.shape == t2.shape, name


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_first_conv_and_classifier_name_real_layers(family: str, dim: int, task: str) -> None:
    desc = tiny_description(family, dim, in_channels=2)
    net = meta_network(desc, task, num_classes=5)
    params = dict(net.named_parameters())
    assert params[f"{net.first_conv}.weight"].shape[1] == 2
    heads = (net.classifier,) if isinstance(net.classifier, str) else net.classifier
    assert heads
    for prefix in heads:
        assert params[f"{prefix}.weight"].shape[0] == 5
    encoder = build_encoder(desc)
    assert f"{encoder.first_conv}.weight" in dict(encoder.named_parameters()) and encoder.classifier == ()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_groups_partition_the_parameters(family: str, task: str) -> None:
    net = meta_network(tiny_description(family, 3), task)
    groups = parameter_groups(net)
    names = [n for n, _ in net.named_parameters()]
    assert sorted(sum(groups.values(), [])) == sorted(names)
    assert set(groups) == {"encoder", "decoder", "head"}
    assert groups["encoder"] and all(n.startswith("encoder.") for n in groups["encoder"])
    heads = (net.classifier,) if isinstance(net.classifier, str) else net.classifier
    assert all(any(n.startswith(h + ".") for n in groups["head"]) for h in heads)
    if task == "segmentation":
        assert groups["decoder"] and groups["head"] == [n for n in names if n.startswith("decoder.seg_heads.")]
    else:
        assert groups["decoder"] == [] and groups["head"] == [n for n in names if n.startswith("head.")]


def test_parameter_groups_of_a_bare_encoder_and_a_wrapped_net() -> None:
    desc = tiny_description("plain", 2)
    encoder = build_encoder(desc)
    assert parameter_groups(encoder)["encoder"] == [n for n, _ in encoder.named_parameters()]
    wrapped = torch.nn.Module()
    wrapped.module = build_network(desc, "segmentation", 2)
    groups = parameter_groups(wrapped)
    assert groups["encoder"][0].startswith("module.encoder.") and groups["head"][0].startswith("module.decoder.seg_")


def test_attribute_tree_of_each_family() -> None:
    names = {f: set(meta_network(family_description(f, 2, 3), "segmentation").state_dict())
             for f in ("resnet18", "resnet50", "vgg16_bn")}
    plain = set(meta_network(tiny_description("plain", 2), "segmentation").state_dict())
    assert {"encoder.stages.0.blocks.0.conv.weight", "encoder.stages.0.blocks.0.conv.bias",
            "encoder.stages.1.blocks.0.norm.weight", "decoder.stages.0.up.weight",
            "decoder.stages.2.blocks.1.conv.weight", "decoder.seg_heads.2.weight"} <= plain
    assert "encoder.stages.0.blocks.0.norm.running_mean" not in plain  # instance norm keeps no statistics
    r18, r50, vgg = names["resnet18"], names["resnet50"], names["vgg16_bn"]
    assert {"encoder.stages.0.blocks.0.conv.weight", "encoder.stages.0.blocks.0.norm.num_batches_tracked",
            "encoder.stages.1.blocks.1.conv2.weight", "encoder.stages.2.blocks.0.downsample.conv.weight",
            "encoder.stages.4.blocks.1.norm2.running_var", "decoder.stages.4.up.weight",
            "decoder.seg_heads.4.weight"} <= r18
    assert "encoder.stages.1.blocks.0.downsample.conv.weight" not in r18  # layer1 keeps 64 channels
    assert "encoder.stages.0.blocks.0.conv.bias" not in r18  # no bias before batch norm
    assert {"encoder.stages.1.blocks.0.downsample.conv.weight", "encoder.stages.1.blocks.2.conv3.weight",
            "encoder.stages.4.blocks.2.norm3.weight"} <= r50
    assert {"encoder.stages.4.blocks.2.conv.weight", "encoder.stages.4.blocks.2.norm.running_mean",
            "decoder.seg_heads.3.weight"} <= vgg and "decoder.stages.4.up.weight" not in vgg


def test_full_width_encoders_match_torchvision_parameter_counts() -> None:
    # torchvision totals minus the fc / classifier head; our VGG convs before BN carry no bias (4,224 values)
    expected = {"resnet18": 11_689_512 - 513_000, "resnet34": 21_797_672 - 513_000,
                "resnet50": 25_557_032 - 2_049_000, "vgg16_bn": 14_723_136 - 4_224}
    for family, count in expected.items():
        with torch.device("meta"):
            encoder = build_encoder(family_description(family, 2, 3))
        assert count_parameters(encoder) == count, family
