"""Output shapes of every family × dimension × task, deep supervision, and input checks."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from network_cases import FAMILIES, input_shape, tiny_description

from xtlunet.errors import XtlunetError
from xtlunet.networks import build_encoder, build_network
from xtlunet.networks.description import ArchitectureDescription

NUM_CLASSES = 3


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_segmentation_and_classification_shapes(family: str, dim: int) -> None:
    desc = tiny_description(family, dim)
    x = torch.randn(2, desc.in_channels, *input_shape(dim))
    seg = build_network(desc, "segmentation", NUM_CLASSES).eval()
    cls = build_network(desc, "classification", NUM_CLASSES).eval()
    with torch.no_grad():
        assert seg(x).shape == (2, NUM_CLASSES, *input_shape(dim))
        assert cls(x).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("family", ["plain", "resnet18", "vgg16_bn"])
def test_encoder_returns_one_skip_per_stage(family: str, dim: int) -> None:
    desc = tiny_description(family, dim)
    size = torch.tensor(input_shape(dim))
    with torch.no_grad():
        skips = build_encoder(desc).eval()(torch.randn(1, desc.in_channels, *input_shape(dim)))
    assert len(skips) == desc.num_stages
    for i, skip in enumerate(skips):
        size = size // torch.tensor(desc.strides[i])
        assert skip.shape == (1, desc.widths[i], *size.tolist())


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("family", ["plain", "resnet18", "vgg16_bn"])
def test_deep_supervision_outputs_full_resolution_first(family: str, dim: int) -> None:
    desc = tiny_description(family, dim)
    net = build_network(desc, "segmentation", NUM_CLASSES).train()
    spatial = input_shape(dim)
    outputs = net(torch.randn(2, desc.in_channels, *spatial))
    # one output per decoder stage: n - 1 skips, plus the full-resolution stage behind a strided stem
    strided_stem = family.startswith("resnet")
    assert len(outputs) == desc.num_stages - 1 + strided_stem
    scales = net.deep_supervision_scales()
    assert scales[0] == [1] * dim
    for out, scale in zip(outputs, scales):
        assert out.shape == (2, NUM_CLASSES, *[s // f for s, f in zip(spatial, scale)])
    sum(o.mean() for o in outputs).backward()


def test_deep_supervision_follows_mode_description_and_flag() -> None:
    desc = tiny_description("plain", 2)
    x = torch.randn(1, desc.in_channels, *input_shape(2))
    net = build_network(desc, "segmentation", 2)
    assert isinstance(net.train()(x), list)
    with torch.no_grad():
        assert isinstance(net.eval()(x), torch.Tensor)
        net.deep_supervision = True
        assert len(net(x)) == 3
    off = build_network(replace(desc, deep_supervision=False), "segmentation", 2).train()
    assert isinstance(off(x), torch.Tensor)


def test_anisotropic_kernels_and_strides_reach_the_layers() -> None:
    desc = tiny_description("plain", 3)
    net = build_network(desc, "segmentation", 2)
    first = net.encoder.stages[0].blocks[0].conv
    assert first.weight.shape == (4, 2, 1, 3, 3) and first.padding == (0, 1, 1)
    strided = net.encoder.stages[1].blocks[0].conv
    assert strided.stride == (1, 2, 2) and strided.weight.shape[2:] == (3, 3, 3)
    assert net.encoder.stages[1].blocks[1].conv.stride == (1, 1, 1)
    assert net.decoder.stages[-1].up.stride == (1, 2, 2)  # undoes stage 1's stride
    assert net.decoder.stages[-1].blocks[0].conv.weight.shape[2:] == (1, 3, 3)  # the skip stage's kernel


def test_resnet_stem_pool_matches_torchvision_and_is_per_axis() -> None:
    pool2 = build_encoder(tiny_description("resnet18", 2)).stages[1].pool
    assert (pool2.kernel_size, pool2.stride, pool2.padding) == ((3, 3), (2, 2), (1, 1))
    pool3 = build_encoder(tiny_description("resnet18", 3)).stages[1].pool
    assert (pool3.kernel_size, pool3.stride, pool3.padding) == ((1, 3, 3), (1, 2, 2), (0, 1, 1))


def test_strided_first_stage_gets_a_full_resolution_decoder_stage() -> None:
    desc = ArchitectureDescription(family="plain", dim=2, in_channels=1, widths=[4, 8], strides=[[2, 2], [2, 2]],
                                   kernel_sizes=[[3, 3], [3, 3]], blocks=[1, 1], decoder_blocks=[1, 2])
    net = build_network(desc, "segmentation", 2).eval()
    assert len(net.decoder.stages) == 2 and len(net.decoder.stages[1].blocks) == 2
    assert net(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_bad_inputs_are_refused_with_a_fix() -> None:
    desc = tiny_description("plain", 2)
    net = build_network(desc, "segmentation", 2).eval()
    with pytest.raises(XtlunetError, match="not divisible by the network's total stride"):
        net(torch.randn(1, desc.in_channels, 60, 64))
    with pytest.raises(XtlunetError, match="input channels"):
        net(torch.randn(1, 1, 64, 64))
    with pytest.raises(XtlunetError, match="did you mean 'segmentation'"):
        build_network(desc, "segmentaton", 2)
    with pytest.raises(XtlunetError, match="num_classes"):
        build_network(desc, "classification", 0)
    with pytest.raises(XtlunetError, match="decoder_blocks"):
        build_network(replace(desc, decoder_blocks=[1, 1]), "segmentation", 2)
    with pytest.raises(XtlunetError, match="not divisible by 4"):
        build_network(replace(tiny_description("resnet50", 2), widths=[8, 10, 16, 32, 32]), "classification", 2)


def test_full_width_resnet50_forward_on_a_small_image() -> None:
    from xtlunet.networks.description import family_description

    net = build_network(family_description("resnet50", 2, 1), "classification", 2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32)).shape == (1, 2)
