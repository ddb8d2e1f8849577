"""`xtlunet pretrain-2d` on the mammo example, --init from a torchvision state dict, and the checkpoint format."""
from __future__ import annotations

import math

import pytest
import torch

from xtlunet.cli import main
from xtlunet.networks.build import build_network
from xtlunet.networks.description import family_description
from xtlunet.networks.torchvision_keys import xtlunet_to_torchvision

FAST = ["--epochs", "2", "--iters-per-epoch", "3", "--batch-size", "4", "--input-size", "64", "64"]


def _error_lines(err: str) -> list[str]:
    """Lines of stderr that carry an error message."""
    return [line for line in err.splitlines() if "error:" in line]


def test_classification_checkpoint_log_and_curve(examples, capsys, tmp_path):
    out = tmp_path / "mammo_r18.pth"
    assert main(["pretrain-2d", "-d", "503", "--arch", "resnet18", *FAST, "-o", str(out)]) == 0
    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert ck["format_version"] == 1 and ck["task"] == "classification" and ck["num_classes"] == 2
    assert ck["architecture"]["family"] == "resnet18" and ck["architecture"]["dim"] == 2
    assert ck["normalization"]["input_size"] == [64, 64]
    prov = ck["provenance"]
    assert prov["dataset"] == "Dataset503_Mammo" and prov["epochs"] == 2 and len(prov["metric_history"]) == 2
    assert prov["metric"] == "val_auc" and (math.isnan(prov["final_metric"]) or 0 <= prov["final_metric"] <= 1)
    net = build_network(family_description("resnet18", 2, 1), "classification", 2)
    net.load_state_dict(ck["state_dict"])                  # the weights are complete
    log = (tmp_path / "mammo_r18_training_log.txt").read_text()
    assert "epoch 1:" in log and "val_auc" in log
    assert (tmp_path / "mammo_r18_progress.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


def test_segmentation_plain(examples, capsys, tmp_path):
    out = tmp_path / "mammo_plain_seg.pth"
    assert main(["pretrain-2d", "-d", "503", "--arch", "plain", "--task", "segmentation", *FAST, "-o", str(out)]) == 0
    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert ck["task"] == "segmentation" and ck["provenance"]["metric"] == "val_dice"
    assert ck["architecture"]["family"] == "plain" and ck["num_classes"] == 2
    assert 0.0 <= ck["provenance"]["final_metric"] <= 1.0


def test_init_from_torchvision_state_dict(examples, capsys, tmp_path):
    rgb = build_network(family_description("resnet18", 2, 3), "classification", 1000)
    tv = xtlunet_to_torchvision({k: v for k, v in rgb.state_dict().items() if k.startswith("encoder.")}, "resnet18")
    init = tmp_path / "imagenet_resnet18.pth"
    torch.save(tv.state_dict, init)
    out = tmp_path / "r18_init.pth"
    assert main(["pretrain-2d", "-d", "503", "--arch", "resnet18", *FAST, "--init", str(init), "-o", str(out)]) == 0
    prov = torch.load(out, map_location="cpu", weights_only=True)["provenance"]
    assert prov["init"] == str(init) and "encoder 100.0%" in prov["init_report"]
    assert "channel-adapted" in prov["init_report"]
    from xtlunet.transfer.checkpoint import file_digest

    assert prov["init_chain"] == [f"imagenet:{file_digest(init)}"]     # the XTL chain starts from natural images


@pytest.mark.parametrize("argv, needle", [
    (["--init", "/nonexistent/imagenet.pth"], "nothing is downloaded"),
    (["--arch", "resnet19"], "did you mean 'resnet18'"),
    (["--task", "detection"], "unknown task"),
    (["--input-size", "50", "50"], "not divisible"),
])
def test_bad_arguments(examples, capsys, tmp_path, argv, needle):
    out = tmp_path / "x.pth"
    code = main(["pretrain-2d", "-d", "503", *FAST, *argv, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(_error_lines(err)) == 1 and not out.exists()


def test_refuses_a_3d_dataset(examples, capsys, tmp_path):
    code = main(["pretrain-2d", "-d", "501", *FAST, "-o", str(tmp_path / "x.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "needs a 2D dataset" in err and "Dataset501_BrainMS" in err


def test_budgets_and_the_init_optimiser(tmp_path):
    from xtlunet.trainers.pretrain2d import PretrainConfig

    base = PretrainConfig(dataset_root=tmp_path, arch="resnet18", output=tmp_path / "o.pth")
    full = base.resolved()
    assert (full.epochs, full.iters_per_epoch, full.max_side, full.patience, full.momentum) == (100, 250, 512, 15, 0.99)
    tiny = PretrainConfig(dataset_root=tmp_path, arch="plain", output=tmp_path / "o.pth", budget="tiny").resolved()
    assert (tiny.epochs, tiny.iters_per_epoch, tiny.patience) == (4, 10, None)
    init = PretrainConfig(dataset_root=tmp_path, arch="resnet18", output=tmp_path / "o.pth", init=tmp_path / "i.pth",
                          epochs=7).resolved()
    assert init.momentum == 0.9 and init.epochs == 7 and init.patience is None      # explicit epochs: no early stop
    with pytest.raises(Exception, match="did you mean 'tiny'"):
        PretrainConfig(dataset_root=tmp_path, arch="plain", output=tmp_path / "o.pth", budget="tine").resolved()


def test_provenance_records_the_budget_and_the_kept_epoch(examples, tmp_path):
    out = tmp_path / "p.pth"
    assert main(["pretrain-2d", "-d", "503", "--arch", "plain", *FAST, "--patience", "1", "-o", str(out)]) == 0
    prov = torch.load(out, map_location="cpu", weights_only=True)["provenance"]
    assert prov["budget"] == "full" and prov["epochs"] == 2 and prov["patience"] == 1 and prov["momentum"] == 0.99
    assert prov["lr"] == {"encoder": 1e-2, "rest": 1e-2} and 0 <= prov["kept_epoch"] < prov["epochs_run"] <= 2
    finite = [h for h in prov["metric_history"] if h == h]
    best = prov["metric_history"].index(max(finite)) if finite else prov["epochs_run"] - 1   # else: the last epoch
    assert prov["kept_epoch"] == best                                              # the best epoch's weights
