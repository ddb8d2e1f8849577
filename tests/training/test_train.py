"""`xtlunet train` on the examples: files of a fold, arms and their transfer reports, over-fitting, resume, DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xtlunet.cli import main
from xtlunet.dataset.io import read_image
from xtlunet.networks.build import build_network
from xtlunet.networks.description import family_description
from xtlunet.networks.torchvision_keys import xtlunet_to_torchvision
from xtlunet.transfer.checkpoint import file_digest

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

SHORT = ["--epochs", "2", "--iters-per-epoch", "2", "--val-iters", "1", "--device", "cpu"]


def _fold_dir(roots: dict[str, Path], dataset: str, trainer: str, plans: str, config: str, fold: str) -> Path:
    """results/DATASET/TRAINER__PLANS__CONFIG/fold_K."""
    return roots["results"] / dataset / f"{trainer}__{plans}__{config}" / f"fold_{fold}"


def _records(fold_dir: Path) -> list[dict]:
    """Epoch records of the final checkpoint."""
    return torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=True)["progress"]


def test_segmentation_fold_writes_every_file(trained_roots, capsys):
    assert main(["train", "501", "3d_fullres", "0", *SHORT]) == 0
    fold = _fold_dir(trained_roots, "Dataset501_BrainMS", "ScratchTrainer", "xtlunetPlans", "3d_fullres", "0")
    for name in ("checkpoint_best.pth", "checkpoint_final.pth", "training_log.txt", "progress.png",
                 "validation/summary.json"):
        assert (fold / name).is_file(), name
    assert not (fold / "checkpoint_latest.pth").exists()   # superseded by checkpoint_final once the fold is done
    log = (fold / "training_log.txt").read_text()
    assert "epoch 0:" in log and "epoch 1:" in log and "pseudo_dice" in log and "final validation" in log
    ck = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 2 and ck["trainer"] == "ScratchTrainer" and ck["plans_identity"] and "optimizer" in ck
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    splits = json.loads((trained_roots["preprocessed"] / "Dataset501_BrainMS" / "splits_final.json").read_text())
    assert sorted(c["case_id"] for c in summary["cases"]) == sorted(splits[0]["val"])
    assert summary["format"] == "xtlunet.validation_summary" and summary["task"] == "segmentation"
    assert 0.0 <= summary["per_class"]["1"]["dice"]["mean"] <= 1.0 and "lesion_pooled" in summary
    for case in splits[0]["val"]:
        pred, pgeo = read_image(fold / "validation" / f"{case}.nii.gz")
        _, igeo = read_image(trained_roots["raw"] / "Dataset501_BrainMS" / "imagesTr" / f"{case}_0000.nii.gz")
        assert pgeo.mismatch(igeo) == [] and set(np.unique(pred)) <= {0, 1}
    cv = json.loads((fold.parent / "cv_summary.json").read_text())
    assert cv["folds"] == ["fold_0"] and cv["foreground_mean"]["dice"] == summary["foreground_mean"]["dice"]
    assert "fold 0 of ScratchTrainer: mean Dice" in capsys.readouterr().out


def test_classification_fold_and_2d_fold(trained_roots, capsys, monkeypatch):
    monkeypatch.setenv("XTLUNET_n_proc_DA", "1")  # one background augmentation process
    assert main(["train", "502", "3d_roi", "1", *SHORT]) == 0
    fold = _fold_dir(trained_roots, "Dataset502_Prostate", "ScratchTrainer", "xtlunetPlans", "3d_roi", "1")
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["n_findings"] > 0 and 0.0 <= summary["auc"] <= 1.0
    lines = (fold / "validation" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "case_id,finding_id,patient_id,x,y,z,label,p_benign,p_significant,predicted"
    assert len(lines) == summary["n_findings"] + 1
    assert "1 augmentation worker\n" in (fold / "training_log.txt").read_text()
    assert main(["train", "503", "2d", "0", *SHORT]) == 0
    fold2d = _fold_dir(trained_roots, "Dataset503_Mammo", "ScratchTrainer", "xtlunetPlans", "2d", "0")
    assert (fold2d / "validation" / "predictions.csv").is_file() and (fold2d / "checkpoint_final.pth").is_file()


def _torchvision_resnet18(path: Path) -> Path:
    """A torchvision-format resnet18 state dict (3 input channels), as ImageNet weights would be."""
    net = build_network(family_description("resnet18", 2, 3), "classification", 1000)
    tv = xtlunet_to_torchvision({k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}, "resnet18")
    torch.save(tv.state_dict, path)
    return path


def test_transfer_arms_write_reports(trained_roots, tmp_path, capsys):
    imagenet = _torchvision_resnet18(tmp_path / "resnet18_imagenet.pth")
    argv = ["501", "3d_fullres", "0", "-p", "xtlunetPlansXTL", "--epochs", "1", "--iters-per-epoch", "1",
            "--val-iters", "1", "--device", "cpu", "--no-final-validation"]
    assert main(["train", *argv, "-tr", "TLTrainer", "--pretrained", str(imagenet)]) == 0
    fold = _fold_dir(trained_roots, "Dataset501_BrainMS", "TLTrainer", "xtlunetPlansXTL", "3d_fullres", "0")
    report = json.loads((fold / "transfer_report.json").read_text())
    assert report["coverage"]["encoder"] >= 0.9 and report["coverage"]["decoder"] == 0.0
    assert report["chain"] == [f"imagenet:{file_digest(imagenet)}"]
    assert "transfer inflate: encoder" in (fold / "training_log.txt").read_text()
    # XTL: a pretrain-2d checkpoint is required; ImageNet weights are refused with a hint
    code = main(["train", *argv, "-tr", "XTLTrainer", "--pretrained", str(imagenet)])
    assert code == 2 and "not a pretrain-2d checkpoint" in capsys.readouterr().err


def test_xtl_arm_from_pretrain_2d(trained_roots, tmp_path, capsys):
    ckpt = tmp_path / "mammo_r18.pth"
    assert main(["pretrain-2d", "-d", "503", "--arch", "resnet18", "--epochs", "1", "--iters-per-epoch", "1",
                 "--batch-size", "2", "--input-size", "64", "64", "--device", "cpu", "-o", str(ckpt)]) == 0
    assert main(["train", "501", "3d_fullres", "1", "-p", "xtlunetPlansXTL", "-tr", "XTLTrainer", "--pretrained",
                 str(ckpt), "--transfer-mode", "center", "--epochs", "1", "--iters-per-epoch", "1", "--device", "cpu",
                 "--no-final-validation"]) == 0
    fold = _fold_dir(trained_roots, "Dataset501_BrainMS", "XTLTrainer", "xtlunetPlansXTL", "3d_fullres", "1")
    report = json.loads((fold / "transfer_report.json").read_text())
    assert report["mode"] == "center" and report["coverage"]["encoder"] >= 0.9
    recipe = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=True)["recipe"]
    assert recipe["transfer_mode"] == "center" and recipe["pretrained_sha256"] == file_digest(ckpt)
    assert recipe["epochs"] == 1 and recipe["seed"] == 12345
    # continuing with another transfer mode would mix two recipes in one fold
    capsys.readouterr()
    assert main(["train", "501", "3d_fullres", "1", "-p", "xtlunetPlansXTL", "-tr", "XTLTrainer", "--pretrained",
                 str(ckpt), "--transfer-mode", "inflate", "--epochs", "2", "--iters-per-epoch", "1", "--device", "cpu",
                 "--continue"]) == 2
    err = capsys.readouterr().err
    assert "started with another recipe (transfer_mode center → inflate)" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["501", "3d_fullres", "7"], "fold '7' is not valid"),
    (["501", "3d_fulres", "0"], "did you mean '3d_fullres'"),
    (["501", "3d_fullres", "0", "-tr", "XTLTrainr"], "did you mean 'XTLTrainer'"),
    (["501", "3d_fullres", "0", "-tr", "XTLTrainer"], "needs --pretrained"),
    (["501", "3d_fullres", "0", "--pretrained", "x.pth"], "takes no --pretrained"),
    (["501", "3d_fullres", "0", "--continue"], "no checkpoint to continue from"),
    (["501", "3d_fullres", "0", "--transfer-mode", "inflat"], "did you mean 'inflate'"),
    (["502", "3d_roi", "0", "-p", "nothere"], "plans file not found"),
])
def test_bad_train_arguments(trained_roots, capsys, argv, needle):
    code = main(["train", *argv, "--epochs", "1", "--iters-per-epoch", "1"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_tiny_set_overfits(trained_roots):
    assert main(["train", "501", "3d_fullres", "all", "--epochs", "8", "--iters-per-epoch", "4", "--device", "cpu",
                 "--no-final-validation"]) == 0
    fold = _fold_dir(trained_roots, "Dataset501_BrainMS", "ScratchTrainer", "xtlunetPlans", "3d_fullres", "all")
    losses = [r["train_loss"] for r in _records(fold)]
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses


def _env(roots: dict[str, Path]) -> dict[str, str]:
    """Environment for a CLI subprocess."""
    env = {**os.environ, "XTLUNET_n_proc_DA": "0", "PYTHONUNBUFFERED": "1"}
    env.update({f"XTLUNET_{k}": str(v) for k, v in roots.items()})
    return env


def test_sigkill_then_continue_finishes_all_epochs(trained_roots):
    fold = _fold_dir(trained_roots, "Dataset502_Prostate", "ScratchTrainer", "xtlunetPlans", "3d_roi", "2")
    cmd = [sys.executable, "-m", "xtlunet", "train", "502", "3d_roi", "2", "--epochs", "6", "--iters-per-epoch", "3",
           "--save-every", "1", "--device", "cpu", "--no-final-validation"]
    proc = subprocess.Popen(cmd, env=_env(trained_roots), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = fold / "checkpoint_latest.pth"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and torch.load(latest, weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(latest, weights_only=True)["epoch"]
    assert 2 <= done < 6 and not (fold / "checkpoint_final.pth").exists()
    subprocess.run([*cmd, "--continue"], env=_env(trained_roots), check=True, capture_output=True)
    records = _records(fold)
    assert [int(r["epoch"]) for r in records] == list(range(6))
    assert f"continuing from checkpoint_latest.pth at epoch {done}" in (fold / "training_log.txt").read_text()


def test_ddp_two_gloo_processes(trained_roots):
    cmd = [sys.executable, "-m", "xtlunet", "train", "502", "3d_roi", "3", "--epochs", "2", "--iters-per-epoch", "2",
           "--device", "cpu", "--num-gpus", "2"]
    out = subprocess.run(cmd, env=_env(trained_roots), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    fold = _fold_dir(trained_roots, "Dataset502_Prostate", "ScratchTrainer", "xtlunetPlans", "3d_roi", "3")
    assert "2 processes" in (fold / "training_log.txt").read_text()
    assert len(_records(fold)) == 2 and (fold / "validation" / "summary.json").is_file()


def test_a_users_own_trainer_module(trained_roots, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_trainers.py").write_text(
        "from xtlunet.trainers.arms import ScratchTrainer\n\n\n"
        "class SlowScratchTrainer(ScratchTrainer):\n"
        "    \"\"\"Scratch with a smaller learning rate.\"\"\"\n\n"
        "    initial_lr = 1e-3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["train", "502", "3d_roi", "4", "-tr", "my_trainers:SlowScratchTrainer", "--epochs", "1",
                 "--iters-per-epoch", "1", "--device", "cpu", "--no-final-validation"]) == 0
    fold = _fold_dir(trained_roots, "Dataset502_Prostate", "SlowScratchTrainer", "xtlunetPlans", "3d_roi", "4")
    ck = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert ck["trainer"] == "SlowScratchTrainer"
    assert ck["optimizer"]["param_groups"][1]["initial_lr"] == pytest.approx(1e-3)


def test_new_fold_after_replanning_is_refused(trained_roots, tmp_path, capsys):
    import shutil

    assert main(["train", "502", "3d_roi", "0", "--epochs", "1", "--iters-per-epoch", "1", "--device", "cpu",
                 "--no-final-validation"]) == 0
    model = _fold_dir(trained_roots, "Dataset502_Prostate", "ScratchTrainer", "xtlunetPlans", "3d_roi", "0").parent
    before = (model / "plans.json").read_bytes()
    plans_file = trained_roots["preprocessed"] / "Dataset502_Prostate" / "xtlunetPlans.json"
    saved = tmp_path / "plans_backup.json"
    shutil.copy(plans_file, saved)
    try:
        plans = json.loads(plans_file.read_text())
        plans["configurations"]["3d_roi"]["batch_size"] += 1
        plans_file.write_text(json.dumps(plans))
        code = main(["train", "502", "3d_roi", "1", "--epochs", "1", "--iters-per-epoch", "1", "--device", "cpu"])
        assert code == 2 and "plans changed since fold_0" in capsys.readouterr().err
        assert (model / "plans.json").read_bytes() == before and not (model / "fold_1").exists()
    finally:
        shutil.copy(saved, plans_file)


def test_a_users_trainer_with_its_own_loss_and_schedule(trained_roots, tmp_path, monkeypatch):
    (tmp_path / "my_loss_trainers.py").write_text(
        "from torch import nn\n"
        "from xtlunet.trainers.arms import ScratchTrainer\n"
        "from xtlunet.training.optim import cosine\n\n\n"
        "class TenfoldCE(nn.CrossEntropyLoss):\n"
        "    \"\"\"Cross-entropy × 10: easy to tell apart in the log.\"\"\"\n\n"
        "    def forward(self, logits, target):\n"
        "        return 10 * super().forward(logits, target)\n\n\n"
        "class CosineTrainer(ScratchTrainer):\n"
        "    \"\"\"Another loss and another schedule, nothing else.\"\"\"\n\n"
        "    def loss(self, net):\n"
        "        return TenfoldCE()\n\n"
        "    def schedule(self):\n"
        "        return cosine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["train", "502", "3d_roi", "0", "-tr", "my_loss_trainers:CosineTrainer", "--epochs", "2",
                 "--iters-per-epoch", "2", "--device", "cpu", "--no-final-validation"]) == 0
    records = _records(_fold_dir(trained_roots, "Dataset502_Prostate", "CosineTrainer", "xtlunetPlans", "3d_roi", "0"))
    # the schedule is set per epoch: epochs 0 and 1 of 2 on the cosine curve (poly would give 1e-2, 5.4e-3)
    assert [r["lr"] for r in records] == pytest.approx([1e-2, 5e-3])
    # training and per-epoch validation both use the trainer's loss: ten times a two-class cross-entropy
    assert all(r["train_loss"] > 3 and r["val_loss"] > 3 for r in records), records


def test_xtl_takes_the_checkpoint_its_plan_was_made_for(trained_roots, tmp_path, capsys):
    ckpt = tmp_path / "mammo_plain.pth"
    assert main(["pretrain-2d", "-d", "503", "--arch", "plain", "--epochs", "1", "--iters-per-epoch", "1",
                 "--batch-size", "2", "--input-size", "64", "64", "--device", "cpu", "-o", str(ckpt)]) == 0
    assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--pretrained", str(ckpt),
                 "--plans-name", "xtlunetPlansMammo", "--gpu-memory-gb", "0.37"]) == 0
    argv = ["train", "501", "3d_fullres", "0", "-p", "xtlunetPlansMammo", "-tr", "XTLTrainer", "--epochs", "1",
            "--iters-per-epoch", "1", "--device", "cpu", "--no-final-validation"]
    assert torch.load(ckpt, weights_only=True)["provenance"]["init_chain"] == ["none"]
    capsys.readouterr()
    assert main(argv) == 0   # no --pretrained: the plan's checkpoint
    assert "pretrained from random weights (init chain 'none')" in capsys.readouterr().err
    fold = _fold_dir(trained_roots, "Dataset501_BrainMS", "XTLTrainer", "xtlunetPlansMammo", "3d_fullres", "0")
    report = json.loads((fold / "transfer_report.json").read_text())
    assert report["source"] == str(ckpt.resolve()) and report["coverage"]["encoder"] >= 0.9
    assert report["chain"] == ["none", f"mammograms:{file_digest(ckpt)}"]
    other = tmp_path / "other.pth"
    ck = torch.load(ckpt, weights_only=True)
    first = next(k for k in ck["state_dict"] if k.endswith("weight"))
    ck["state_dict"][first] = ck["state_dict"][first] + 1
    torch.save(ck, other)
    capsys.readouterr()
    assert main([*argv[:3], "1", *argv[4:], "--pretrained", str(other)]) == 2
    err = capsys.readouterr().err
    assert "differs from the checkpoint plan xtlunetPlansMammo was made for" in err and str(other) in err
    assert not fold.with_name("fold_1").exists()


def test_the_same_seed_trains_the_same_weights_bit_for_bit(trained_roots, tmp_path, monkeypatch):
    def weights(results: Path, *seed: str) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("XTLUNET_results", str(results))
        monkeypatch.setenv("XTLUNET_n_proc_DA", "0")
        assert main(["-q", "train", "501", "3d_fullres", "0", *SHORT, "--no-final-validation", *seed]) == 0
        fold = results / "Dataset501_BrainMS" / "ScratchTrainer__xtlunetPlans__3d_fullres" / "fold_0"
        return torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=True)["network"]

    first, second = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    other = weights(tmp_path / "c", "--seed", "7")
    assert not all(torch.equal(first[k], other[k]) for k in first)
