"""torchvision ResNet/VGG16-BN key mapping: exact torchvision names, round trip, bias folding, refusals."""
from __future__ import annotations

import pytest
import torch
from network_cases import tiny_description

from xtlunet.errors import XtlunetError
from xtlunet.networks import build_encoder, build_network, family_description
from xtlunet.networks.torchvision_keys import torchvision_to_xtlunet, xtlunet_to_torchvision

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet_keys(blocks: list[int], convs: int) -> list[str]:
    """torchvision.models.resnet state-dict keys, in order, written from its module structure."""
    keys = ["conv1.weight", *(f"bn1.{p}" for p in BN)]
    for layer, n in enumerate(blocks, start=1):
        for j in range(n):
            for c in range(1, convs + 1):
                keys += [f"layer{layer}.{j}.conv{c}.weight", *(f"layer{layer}.{j}.bn{c}.{p}" for p in BN)]
            if j == 0 and (layer > 1 or convs == 3):
                keys += [f"layer{layer}.{j}.downsample.0.weight", *(f"layer{layer}.{j}.downsample.1.{p}" for p in BN)]
    return keys + ["fc.weight", "fc.bias"]


VGG16_BN_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
TORCHVISION_VGG16_BN_KEYS = [
    *(k for i in VGG16_BN_CONVS
      for k in (f"features.{i}.weight", f"features.{i}.bias", *(f"features.{i + 1}.{p}" for p in BN))),
    *(f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")),
]


def test_resnet18_maps_to_exactly_torchvisions_names_and_back() -> None:
    encoder = build_encoder(family_description("resnet18", 2, 3))
    tv = xtlunet_to_torchvision(encoder.state_dict(), "resnet18")
    assert tv.unused == []
    names = list(tv.state_dict)
    assert len(names) == 120 and sum("downsample" in n for n in names) == 18  # 122 in torchvision, less fc
    assert names[:7] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                         "bn1.num_batches_tracked", "layer1.0.conv1.weight"]
    assert {"layer1.1.bn2.running_var", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.num_batches_tracked",
            "layer4.1.conv2.weight"} <= set(names)
    assert not any(n.startswith("layer1.0.downsample") for n in names)
    assert names == torchvision_resnet_keys([2, 2, 2, 2], convs=2)[:-2]
    assert tv.state_dict["conv1.weight"].shape == (64, 3, 7, 7)
    assert tv.state_dict["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)

    back = torchvision_to_xtlunet({**tv.state_dict, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)},
                                  "resnet18")
    assert back.unused == ["fc.weight", "fc.bias"]
    fresh = build_encoder(family_description("resnet18", 2, 3))
    fresh.load_state_dict(back.state_dict, strict=True)
    for name, value in encoder.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


@pytest.mark.parametrize("family, blocks, convs", [("resnet34", [3, 4, 6, 3], 2), ("resnet50", [3, 4, 6, 3], 3)])
def test_deeper_resnets_round_trip(family: str, blocks: list[int], convs: int) -> None:
    encoder = build_encoder(tiny_description(family, 2, in_channels=3))  # names do not depend on widths
    tv = xtlunet_to_torchvision(encoder.state_dict(), family).state_dict
    assert list(tv) == torchvision_resnet_keys(blocks, convs)[:-2]
    assert len(tv) == (318 if family == "resnet50" else 216)  # torchvision: 320 / 218 with fc
    build_encoder(tiny_description(family, 2, in_channels=3)).load_state_dict(
        torchvision_to_xtlunet(tv, family).state_dict, strict=True)


