"""transfer_weights: source formats (ours, wrapped, torchvision, checkpoint files), norms, groups, refusals."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.networks.build import build_network
from xtlunet.networks.encoder import build_encoder
from xtlunet.networks.torchvision_keys import xtlunet_to_torchvision
from xtlunet.transfer import transfer_weights

from .helpers import constant_depth, randomise_norms, tiny_description, to_3d


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of a model's state, to check that a refused transfer left it untouched."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    """True when the model's state equals the snapshot."""
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", ["resnet18", "resnet50", "vgg16_bn"])
def test_torchvision_state_dict_into_3d_segmentation_net(family: str) -> None:
    d2 = tiny_description(family, in_channels=3)
    cls2 = build_network(d2, "classification", 2)
    randomise_norms(cls2)
    tv = xtlunet_to_torchvision(cls2.state_dict(), family).state_dict
    tv["fc.weight" if family.startswith("resnet") else "classifier.6.weight"] = torch.zeros(1000, 16)
    assert any(k.startswith(("layer1.0.conv1", "features.0")) for k in tv)
    seg3 = build_network(to_3d(d2, 3, in_channels=1), "segmentation", 2)
    report = transfer_weights(tv, seg3, mode="inflate", min_encoder_coverage=1.0)
    assert report.source_format.endswith(family)
    assert report.coverage == {"encoder": 1.0, "decoder": 0.0, "head": 0.0}
    stem = report.rows[0]
    assert (stem.status, stem.rule) == ("channel-adapted", "sum-3-to-1+inflate")
    assert stem.source_key in ("conv1.weight", "features.0.weight")
    reasons = {u.key: u.reason for u in report.unused}
    assert "heads differ" in reasons.pop("fc.weight" if family.startswith("resnet") else "classifier.6.weight")
    assert all("folded" in r for r in reasons.values())   # vgg: zero conv biases folded into BN running_mean
    enc3 = seg3.encoder.stages[1].blocks[0]
    src = cls2.encoder.stages[1].blocks[0]
    norm3, norm2 = (enc3.norm1, src.norm1) if family.startswith("resnet") else (enc3.norm, src.norm)
    assert torch.equal(norm3.running_var, norm2.running_var) and torch.equal(norm3.weight, norm2.weight)


def test_torchvision_family_is_checked_against_the_target() -> None:
    d2 = tiny_description("resnet18", in_channels=3)
    tv = xtlunet_to_torchvision(build_encoder(d2).state_dict(), "resnet18").state_dict
    target = build_network(to_3d(tiny_description("resnet50"), 3), "segmentation", 2)
    with pytest.raises(XtlunetError, match="the source encoder is resnet18, the target's is resnet50"):
        transfer_weights(tv, target)


def test_foreign_prefix_is_refused_with_a_hint() -> None:
    d2 = tiny_description("resnet18", in_channels=3)
    tv = xtlunet_to_torchvision(build_encoder(d2).state_dict(), "resnet18").state_dict
    seg3 = build_network(to_3d(d2, 3), "segmentation", 2)
    before = _snapshot(seg3)
    with pytest.raises(XtlunetError) as info:
        transfer_weights({f"backbone.{k}": v for k, v in tv.items()}, seg3)
    msg = str(info.value)
    assert "no tensor of the source" in msg and "backbone.conv1.weight" in msg
    assert "every key starts with 'backbone.' — strip that prefix" in msg
    assert _unchanged(seg3, before)


def test_no_tensor_loaded_is_refused(tmp_path: Path) -> None:
    """A source whose encoder-side keys are disjoint from the target's (only a decoder and heads)."""
    d2 = tiny_description("plain")
    seg2, seg3 = build_network(d2, "segmentation", 2), build_network(to_3d(d2), "segmentation", 2)
    only_decoder = {k: v for k, v in seg2.state_dict().items() if not k.startswith("encoder.")}
    with pytest.raises(XtlunetError, match=r"no tensor of the source \(xtlunet, \d+ tensors"):
        transfer_weights(only_decoder, seg3)
    path = tmp_path / "decoder_only.pth"
    torch.save(only_decoder, path)
    with pytest.raises(XtlunetError, match=r"no tensor of the source .* \[.*decoder_only\.pth\] — fix"):
        transfer_weights(path, seg3)


