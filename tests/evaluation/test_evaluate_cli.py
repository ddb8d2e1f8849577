"""`xtlunet evaluate`: segmentation folders of small NIfTI files and classification CSVs, outputs and errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from xtlunet import cli
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image
from xtlunet.evaluation.segmentation_metrics import evaluate_case
from xtlunet.utils.atomic import write_json

GEO = Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (6, 10, 10))
POS, NEG = [0.9, 0.8, 0.7, 0.4], [0.1, 0.2, 0.3, 0.5]  # one misordered pair of 16: AUC 15/16


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        ) -> Callable[..., tuple[int, str, str]]:
    """xtlunet main with the analysis commands wired in: (argv) -> (exit code, stdout, stderr)."""

    def _run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return _run


@pytest.fixture
def seg_folders(roots: dict[str, Path]) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Reference and prediction folders of three cases (labels 1 and 2), and dataset 601's dataset.json."""
    ref_dir, pred_dir, arrays = roots["raw"].parent / "ref", roots["raw"].parent / "pred", {}
    for i in range(3):
        ref = np.zeros(GEO.shape, np.uint8)
        ref[1:4, 1:5, 1:5], ref[2:5, 6:9, 6:9] = 1, 2
        pred = ref.copy()
        pred[1:4, 1:5, 1:5 + i] = 1
        if i == 2:
            pred[5, 0, 9] = 1  # a false-positive lesion
        write_image(ref_dir / f"case_{i}.nii.gz", ref, GEO)
        write_image(pred_dir / f"case_{i}.nii.gz", pred, GEO)
        arrays[f"case_{i}"] = (pred, ref)
    write_json(roots["raw"] / "Dataset601_Eval" / "dataset.json",
               {"channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 1, "organ": 2},
                "numTraining": 3, "file_ending": ".nii.gz"})
    return ref_dir, pred_dir, arrays


def _findings(tmp_path: Path, label_of: dict[str, str], probs: dict[str, dict[str, float]]) -> tuple[Path, Path]:
    """A labelled findings.csv and predict-style predictions.csv (in a folder) for keys 'case/finding'."""
    ref, pred = tmp_path / "findings.csv", tmp_path / "pred" / "predictions.csv"
    pred.parent.mkdir()
    names = list(next(iter(probs.values())))
    with open(ref, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "finding_id", "patient_id", "x", "y", "z", "label"])
        w.writerows([*k.split("/"), "p", 1, 2, 3, lab] for k, lab in label_of.items())
    with open(pred, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "finding_id", "patient_id", "x", "y", "z", *(f"p_{n}" for n in names), "predicted"])
        w.writerows([*k.split("/"), "p", 1, 2, 3, *p.values(), max(p, key=p.get)] for k, p in probs.items())
    return ref, pred


def _binary(tmp_path: Path) -> tuple[Path, Path]:
    """Eight findings with the known AUC 15/16: four malignant, four benign."""
    scores = {f"c{i}/{i % 2}": s for i, s in enumerate(POS + NEG)}
    label_of = {k: ("malignant" if i < 4 else "benign") for i, k in enumerate(scores)}
    return _findings(tmp_path, label_of, {k: {"benign": 1 - s, "malignant": s} for k, s in scores.items()})


def test_segmentation_with_dataset(run, seg_folders, tmp_path):
    ref_dir, pred_dir, arrays = seg_folders
    code, out, err = run("evaluate", "-r", str(ref_dir), "-p", str(pred_dir), "-d", "601", "-o", str(tmp_path / "ev"))
    assert code == 0, err
    with open(tmp_path / "ev" / "evaluation.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case_id"], r["label"]) for r in rows] == [(f"case_{i}", str(lab)) for i in range(3) for lab in (1, 2)]
    for row in rows:
        pred, ref = arrays[row["case_id"]]
        expected = evaluate_case(pred, ref, GEO.spacing, [int(row["label"])])[int(row["label"])]
        assert float(row["dice"]) == pytest.approx(expected["dice"])
        assert float(row["hd95"]) == pytest.approx(expected["hd95"])
        assert int(row["n_pred_lesions"]) == expected["n_pred_lesions"]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    dice1 = [float(r["dice"]) for r in rows if r["label"] == "1"]
    assert summary["n_cases"] == 3 and summary["per_class"]["1"]["dice"]["mean"] == pytest.approx(np.mean(dice1))
    assert summary["lesion_pooled"]["1"]["lesion_ppv"] == pytest.approx(3 / 4)
    assert f"| 1 | lesion | 3 | {np.mean(dice1):.4g} |" in out and "| 2 | organ | 3 | 1 | 1 | 0 | 1 | 1 | 1 |" in out


