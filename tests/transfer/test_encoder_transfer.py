"""Whole encoders: a 3D encoder converted from a 2D one reproduces it on volumes constant along depth.

Eval mode; with instance norm the per-channel statistics of a constant-depth volume equal those of one
slice, so every slice stays equal to the 2D output. Inflate needs replication padding along depth for
that (see helpers.replicate_depth_padding); center holds with zero padding. Tolerance 1e-4. The deep
comparisons run in float64: in float32 the rounding of w/d (relative 1e-7) is amplified by instance
norm over the 2×2 bottom stages to ~1e-3 after 16 bottleneck blocks, while center (no rounding) agrees
to 1e-12 either way.
"""
from __future__ import annotations

import pytest
import torch

from xtlunet.networks.build import build_network
from xtlunet.networks.encoder import build_encoder
from xtlunet.transfer import transfer_weights

from .helpers import constant_depth, randomise_norms, replicate_depth_padding, tiny_description, to_3d

TOL = 1e-4


@torch.no_grad()
@pytest.mark.parametrize("family,norm", [("plain", "instance"), ("plain", "batch"), ("resnet18", "batch"),
                                         ("resnet50", "instance"), ("vgg16_bn", "batch")])
@pytest.mark.parametrize("mode", ["inflate", "center"])
def test_constant_depth_volume_gives_2d_output_on_every_slice(family: str, norm: str, mode: str) -> None:
    torch.manual_seed(0)
    d2 = tiny_description(family, norm=norm)
    e2 = build_encoder(d2).double()
    randomise_norms(e2)
    e3 = build_encoder(to_3d(d2, 3)).double()
    report = transfer_weights(e2.state_dict(), e3, mode=mode, min_encoder_coverage=1.0)
    assert report.coverage["encoder"] == 1.0
    if mode == "inflate":
        replicate_depth_padding(e3)
    e2.eval()
    e3.eval()
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)   # total stride 32: instance norm needs > 1 voxel
    outs2, outs3 = e2(x), e3(constant_depth(x, 3))
    assert len(outs2) == len(outs3) == d2.num_stages
    for y2, y3 in zip(outs2, outs3):
        for z in range(3):
            torch.testing.assert_close(y3[:, :, z], y2, atol=TOL, rtol=0)


@torch.no_grad()
def test_inflate_with_zero_padding_matches_on_interior_slices() -> None:
    """Without replication, depth-edge slices differ; the interior (depth receptive field inside) matches."""
    d2 = tiny_description("plain", norm="batch")   # batch norm in eval: no volume-wide statistics
    e2, e3 = build_encoder(d2), build_encoder(to_3d(d2, 3))
    randomise_norms(e2)
    transfer_weights(e2.state_dict(), e3, mode="inflate")
    e2.eval()
    e3.eval()
    x = torch.randn(1, 1, 16, 16)
    y2, y3 = e2(x)[-1], e3(constant_depth(x, 13))[-1]
    # 5 convs of depth 3: the outermost 5 slices on each side see the zero padding
    torch.testing.assert_close(y3[:, :, 6], y2, atol=TOL, rtol=0)
    assert (y3[:, :, 0] - y2).abs().max() > 1e-3


@torch.no_grad()
def test_depth_one_stages_copy_exactly_and_anisotropic_plans_mix_rules() -> None:
    d2 = tiny_description("plain")
    e2, e3 = build_encoder(d2), build_encoder(to_3d(d2, [1, 3, 3]))
    report = transfer_weights(e2.state_dict(), e3, mode="center")
    rules = {r.name: r.rule for r in report.rows if r.name.endswith("conv.weight")}
    assert rules["stages.0.blocks.0.conv.weight"] == "copy"
    assert rules["stages.1.blocks.0.conv.weight"] == "center"
    assert torch.equal(e3.stages[0].blocks[0].conv.weight[:, :, 0], e2.stages[0].blocks[0].conv.weight)


@torch.no_grad()
def test_first_conv_channel_adaptation_keeps_the_output_for_replicated_channels() -> None:
    d2 = tiny_description("plain")
    e2, e3 = build_encoder(d2), build_encoder(to_3d(d2, 3, in_channels=3))
    report = transfer_weights(e2.state_dict(), e3, mode="center", min_encoder_coverage=1.0)
    adapted = report.rows_with("channel-adapted")
    assert [(r.name, r.rule) for r in adapted] == [("stages.0.blocks.0.conv.weight", "repeat-1-to-3+center")]
    e2.eval()
    e3.eval()
    x = torch.randn(1, 1, 16, 16)
    y3 = e3(constant_depth(x, 3).repeat(1, 3, 1, 1, 1))[-1]
    for z in range(3):
        torch.testing.assert_close(y3[:, :, z], e2(x)[-1], atol=TOL, rtol=0)


def test_acs_converts_cubic_plans_and_refuses_a_non_cubic_stem() -> None:
    d2 = tiny_description("resnet18")
    e2 = build_encoder(d2)
    cubic = build_encoder(to_3d(d2, [7, 3, 3, 3, 3]))   # stem 7×7×7, 1×1 convs stay 1×1×1 (copy)
    report = transfer_weights(e2.state_dict(), cubic, mode="acs", min_encoder_coverage=1.0)
    rules = {r.rule for r in report.rows if r.status == "converted"}
    assert rules == {"acs", "copy"}
    from xtlunet.errors import XtlunetError
    with pytest.raises(XtlunetError, match=r"stages\.0\.blocks\.0\.conv\.weight.*cubic 3D kernel, got 3x7x7"):
        transfer_weights(e2.state_dict(), build_encoder(to_3d(d2, 3)), mode="acs")


def test_segmentation_source_into_classification_target_and_back() -> None:
    d2 = tiny_description("resnet18")
    d3 = to_3d(d2, 3)
    seg2, cls3 = build_network(d2, "segmentation", 3), build_network(d3, "classification", 2)
    report = transfer_weights(seg2.state_dict(), cls3, mode="inflate", min_encoder_coverage=1.0)
    assert report.coverage == {"encoder": 1.0, "decoder": 0.0, "head": 0.0}
    assert {r.name for r in report.rows_with("new") if r.group == "head"} == \
        {"head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"}
    assert all(u.key.startswith("decoder.") for u in report.unused)
    cls2, seg3 = build_network(d2, "classification", 5), build_network(d3, "segmentation", 3)
    report = transfer_weights({f"module._orig_mod.{k}": v for k, v in cls2.state_dict().items()}, seg3)
    assert report.coverage["encoder"] == 1.0
    assert {u.key for u in report.unused} == {f"module._orig_mod.head.{n}" for n in
                                              ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
