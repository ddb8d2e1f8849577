"""`xtlunet experiment`: one plan for every arm, every arm × fold, compare, experiment.json, and resuming."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from xtlunet.cli import main
from xtlunet.networks.build import build_network
from xtlunet.networks.description import family_description
from xtlunet.networks.torchvision_keys import xtlunet_to_torchvision

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

BUDGET = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--val-no-tta", "--device", "cpu"]


@pytest.fixture
def mammo_ckpt(examples, tmp_path) -> Path:
    """A plain pretrain-2d checkpoint (random init) of the mammo example."""
    out = tmp_path / "mammo_plain.pth"
    assert main(["-q", "pretrain-2d", "-d", "503", "--arch", "plain", "--epochs", "1", "--iters-per-epoch", "1",
                 "--batch-size", "2", "--input-size", "64", "64", "--device", "cpu", "-o", str(out)]) == 0
    return out


def _argv(ckpt: Path) -> list[str]:
    """Scratch and XTL on brain-ms, folds 0 and 1, tiny budget."""
    return ["-q", "experiment", "-d", "501", "-c", "3d_fullres", "--arms", "ScratchTrainer", "XTLTrainer",
            "--xtl-weights", str(ckpt), "--folds", "0", "1", "--gpu-memory-gb", "0.37", *BUDGET]


def test_experiment_runs_every_arm_and_fold_on_one_plan_and_resumes(examples, mammo_ckpt, capsys):
    assert main(_argv(mammo_ckpt)) == 0
    results = examples["results"] / "Dataset501_BrainMS"
    doc = json.loads((results / "experiment_3d_fullres.json").read_text())
    assert doc["plans"] == "xtlunetPlansXTL" and doc["folds"] == [0, 1] and doc["budget"]["epochs"] == 1
    assert doc["norm"] == "instance"
    assert [a["trainer"] for a in doc["arms"]] == ["ScratchTrainer", "XTLTrainer"]
    assert doc["arms"][0]["chain"] == "random" and doc["arms"][1]["chain"].startswith("none → mammograms:")
    assert all(set(a["folds"]) == {"0", "1"} for a in doc["arms"])
    folders = [Path(a["model_folder"]) for a in doc["arms"]]
    assert [f.name for f in folders] == ["ScratchTrainer__xtlunetPlansXTL__3d_fullres",
                                         "XTLTrainer__xtlunetPlansXTL__3d_fullres"]
    assert all(Path(p).is_file() for p in doc["comparison"]) and "comparison.md" in doc["comparison"][0]
    out = capsys.readouterr().out
    assert "XTLTrainer" in out and "chain none → mammograms:" in out

    # a re-run trains nothing; a fold killed after its last checkpoint is finished, a lost fold redone
    stamps = {p: p.stat().st_mtime_ns for f in folders for p in f.glob("fold_*/checkpoint_final.pth")}
    (folders[0] / "fold_1" / "validation" / "summary.json").unlink()          # killed during final validation
    shutil.rmtree(folders[1] / "fold_0")                                      # killed before any checkpoint
    assert main(_argv(mammo_ckpt)) == 0
    changed = {p for p, t in stamps.items() if not p.exists() or p.stat().st_mtime_ns != t}
    assert changed == {folders[1] / "fold_0" / "checkpoint_final.pth"}
    assert (folders[0] / "fold_1" / "validation" / "summary.json").is_file()
    assert "continuing from checkpoint_final.pth at epoch 1" in (folders[0] / "fold_1" / "training_log.txt").read_text()

    # another transfer mode on the same plan would report the inflate folds as center: refused before training
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for f in folders for p in f.rglob("*") if p.is_file()}
    assert main([*_argv(mammo_ckpt), "--transfer-mode", "center"]) == 2
    err = capsys.readouterr().err
    assert "XTLTrainer__xtlunetPlansXTL__3d_fullres/fold_0 was trained with another recipe" in err
    assert "transfer_mode inflate → center" in err and "--plans-name" in err
    assert {p: p.stat().st_mtime_ns for f in folders for p in f.rglob("*") if p.is_file()} == before


def test_transfer_norm_without_pretrained_weights_is_refused(examples, capsys):
    argv = ["-q", "experiment", "-d", "501", "-c", "3d_fullres", "--arms", "ScratchTrainer", "--transfer-norm",
            "batch", *BUDGET]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not take --transfer-norm" in err and "--xtl-weights" in err and "Traceback" not in err
    assert not (examples["results"] / "Dataset501_BrainMS").exists()


def test_weights_of_different_families_are_refused_up_front(examples, mammo_ckpt, tmp_path, capsys):
    net = build_network(family_description("resnet18", 2, 3), "classification", 1000)
    tv = xtlunet_to_torchvision({k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}, "resnet18")
    torch.save(tv.state_dict, tmp_path / "imagenet_r18.pth")
    code = main(["experiment", "-d", "501", "-c", "3d_fullres", "--tl-weights", str(tmp_path / "imagenet_r18.pth"),
                 "--xtl-weights", str(mammo_ckpt), *BUDGET])
    err = capsys.readouterr().err
    assert code == 2 and "different encoder families (--tl-weights resnet18, --xtl-weights plain)" in err
    assert not (examples["preprocessed"] / "Dataset501_BrainMS").exists()      # refused before planning
    code = main(["experiment", "-d", "501", "-c", "3d_fullres", "--arms", "ScratchTrainer", "XTLTrainer", *BUDGET])
    assert code == 2 and "arm XTLTrainer needs --xtl-weights" in capsys.readouterr().err