def test_segmentation_infers_ending_and_labels(run, seg_folders):
    ref_dir, pred_dir, _ = seg_folders
    code, out, err = run("evaluate", "-r", str(ref_dir), "-p", str(pred_dir))
    assert code == 0, err
    assert (pred_dir / "evaluation.csv").is_file() and (pred_dir / "summary.json").is_file()
    assert json.loads((pred_dir / "summary.json").read_text())["labels"] == [1, 2] and "| 2 |  | 3 |" in out


def test_segmentation_missing_prediction_is_one_line(run, seg_folders):
    ref_dir, pred_dir, _ = seg_folders
    (pred_dir / "case_1.nii.gz").unlink()
    code, _, err = run("evaluate", "-r", str(ref_dir), "-p", str(pred_dir))
    assert code == 2 and err.count("\n") == 1 and "no prediction for 1 reference case: case_1" in err


def test_binary_classification_known_auc(run, tmp_path, roots):
    ref, pred = _binary(tmp_path)
    code, out, err = run("evaluate", "-r", str(ref), "-p", str(pred.parent), "--n-boot", "300")
    assert code == 0, err
    summary = json.loads((pred.parent / "summary.json").read_text())
    (row,) = summary["per_class"]
    assert summary["classes"] == {"benign": 0, "malignant": 1} and summary["n_findings"] == 8
    assert (row["class"], row["n_positive"], row["auc"]) == ("malignant", 4, 0.9375)
    assert row["ci_low"] <= 0.9375 <= row["ci_high"] <= 1.0
    assert (row["threshold"], row["sensitivity"], row["specificity"]) == (0.7, 0.75, 1.0)
    assert (pred.parent / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert "| malignant | 1 | 8 | 4 | 0.9375 |" in out


def test_classification_classes_from_dataset(run, tmp_path, roots):
    ref, pred = _binary(tmp_path)
    write_json(roots["raw"] / "Dataset602_Mass" / "dataset.json",
               {"channel_names": {"0": "MG"}, "labels": {"background": 0}, "numTraining": 8, "file_ending": ".png",
                "task": "classification", "classes": {"benign": 0, "malignant": 1}, "findings": "findings.csv"})
    code, out, err = run("evaluate", "-r", str(ref), "-p", str(pred), "-d", "602", "-o", str(tmp_path / "o"))
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["per_class"][0]["auc"] == 0.9375


def test_multiclass_one_vs_rest(run, tmp_path):
    names = ["a", "b", "c"]
    probs = {f"c{i}/0": {n: (0.6 if k == i % 3 else 0.2) for k, n in enumerate(names)} for i in range(9)}
    probs["c0/0"] = {"a": 0.2, "b": 0.6, "c": 0.2}  # one 'a' finding scored as 'b'
    ref, pred = _findings(tmp_path, {k: names[i % 3] for i, k in enumerate(probs)}, probs)
    code, out, err = run("evaluate", "-r", str(ref), "-p", str(pred), "--n-boot", "100")
    assert code == 0, err
    rows = json.loads((pred.parent / "summary.json").read_text())["per_class"]
    assert [r["class"] for r in rows] == names and [r["n_positive"] for r in rows] == [3, 3, 3]
    assert rows[2]["auc"] == 1.0 and rows[0]["auc"] == pytest.approx(15 / 18)
    assert sorted(p.name for p in pred.parent.glob("roc_*.png")) == ["roc_a.png", "roc_b.png", "roc_c.png"]


def test_missing_and_unknown_findings_are_named(run, tmp_path):
    ref, pred = _binary(tmp_path)
    lines = pred.read_text().splitlines()
    pred.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # drop finding c2/0
    code, _, err = run("evaluate", "-r", str(ref), "-p", str(pred))
    assert code == 2 and "no prediction for 1 finding: c2/0" in err and err.count("\n") == 1
    pred.write_text("\n".join(lines + ["c9,1,p,1,2,3,0.5,0.5,benign"]) + "\n")
    code, _, err = run("evaluate", "-r", str(ref), "-p", str(pred))
    assert code == 2 and "1 predicted finding not in the reference: c9/1" in err
