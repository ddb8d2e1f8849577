"""Fake results trees for the report tests: what training writes (plans.json, training logs, validation summaries
and predictions, a transfer report), raw images and labels for the QC montages, a fingerprint, and preprocessed
arrays for the finding ROIs. Built in well under a second, without training anything."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from report_trees import CLS, PLANS, SEG, SEG_FOLDS

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image
from xtlunet.evaluation.segmentation_metrics import evaluate_case
from xtlunet.evaluation.summary import CaseScores, FindingScores, ValidationSummary
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.progress import Progress
from xtlunet.transfer.report import TensorRow, TransferReport

SHAPE, SPACING = (10, 32, 32), (3.0, 1.0, 1.0)
ARCH = {"family": "plain", "dim": 3, "widths": [8, 16], "strides": [[1, 1, 1], [2, 2, 2]],
        "kernel_sizes": [[3, 3, 3], [3, 3, 3]]}


def fake_plans(dataset: str, configuration: str, task: str, patch: list[int]) -> Plans:
    """A plan with one configuration, as training copies it into each model folder."""
    conf = ConfigurationPlan(name=configuration, task=task, dim=3, spacing=list(SPACING), patch_size=patch,
                             batch_size=2, median_shape=list(SHAPE), normalization=["zscore"],
                             use_mask_for_norm=[False], architecture=dict(ARCH), num_outputs=2,
                             data_identifier=f"{PLANS}_{configuration}", memory_estimate_gb=0.1)
    return Plans(plans_name=PLANS, dataset_name=dataset, planner="XTLPlanner", task=task,
                 channel_names={"0": "MR"}, labels={"background": 0, "lesion": 1} if task == "segmentation" else {},
                 classes={} if task == "segmentation" else {"benign": 0, "malignant": 1}, transpose_forward=[0, 1, 2],
                 foreground_intensity_properties={"0": {"percentile_00_5": 0.0, "percentile_99_5": 1.0}},
                 configurations={configuration: conf})


def write_log(fold_dir: Path, metric: str, values: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    """training_log.txt as the training loop writes it (Progress), without drawing progress.png."""
    monkeypatch.setattr(Progress, "plot", lambda self: None)
    progress = Progress(fold_dir / "training_log.txt", fold_dir / "progress.png", metric)
    progress.message(f"ScratchTrainer {fold_dir.parents[1].name} fold {fold_dir.name}: 2 train / 2 val cases, "
                     "device cpu, 1 process, 0 augmentation workers")
    for epoch, v in enumerate(values):
        progress.add({"epoch": epoch, "train_loss": 1.0 - 0.1 * epoch, "val_loss": 1.1 - 0.1 * epoch, "metric": v,
                      "lr": 0.01, "epoch_time": 2.5})
    progress.message("final validation: fake")


def lesion_case(index: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, reference) of fake case `index`: a bright lesion on a noisy background."""
    rng = np.random.default_rng(index)
    image = rng.normal(100.0, 5.0, SHAPE).astype(np.float32)
    ref = np.zeros(SHAPE, np.uint8)
    ref[3:6, 8 + index:14 + index, 10:16] = 1
    image[ref > 0] += 60.0
    return image, ref


def arm_prediction(ref: np.ndarray, arm: str, index: int) -> np.ndarray:
    """The arm's prediction: XTL shifts the lesion by one voxel, Scratch by two and adds a false positive."""
    pred = np.roll(ref, 1 if arm == "XTLTrainer" else 2, axis=2)
    if arm == "ScratchTrainer" and index % 2 == 0:
        pred[7:9, 24:27, 24:27] = 1
    return pred


