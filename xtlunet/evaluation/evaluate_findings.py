"""Evaluate lesion classification: predict's predictions.csv against a labelled findings.csv.

Findings are matched by (case_id, finding_id). Binary classes: the AUC of class 1 with a bootstrap CI,
sensitivity/specificity at the Youden point and roc.png; more classes: the same one-vs-rest per class
(roc_<class>.png), NaN for a class the reference lacks.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xtlunet.dataset.csv_table import ID, PROBABILITY, TEXT, Column, read_table
from xtlunet.dataset.findings import Finding, read_findings
from xtlunet.errors import XtlunetError, plural
from xtlunet.evaluation.classification_metrics import auc_with_ci, roc_png, youden_point
from xtlunet.evaluation.compare import few
from xtlunet.evaluation.tables import write_csv
from xtlunet.evaluation.summary import FindingScores, ValidationSummary

PREDICTIONS = "predictions.csv"
ROW_COLUMNS = ("class", "value", "n", "n_positive", "auc", "ci_low", "ci_high", "threshold", "sensitivity",
               "specificity")
_PROB_COLUMN = re.compile(r"^p_(.+)$|^p(\d+)$")
_FORMAT_FIX = "give predict's predictions.csv: case_id, finding_id, p_<class> for each class"


def predictions_file(pred: str | Path) -> Path:
    """predict's predictions.csv: the path itself, or the file of that name inside a folder."""
    pred = Path(pred)
    path = pred / PREDICTIONS if pred.is_dir() else pred
    if not path.is_file():
        raise XtlunetError("predictions file not found", path=path, fix=_FORMAT_FIX)
    return path


def read_predictions(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    """(class names of the p_<name> (or p<k>) columns in order, {case_id/finding_id: probabilities})."""
    table = read_table(path, prediction_spec, _FORMAT_FIX)
    columns = [c for c in table.header if _PROB_COLUMN.match(c)]
    if not columns:
        raise XtlunetError(f"{path.name} lacks p_<class> columns", path=path, fix=_FORMAT_FIX)
    probs: dict[str, list[float]] = {}
    for row in table.rows:
        key = f"{row['case_id']}/{row['finding_id'] or '0'}"
        if key in probs:
            raise table.error(row, "finding_id", f"finding {key} is predicted twice",
                              "keep one row per case_id/finding_id")
        probs[key] = [row[c] for c in columns]
    return [next(g for g in _PROB_COLUMN.match(c).groups() if g is not None) for c in columns], probs


def prediction_spec(header: list[str]) -> list[Column]:
    """predictions.csv's checked columns: case_id, finding_id (optional) and a probability per p_<class> column."""
    return [Column("case_id", ID), Column("finding_id", TEXT, required=False, default=""),
            *(Column(h, PROBABILITY) for h in header if _PROB_COLUMN.match(h))]


def _class_columns(names: list[str], classes: Mapping[str, int] | None, path: Path) -> dict[str, int]:
    """{class name: value} and the probability column of each value; classes default to the columns' names."""
    if classes is None:
        return {n: k for k, n in enumerate(names)}
    missing = [f"p_{n}" for n, v in classes.items() if n not in names and str(v) not in names]
    if missing:
        raise XtlunetError(f"predictions lack the columns {', '.join(missing)} of the dataset's classes", path=path,
                           fix="predict with a model of this dataset, or leave out -d")
    return dict(classes)


def match_findings(reference: Path, predictions: Path, classes: Mapping[str, int] | None = None,
                   ) -> tuple[dict[str, int], np.ndarray, np.ndarray, list[Finding]]:
    """(classes, labels (N,), probabilities (N, K) by class value, the findings) of the reference, in its order."""
    names, probs = read_predictions(predictions)
    classes = _class_columns(names, classes, predictions)
    column = {v: names.index(n) if n in names else names.index(str(v)) for n, v in classes.items()}
    findings = read_findings(Path(reference), dict(classes), labelled=True)
    keys = [f.key for f in findings]
    missing = [k for k in keys if k not in probs]
    if missing:
        raise XtlunetError(f"no prediction for {plural(len(missing), 'finding')}: {few(missing)}", path=predictions,
                           fix="predict every finding of the reference (xtlunet predict --findings REFERENCE)")
    unknown = sorted(set(probs) - set(keys))
    if unknown:
        raise XtlunetError(f"{plural(len(unknown), 'predicted finding')} not in the reference: {few(unknown)}",
                           path=reference, fix="evaluate against the findings.csv the predictions were made for")
    p = np.array([[probs[k][column[v]] for v in range(len(classes))] for k in keys], dtype=np.float64)
    return classes, np.array([f.label for f in findings]), p, findings


def class_rows(labels: np.ndarray, probs: np.ndarray, names: list[str], n_boot: int = 2000,
               seed: int = 0, patients: list[str] | None = None) -> list[dict[str, Any]]:
    """One row for class 1 (binary) or one one-vs-rest row per class: AUC with CI (patient bootstrap when patient
    ids are given) and the Youden point."""
    rows = []
    for k in ([1] if len(names) == 2 else range(len(names))):
        y = (labels == k).astype(np.int64)
        row: dict[str, Any] = {"class": names[k], "value": k, "n": int(y.size), "n_positive": int(y.sum())}
        if len(names) == 2 or 0 < y.sum() < y.size:  # binary: a one-class reference is an error, not a NaN
            auc, lo, hi = auc_with_ci(y, probs[:, k], n_boot, seed, groups=patients)
            thr, sens, spec = youden_point(y, probs[:, k])
            row.update(auc=auc, ci_low=lo, ci_high=hi, threshold=thr, sensitivity=sens, specificity=spec)
        else:
            row.update({c: float("nan") for c in ROW_COLUMNS[4:]})
        rows.append(row)
    return rows


def evaluate_findings(reference: str | Path, predictions: str | Path, classes: Mapping[str, int] | None = None,
                      out_dir: str | Path | None = None, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Score predictions against labelled findings; write summary.json, evaluation.csv and ROC PNGs to out_dir."""
    pred_file = predictions_file(predictions)
    classes, labels, probs, findings = match_findings(Path(reference), pred_file, classes)
    names = [n for n, _ in sorted(classes.items(), key=lambda kv: kv[1])]
    rows = class_rows(labels, probs, names, n_boot, seed, [f.patient_id for f in findings])
    out = Path(out_dir) if out_dir else pred_file.parent
    outputs = [write_csv(rows, out / "evaluation.csv", ROW_COLUMNS)]
    for row in rows:
        if np.isfinite(row["auc"]):
            y = (labels == row["value"]).astype(np.int64)
            png = out / ("roc.png" if len(names) == 2 else f"roc_{row['class']}.png")
            rest = names[0] if len(names) == 2 else "rest"
            outputs.append(roc_png(y, {f"{row['class']} vs {rest}": probs[:, row["value"]]}, png))
    scored = [FindingScores(f.case_id, f.finding_id, int(f.label), [float(v) for v in p], f.patient_id)
              for f, p in zip(findings, probs)]
    result = ValidationSummary(task="classification", classes=dict(classes), findings=scored,
                               source={"reference": str(reference), "predictions": str(pred_file)},
                               extra={"per_class": rows, "outputs": [str(p) for p in outputs] + [str(out / "summary.json")]})
    result.save(out / "summary.json")
    return result.to_json()
