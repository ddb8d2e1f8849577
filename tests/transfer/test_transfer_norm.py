"""--transfer-norm of the XTL planner: the plan's normalisation decides whether a 2D source's BatchNorm running
statistics reach the 3D network."""
from __future__ import annotations

import pytest
import torch

from xtlunet.errors import XtlunetError
from xtlunet.networks.build import build_network
from xtlunet.planners.xtl import XTLPlanner
from xtlunet.transfer import transfer_weights

from tests.planners.test_default_planner import fake_dataset
from .helpers import randomise_norms


def _plan(norm: str | None):
    """A 3d_fullres XTL plan for resnet18 (6 mm slices), with or without --transfer-norm."""
    extra = {} if norm is None else {"transfer_norm": norm}
    planner = XTLPlanner(*fake_dataset([6.0, 1.0, 1.0], [12, 96, 96], 5, labels=2), gpu_memory_gb=1,
                         pretrained="resnet18", **extra)
    return planner, planner.plan(["3d_fullres"]).configuration("3d_fullres")


def test_default_is_instance_and_batch_is_recorded() -> None:
    _, conf = _plan(None)
    assert conf.network().norm == "instance" and conf.pretrained_constraint["transfer_norm"] == "instance"
    _, conf = _plan("batch")
    assert conf.network().norm == "batch" and conf.pretrained_constraint["transfer_norm"] == "batch"
    with pytest.raises(XtlunetError, match="unknown --transfer-norm 'layer'"):
        _plan("layer")


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_running_statistics_survive_transfer_only_with_batch(norm: str) -> None:
    planner, conf = _plan(norm)
    source = build_network(planner.source, "classification", 2)
    randomise_norms(source)
    target = build_network(conf.network(), "segmentation", 2)
    report = transfer_weights(source.state_dict(), target, mode="inflate")
    src_bn = source.encoder.stages[1].blocks[0].norm1
    dst_bn = target.encoder.stages[1].blocks[0].norm1
    assert torch.equal(dst_bn.weight, src_bn.weight) and torch.equal(dst_bn.bias, src_bn.bias)  # affine: always
    if norm == "batch":
        assert isinstance(dst_bn, torch.nn.BatchNorm3d)
        assert torch.equal(dst_bn.running_mean, src_bn.running_mean)
        assert torch.equal(dst_bn.running_var, src_bn.running_var)
        assert not [u for u in report.unused if u.key.endswith("running_mean")]
    else:
        assert isinstance(dst_bn, torch.nn.InstanceNorm3d) and dst_bn.running_mean is None
        dropped = {u.key for u in report.unused if u.key.endswith("running_mean")}
        assert "encoder.stages.1.blocks.0.norm1.running_mean" in dropped