@pytest.fixture
def seg_tree(roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Raw dataset, fingerprint and two arms × two folds of a segmentation dataset (predictions scored for real)."""
    from xtlunet.fingerprint import CaseFingerprint, Fingerprint

    raw = roots["raw"] / SEG
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0,
                                                  "lesion": 1}, "numTraining": 4, "file_ending": ".nii.gz"}))
    geo = Geometry(tuple(SPACING), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), SHAPE)
    cases = {}
    for i, case in enumerate(c for f in SEG_FOLDS.values() for c in f):
        image, ref = lesion_case(i)
        write_image(raw / "imagesTr" / f"{case}_0000.nii.gz", image, geo)
        write_image(raw / "labelsTr" / f"{case}.nii.gz", ref, geo)
        cases[case] = (i, ref)
    for arm in ("ScratchTrainer", "XTLTrainer"):
        folder = roots["results"] / SEG / f"{arm}__{PLANS}__3d_fullres"
        folder.mkdir(parents=True)
        fake_plans(SEG, "3d_fullres", "segmentation", [8, 16, 16]).save(folder / "plans.json")
        for fold, ids in SEG_FOLDS.items():
            fold_dir = folder / f"fold_{fold}"
            scored = []
            for case in ids:
                i, ref = cases[case]
                pred = arm_prediction(ref, arm, i)
                write_image(fold_dir / "validation" / f"{case}.nii.gz", pred, geo)
                scored.append(CaseScores(case, evaluate_case(pred, ref, SPACING, [1])))
            ValidationSummary(task="segmentation", labels=[1], cases=scored).save(fold_dir / "validation" /
                                                                                  "summary.json")
            write_log(fold_dir, "pseudo_dice", [0.2, 0.4, 0.5 + 0.1 * fold], monkeypatch)
            if arm == "XTLTrainer":
                report = TransferReport(mode="inflate", source="mammo.pth", source_format="pretrain2d",
                                        rows=[TensorRow("enc.w", "converted", [4, 4]), TensorRow("dec.w", "new", [2, 2],
                                                                                                group="decoder")],
                                        chain=["none", "mammograms:abc123"], seconds=0.5)
                report.compute_coverage()
                report.save(fold_dir / "transfer_report.json")
    pre = roots["preprocessed"] / SEG
    Fingerprint(dataset_name=SEG, task="segmentation", dim=3, channel_names={"0": "MR"},
                cases=[CaseFingerprint(c, list(SPACING), list(SHAPE), [8, 30, 30], []) for c in cases],
                intensity={"0": {"mean": 100.0, "std": 5.0, "median": 100.0, "min": 80.0, "max": 170.0,
                                 "percentile_00_5": 88.0, "percentile_99_5": 165.0}},
                label_counts={"0": 9000, "1": 400}).save(pre / "fingerprint.json")
    return {**roots, "dataset": raw}


CLS_FOLDS = {0: [("p0", "1", 0), ("p0", "2", 1), ("p1", "1", 1)], 1: [("p2", "1", 0), ("p3", "1", 1), ("p3", "2", 0)]}


@pytest.fixture
def cls_tree(roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Two arms × two folds of a lesion classification dataset, and the preprocessed arrays of its cases."""
    pre = roots["preprocessed"] / CLS / f"{PLANS}_3d_roi"
    pre.mkdir(parents=True)
    by_case: dict[str, list[dict]] = {}
    for fold in CLS_FOLDS.values():
        for case, fid, label in fold:
            by_case.setdefault(case, []).append({"finding_id": fid, "label": label, "index": [5, 10 + 6 * int(fid), 16]})
    for case, found in by_case.items():
        np.save(pre / f"{case}.npy", np.random.default_rng(len(case)).normal(0, 1, (1, *SHAPE)).astype(np.float32))
        (pre / f"{case}.json").write_text(json.dumps({"findings": found}))
    for a, arm in enumerate(("ScratchTrainer", "XTLTrainer")):
        folder = roots["results"] / CLS / f"{arm}__{PLANS}__3d_roi"
        folder.mkdir(parents=True)
        fake_plans(CLS, "3d_roi", "classification", [6, 12, 12]).save(folder / "plans.json")
        for fold, rows in CLS_FOLDS.items():
            fold_dir = folder / f"fold_{fold}"
            found = [FindingScores(case, fid, label, [0.6 - 0.2 * label - 0.05 * a, 0.4 + 0.2 * label + 0.05 * a],
                                   case) for case, fid, label in rows]
            ValidationSummary(task="classification", classes={"benign": 0, "malignant": 1},
                              findings=found).save(fold_dir / "validation" / "summary.json")
            write_log(fold_dir, "val_auc", [0.5, 0.7], monkeypatch)
    return roots
