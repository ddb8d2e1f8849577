"""Folder evaluation on small NIfTI files with geometry: rows, summary, and the user errors."""
import math
from pathlib import Path

import numpy as np
import pytest

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image
from xtlunet.errors import XtlunetError
from xtlunet.evaluation.evaluate_folders import evaluate_segmentation_folders
from xtlunet.evaluation.segmentation_metrics import evaluate_case

GEO = Geometry((2.0, 0.8, 0.6), (10.0, -20.0, 5.0), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0), (8, 12, 12))


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference): two label-1 lesions and a label-2 block, the prediction shifted and missing one."""
    ref = np.zeros(GEO.shape, np.uint8)
    ref[1:4, 1:5, 1:5] = 1
    ref[5:7, 8:11, 8:11] = 1
    ref[1:3, 8:11, 1:4] = 2
    pred = np.zeros_like(ref)
    pred[1 + seed % 2:4, 1:5, 1:5] = 1
    pred[1:3, 8:11, 2:5] = 2
    if seed == 2:
        pred[6, 1, 10] = 1  # false-positive lesion
    return pred, ref


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Reference and prediction folders with three cases, plus one prediction without a reference."""
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    arrays = {}
    for i in range(3):
        pred, ref = _case(i)
        write_image(ref_dir / f"case_{i:03d}.nii.gz", ref, GEO)
        write_image(pred_dir / f"case_{i:03d}.nii.gz", pred, GEO)
        arrays[f"case_{i:03d}"] = (pred, ref)
    write_image(pred_dir / "case_999.nii.gz", np.zeros(GEO.shape, np.uint8), GEO)
    return ref_dir, pred_dir, arrays


def test_rows_and_summary_of_a_folder(folders):
    ref_dir, pred_dir, arrays = folders
    before = sorted(p.name for p in ref_dir.parent.rglob("*"))
    rows, summary = evaluate_segmentation_folders(ref_dir, pred_dir, labels=[1, 2], file_ending=".nii.gz")
    assert sorted(p.name for p in ref_dir.parent.rglob("*")) == before  # writes nothing
    assert [(r["case_id"], r["label"]) for r in rows] == [(f"case_{i:03d}", lab) for i in range(3) for lab in (1, 2)]
    for row in rows:
        pred, ref = arrays[row["case_id"]]
        expected = evaluate_case(pred, ref, GEO.spacing, [row["label"]])[row["label"]]
        assert {k: v for k, v in row.items() if k not in ("case_id", "label")} == pytest.approx(expected, nan_ok=True)
    dice1 = [r["dice"] for r in rows if r["label"] == 1]
    per_class = summary.per_class()
    assert per_class[1]["dice"] == {"mean": pytest.approx(np.mean(dice1)), "median": pytest.approx(np.median(dice1)),
                                    "n": 3}
    assert per_class[2]["hd95"]["mean"] == pytest.approx(0.6)  # one voxel along x
    pooled = summary.lesion_pooled()[1].to_json()
    assert (pooled["n_ref_lesions"], pooled["n_ref_detected"], pooled["n_pred_lesions"], pooled["n_pred_tp"]) \
        == (6, 3, 4, 3)
    assert pooled["lesion_tpr"] == 0.5 and pooled["lesion_ppv"] == 0.75
    assert len(summary.cases) == 3 and summary.extra_predictions == ["case_999.nii.gz"]
    assert summary.foreground_mean()["dice"] == pytest.approx(
        (per_class[1]["dice"]["mean"] + per_class[2]["dice"]["mean"]) / 2)


def test_labels_default_to_those_in_the_references(folders):
    ref_dir, pred_dir, _ = folders
    rows, summary = evaluate_segmentation_folders(ref_dir, pred_dir)
    assert summary.labels == [1, 2] and len(rows) == 6


def test_absent_label_gives_nan_means_with_zero_counts(folders):
    ref_dir, pred_dir, _ = folders
    _, summary = evaluate_segmentation_folders(ref_dir, pred_dir, labels=[3])
    per_class = summary.per_class()
    assert math.isnan(per_class[3]["dice"]["mean"]) and per_class[3]["dice"]["n"] == 0
    assert per_class[3]["hd95"]["mean"] == 0.0


def test_geometry_mismatch_names_the_file_and_the_fix(folders):
    ref_dir, pred_dir, arrays = folders
    moved = Geometry(GEO.spacing, (11.0, -20.0, 5.0), GEO.direction, GEO.shape)
    write_image(pred_dir / "case_001.nii.gz", arrays["case_001"][0], moved)
    with pytest.raises(XtlunetError) as info:
        evaluate_segmentation_folders(ref_dir, pred_dir, labels=[1])
    message = str(info.value)
    assert "case_001" in message and "origin" in message and str(pred_dir / "case_001.nii.gz") in message
    assert "fix:" in message


def test_missing_prediction_names_the_case(folders):
    ref_dir, pred_dir, _ = folders
    (pred_dir / "case_002.nii.gz").unlink()
    with pytest.raises(XtlunetError, match=r"no prediction for 1 reference case: case_002"):
        evaluate_segmentation_folders(ref_dir, pred_dir, labels=[1])


def test_empty_reference_folder_is_refused(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(XtlunetError, match="no reference files ending in '.nii.gz'"):
        evaluate_segmentation_folders(tmp_path / "ref", tmp_path / "pred")