def test_vgg16_bn_maps_to_torchvision_features_and_back() -> None:
    encoder = build_encoder(tiny_description("vgg16_bn", 2, in_channels=3))
    tv = xtlunet_to_torchvision(encoder.state_dict(), "vgg16_bn").state_dict
    assert list(tv) == TORCHVISION_VGG16_BN_KEYS[:-6]  # zero conv biases filled in; no classifier
    assert not any(tv[f"features.{i}.bias"].any() for i in VGG16_BN_CONVS)
    source = {**tv, "classifier.0.weight": torch.zeros(2, 2)}
    back = torchvision_to_xtlunet(source, "vgg16_bn")
    assert back.unused == ["classifier.0.weight"] and len(back.folded) == 13
    build_encoder(tiny_description("vgg16_bn", 2, in_channels=3)).load_state_dict(back.state_dict, strict=True)
    bare = xtlunet_to_torchvision(encoder.state_dict(), "vgg16_bn", fill_conv_bias=False).state_dict
    assert set(tv) - set(bare) == {f"features.{i}.bias" for i in VGG16_BN_CONVS}


def test_vgg_conv_bias_is_folded_into_the_running_mean_exactly() -> None:
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).eval()
    reference[1].running_mean.uniform_(-1, 1)
    reference[1].running_var.uniform_(0.5, 2)
    reference[1].weight.data.uniform_(0.5, 2)
    encoder = build_encoder(tiny_description("vgg16_bn", 2, in_channels=3)).eval()
    tv = xtlunet_to_torchvision(encoder.state_dict(), "vgg16_bn").state_dict
    tv.update({f"features.0.{k}": v for k, v in reference[0].state_dict().items()})
    tv.update({f"features.1.{k}": v for k, v in reference[1].state_dict().items()})
    mapped = torchvision_to_xtlunet(tv, "vgg16_bn")
    assert "stages.0.blocks.0.conv.bias" in mapped.folded
    encoder.load_state_dict(mapped.state_dict, strict=True)
    x = torch.randn(1, 3, 8, 8)
    block = encoder.stages[0].blocks[0]
    with torch.no_grad():
        torch.testing.assert_close(block.norm(block.conv(x)), reference(x))


def test_wrapper_prefixes_are_stripped_and_foreign_prefixes_refused() -> None:
    tv = xtlunet_to_torchvision(build_encoder(tiny_description("resnet18", 2)).state_dict(), "resnet18").state_dict
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        mapped = torchvision_to_xtlunet({prefix + k: v for k, v in tv.items()}, "resnet18")
        assert set(mapped.state_dict) == set(build_encoder(tiny_description("resnet18", 2)).state_dict())
    with pytest.raises(XtlunetError, match=r"rule 'conv1\.\{p\}' matches no key.*backbone\.conv1\.weight"):
        torchvision_to_xtlunet({"backbone." + k: v for k, v in tv.items()}, "resnet18")
    with pytest.raises(XtlunetError, match="rule 'features.0"):
        torchvision_to_xtlunet(tv, "vgg16_bn")
    with pytest.raises(XtlunetError, match="did you mean 'resnet18'"):
        torchvision_to_xtlunet(tv, "resnet19")


def test_foreign_block_layers_are_reported_unused() -> None:
    tv50 = xtlunet_to_torchvision(build_encoder(tiny_description("resnet50", 2)).state_dict(), "resnet50").state_dict
    mapped = torchvision_to_xtlunet(tv50, "resnet18")
    assert "layer1.0.conv3.weight" in mapped.unused and "layer1.0.bn3.running_mean" in mapped.unused
    assert "stages.1.blocks.0.conv2.weight" in mapped.state_dict


def test_prefix_targets_a_whole_network_and_network_keys_map_back() -> None:
    net = build_network(tiny_description("resnet18", 2), "segmentation", 2)
    tv = xtlunet_to_torchvision(net.state_dict(), "resnet18")
    assert tv.unused and all(k.startswith("decoder.") for k in tv.unused)
    mapped = torchvision_to_xtlunet(tv.state_dict, "resnet18", prefix="encoder.").state_dict
    result = build_network(tiny_description("resnet18", 2), "segmentation", 2).load_state_dict(mapped, strict=False)
    assert result.unexpected_keys == [] and all(k.startswith("decoder.") for k in result.missing_keys)
