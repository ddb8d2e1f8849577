"""For each encoder family: pretrain-2d briefly, plan 3D with the XTL planner, transfer with ≥ 0.9 encoder coverage."""
from __future__ import annotations

import pytest

from xtlunet.networks.build import build_network
from xtlunet.plan_and_preprocess import plan_and_preprocess
from xtlunet.trainers.pretrain2d import PretrainConfig, Pretrainer2D
from xtlunet.transfer import transfer_weights

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out


@pytest.mark.parametrize("family", ["plain", "resnet18", "resnet34", "resnet50", "vgg16_bn"])
def test_pretrain_then_transfer_into_xtl_plans(examples, tmp_path, family):
    ckpt = tmp_path / f"mammo_{family}.pth"
    cfg = PretrainConfig(dataset_root=examples["raw"] / "Dataset503_Mammo", arch=family, output=ckpt, epochs=1,
                         iters_per_epoch=1, batch_size=2, input_size=[64, 64], device="cpu")
    Pretrainer2D(cfg).run()
    for dataset, config, task in [("501", "3d_fullres", "segmentation"), ("502", "3d_roi", "classification")]:
        plans = plan_and_preprocess(dataset, [config], pretrained=str(ckpt), gpu_memory_gb=4, preprocess=False)
        conf = plans.configuration(config)
        assert conf.pretrained_constraint["family"] == family and conf.pretrained_constraint["sha256"]
        net = build_network(conf.network(), task, conf.num_outputs)
        for mode in ("inflate", "center"):
            report = transfer_weights(ckpt, net, mode=mode, min_encoder_coverage=0.9)
            assert report.coverage["encoder"] >= 0.9
            assert f"encoder {100 * report.coverage['encoder']:.1f}%" in report.summary()
            assert report.coverage["decoder"] == 0.0
            statuses = {r.status for r in report.rows}
            assert "channel-adapted" in statuses and "new" in statuses
