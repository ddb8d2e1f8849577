"""Held-out validation of a trained fold and the cross-validation summary.

Sits above training, inference and evaluation: the fold's validation cases are predicted with the
sliding window (segmentation: exported in the original geometry and scored against the raw label;
classification: the ROI of each finding, written to predictions.csv), the result is one
`ValidationSummary` (validation/summary.json), and `write_cv_summary` pools every finished fold.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from xtlunet.dataset.findings import Finding, prediction_columns, prediction_row, read_findings
from xtlunet.dataset.io import read_image
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.evaluation.segmentation_metrics import evaluate_case
from xtlunet.evaluation.summary import CaseScores, FindingScores, ValidationSummary
from xtlunet.inference.export import export_prediction, probabilities_path
from xtlunet.inference.predict import predict_case
from xtlunet.inference.roi import roi_probabilities
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.data import CaseArrays, findings_of
from xtlunet.utils.atomic import write_csv

CV_SUMMARY = "cv_summary.json"
PROBABILITIES, NOT_SAVED = "probabilities", "not saved"   # summary.json source entry of a validation without CASE.npz


def validate_fold(nets: Sequence[nn.Module], cases: list[CaseArrays], plans: Plans, conf: ConfigurationPlan,
                  spec: DatasetSpec, out_dir: Path, raw_labels: Path, device: torch.device,
                  mirror_axes: Sequence[int], step: float = 0.5, source: dict[str, str] | None = None,
                  autocast: Any = None,
                  next_stage: Callable[[np.ndarray, dict], None] | None = None,
                  save_probabilities: bool = True) -> ValidationSummary:
    """Predict and score the held-out cases; writes out_dir/summary.json (and the exports or predictions.csv);
    `next_stage` also gets each case's logits and properties (a cascade's lowres export); without
    `save_probabilities` no CASE.npz is written, and summary.json's source says so."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if conf.task == "classification":
        summary = _classify(nets, cases, conf, spec, out_dir, device, tuple(mirror_axes), autocast)
    else:
        summary = _segment(nets, cases, plans, conf, spec.file_ending, out_dir, raw_labels, device,
                           tuple(mirror_axes), step, next_stage, save_probabilities)
    summary.source = dict(source or {})
    if not save_probabilities and conf.task != "classification":
        summary.source[PROBABILITIES] = NOT_SAVED
    summary.save(out_dir / "summary.json")
    return summary


def _segment(nets: Sequence[nn.Module], cases: list[CaseArrays], plans: Plans, conf: ConfigurationPlan,
             ending: str, out_dir: Path, raw_labels: Path, device: torch.device, mirror_axes: tuple[int, ...],
             step: float, next_stage: Callable[[np.ndarray, dict], None] | None = None,
             save_probabilities: bool = True) -> ValidationSummary:
    """Sliding-window prediction of each case, exported in its original geometry (label file and, when asked,
    CASE.npz probabilities), scored against the raw label."""
    labels = plans.foreground_labels()
    scored = []
    for case in cases:
        logits = predict_case(list(nets), np.asarray(case.data), conf, plans, step=step, batch_windows=4,
                              mirror_axes=mirror_axes, device=device)
        if next_stage is not None:
            next_stage(logits, case.props)
        out = out_dir / f"{case.case_id}{ending}"   # and CASE.npz, which find-best-configuration ensembles
        pred = export_prediction(logits, case.props, plans, out, save_probabilities=save_probabilities)
        if not save_probabilities:
            probabilities_path(out).unlink(missing_ok=True)   # an earlier validation's, no longer of these labels
        ref, geo = read_image(raw_labels / f"{case.case_id}{ending}")
        scored.append(CaseScores(case.case_id, evaluate_case(pred, ref, geo.spacing, labels)))
    return ValidationSummary(task="segmentation", labels=labels, cases=scored)


def _classify(nets: Sequence[nn.Module], cases: list[CaseArrays], conf: ConfigurationPlan, spec: DatasetSpec,
              out_dir: Path, device: torch.device, mirror_axes: tuple[int, ...], autocast: Any) -> ValidationSummary:
    """Per-finding probabilities (fold- and mirror-averaged) → predictions.csv and the summary."""
    refs = findings_of(cases)
    probs = roi_probabilities(list(nets), [f.case.data for f in refs], [f.index for f in refs], conf.patch_size,
                              conf.num_outputs, mirror_axes, device, autocast)
    raw = {f.key: f for f in read_findings(spec.findings_path, spec.classes)} if spec.findings_path else {}
    names = [n for n, _ in sorted(spec.classes.items(), key=lambda kv: kv[1])]
    scored, rows = [], []
    for ref, p in zip(refs, probs):
        key = f"{ref.case.case_id}/{ref.finding_id}"
        found = raw.get(key) or Finding(ref.case.case_id, ref.finding_id, ref.case.case_id, None, ref.label)
        scored.append(FindingScores(ref.case.case_id, ref.finding_id, ref.label, [float(v) for v in p],
                                    found.patient_id))
        rows.append(prediction_row(found, list(p), names, labelled=True))
    write_csv(rows, out_dir / "predictions.csv", prediction_columns(names, labelled=True))
    return ValidationSummary(task="classification", classes=dict(spec.classes), findings=scored)


def write_cv_summary(model_dir: Path) -> ValidationSummary | None:
    """Pool every fold_K/validation/summary.json under model_dir into model_dir/cv_summary.json."""
    paths = sorted(model_dir.glob("fold_[0-9]*/validation/summary.json"))
    if not paths:
        return None
    folds = [ValidationSummary.load(p) for p in paths]
    first = folds[0]
    pooled = ValidationSummary(task=first.task, labels=first.labels, classes=first.classes,
                               cases=[c for s in folds for c in s.cases],
                               findings=[f for s in folds for f in s.findings],
                               source={"model": model_dir.name, "pooled": "cross-validation folds"})
    per_fold = [s.auc if first.task == "classification" else s.mean_dice_foreground for s in folds]
    pooled.extra = {"folds": [p.parent.parent.name for p in paths],
                    ("fold_auc" if first.task == "classification" else "fold_mean_dice"):
                        [None if math.isnan(v) else v for v in per_fold]}
    pooled.save(model_dir / CV_SUMMARY)
    return pooled