def test_coverage_below_threshold_is_refused_and_target_left_untouched() -> None:
    d2 = tiny_description("plain")
    e2, e3 = build_encoder(d2), build_encoder(to_3d(d2))
    partial = {k: v for k, v in e2.state_dict().items() if not k.startswith("stages.2.")}
    before = _snapshot(e3)
    with pytest.raises(XtlunetError) as info:
        transfer_weights(partial, e3, min_encoder_coverage=0.9)
    msg = str(info.value)
    assert "of encoder parameters" in msg and "below the required 90.0%" in msg and "fix:" in msg
    assert any("stages.2.blocks.0.conv.weight: no source tensor" in d for d in info.value.details)
    assert _unchanged(e3, before)
    report = transfer_weights(partial, e3)            # default threshold 0: loads, and reports the gap
    assert 0 < report.coverage["encoder"] < 0.9
    missing = [r for r in report.rows if r.name.startswith("stages.2.")]
    assert missing and all(r.status == "new" and r.reason == "no source tensor at this position" for r in missing)


@pytest.mark.parametrize("widths,kernel,match", [
    ([4, 8, 32], 3, r"'encoder\.stages\.2\.blocks\.0\.conv\.weight'.*\[16, 8, 3, 3\] vs target \[32, 8, 3, 3, 3\] "
                    r"\(16 vs 32 output channels\)"),
    ([4, 8, 16], 5, r"'encoder\.stages\.0\.blocks\.0\.conv\.weight'.*in-plane kernel \[3, 3\] vs \[5, 5\]"),
])
def test_shape_mismatch_without_rule_is_refused(widths: list[int], kernel: int, match: str) -> None:
    seg2 = build_network(tiny_description("plain"), "segmentation", 2)
    seg3 = build_network(to_3d(tiny_description("plain", widths=widths, kernel=kernel)), "segmentation", 2)
    with pytest.raises(XtlunetError, match=match) as info:
        transfer_weights(seg2.state_dict(), seg3)
    assert "fix: build the target from the source's ArchitectureDescription" in str(info.value)


def test_other_input_channel_counts_are_refused_only_for_non_first_convs() -> None:
    d2 = tiny_description("plain", in_channels=2)
    with pytest.raises(XtlunetError, match="no rule adapts a first conv with 2 input channels to 3"):
        transfer_weights(build_encoder(d2).state_dict(), build_encoder(to_3d(d2, in_channels=3)))


def test_unknown_mode_and_acs_on_grouped_or_non_cubic_kernels() -> None:
    d2 = tiny_description("plain")
    e2, e3 = build_encoder(d2), build_encoder(to_3d(d2, 5))
    with pytest.raises(XtlunetError, match="unknown transfer mode 'centre' \\(did you mean 'center'\\?\\)"):
        transfer_weights(e2.state_dict(), e3, mode="centre")
    with pytest.raises(XtlunetError, match="cubic 3D kernel, got 5x3x3"):
        transfer_weights(e2.state_dict(), e3, mode="acs")
    grouped2 = nn.Sequential()
    grouped2.stages = nn.ModuleList([nn.Module()])
    grouped2.stages[0].blocks = nn.ModuleList([nn.Module()])
    grouped2.stages[0].blocks[0].conv = nn.Conv3d(4, 4, 3, groups=2)
    with pytest.raises(XtlunetError, match="needs an ungrouped convolution, got groups=2"):
        transfer_weights({"stages.0.blocks.0.conv.weight": torch.randn(4, 2, 3, 3)}, grouped2, mode="acs")


def test_batchnorm_running_statistics_only_into_batchnorm_targets() -> None:
    d2 = tiny_description("plain", norm="batch")
    e2 = build_encoder(d2)
    randomise_norms(e2)
    bn3 = build_encoder(to_3d(d2))
    report = transfer_weights(e2.state_dict(), bn3)
    assert torch.equal(bn3.stages[1].blocks[0].norm.running_mean, e2.stages[1].blocks[0].norm.running_mean)
    stats = [r for r in report.rows if r.name.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(r.status == "loaded" and not r.is_parameter for r in stats)
    in3 = build_encoder(to_3d(tiny_description("plain", norm="instance")))
    report = transfer_weights(e2.state_dict(), in3, min_encoder_coverage=0.0)
    dropped = {u.key: u.reason for u in report.unused}
    assert "stages.1.blocks.0.norm.running_var" in dropped
    assert dropped["stages.1.blocks.0.norm.running_var"] == "running statistics: the target InstanceNorm3d keeps none"
    # plain-instance convs carry a bias that plain-batch convs lack: those are new, the rest loaded
    conv_biases = {n for n, _ in in3.named_parameters() if n.endswith("conv.bias")}
    assert {r.name for r in report.rows_with("new")} == conv_biases
    assert torch.equal(in3.stages[1].blocks[0].norm.weight, e2.stages[1].blocks[0].norm.weight)


def test_checkpoint_path_with_meta_wrapped_keys_and_family_check(tmp_path: Path) -> None:
    d2 = tiny_description("plain")
    seg2 = build_network(d2, "segmentation", 2)
    path = tmp_path / "pretrained_2d.pth"
    torch.save({"format_version": 1, "state_dict": {f"module.{k}": v for k, v in seg2.state_dict().items()},
                "architecture": d2.to_json(), "normalization": {}, "provenance": {}}, path)
    seg3 = build_network(to_3d(d2), "segmentation", 3)
    report = transfer_weights(path, seg3, mode="center", min_encoder_coverage=0.9)
    assert report.source == str(path) and report.coverage["encoder"] == 1.0
    stem3, stem2 = seg3.encoder.stages[0].blocks[0].conv, seg2.encoder.stages[0].blocks[0].conv
    assert torch.equal(stem3.weight[:, :, 1], stem2.weight)
    loaded = torch.load(path, weights_only=True)   # an already loaded checkpoint object is accepted too
    assert transfer_weights(loaded, seg3).coverage["encoder"] == 1.0
    resnet3 = build_network(to_3d(tiny_description("resnet18")), "segmentation", 3)
    with pytest.raises(XtlunetError, match="the source encoder is plain, the target's is resnet18"):
        transfer_weights(path, resnet3)


def test_decoder_and_heads_stay_new_unless_asked() -> None:
    d2 = tiny_description("plain")
    seg2 = build_network(d2, "segmentation", 2)
    seg3 = build_network(to_3d(d2), "segmentation", 2)
    fresh = _snapshot(seg3)
    report = transfer_weights(seg2.state_dict(), seg3)
    for name, value in seg3.state_dict().items():
        if not name.startswith("encoder."):
            assert torch.equal(value, fresh[name]), name      # never silently filled
    assert {r.group for r in report.rows_with("new")} == {"decoder", "head"}
    # asked for: decoder convs convert, transposed convs are never converted, heads load (same class count)
    seg3 = build_network(to_3d(d2), "segmentation", 2)
    report = transfer_weights(seg2.state_dict(), seg3, groups=("encoder", "decoder", "head"))
    ups = [r for r in report.rows if ".up." in r.name]
    assert ups and all(r.status == "skipped" and "never converted" in r.reason for r in ups)
    assert report.coverage["head"] == 1.0 and report.coverage["decoder"] > 0.5
    # a 2D→2D fine-tune with another class count: heads are skipped (shape differs), the rest loads
    seg2b = build_network(d2, "segmentation", 4)
    report = transfer_weights(seg2.state_dict(), seg2b, groups=("encoder", "decoder", "head"))
    assert report.coverage == {"encoder": 1.0, "decoder": 1.0, "head": 0.0}
    assert {r.status for r in report.rows if r.group == "head"} == {"skipped"}


@torch.no_grad()
def test_transferred_classification_net_matches_2d_features() -> None:
    """End to end: a 2D classifier's encoder in a 3D classifier gives the 2D features on constant-depth input."""
    d2 = tiny_description("plain")
    cls2, cls3 = build_network(d2, "classification", 2), build_network(to_3d(d2), "classification", 2)
    transfer_weights(cls2.state_dict(), cls3, mode="center", min_encoder_coverage=0.9)
    cls2.eval()
    cls3.eval()
    x = torch.randn(1, 1, 16, 16)
    y2, y3 = cls2.encoder(x)[-1], cls3.encoder(constant_depth(x, 3))[-1]
    torch.testing.assert_close(y3[:, :, 1], y2, atol=1e-4, rtol=0)
