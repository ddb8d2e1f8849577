"""ValidationSummary: the one schema of a validation or evaluation result (summary.json), read and written by
training's final validation, `evaluate`, the cross-validation summary and `compare`.

Segmentation: one `CaseScores` per case (metrics per foreground label, see segmentation_metrics); the
statistics over cases (mean/median/n per class and metric, their mean over classes, lesion counts pooled)
are derived, written for readers, and recomputed on load. Classification: one `FindingScores` per finding
(label and class probabilities in class-value order); the AUC is derived likewise.
The file format is written down in documentation/file_formats.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xtlunet.errors import XtlunetError, plural
from xtlunet.evaluation.segmentation_metrics import LesionCounts
from xtlunet.utils.atomic import read_json, write_json

FORMAT = "xtlunet.validation_summary"
VERSION = 1
SUMMARY_METRICS = ("dice", "iou", "hd95", "volume_diff_mm3", "volume_rel_diff", "lesion_tpr", "lesion_ppv",
                   "lesion_f1")
TASKS = ("segmentation", "classification")


@dataclass
class CaseScores:
    """A segmentation case's metrics per foreground label."""

    case_id: str
    metrics: dict[int, dict[str, float]]

    def mean_dice(self) -> float:
        """Dice averaged over the labels scored in this case (NaN when none was)."""
        vals = [float(m["dice"]) for m in self.metrics.values() if m.get("dice") is not None
                and math.isfinite(m["dice"])]
        return float(np.mean(vals)) if vals else math.nan

    def lesions(self) -> LesionCounts:
        """Lesion counts pooled over this case's labels."""
        return sum((LesionCounts.from_json(m) for m in self.metrics.values()), LesionCounts())

    def to_json(self) -> dict[str, Any]:
        """{'case_id', 'metrics': {label: {...}}} with string label keys."""
        return {"case_id": self.case_id, "metrics": {str(k): dict(v) for k, v in self.metrics.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CaseScores":
        """Inverse of to_json (an undefined metric, null in the file, becomes NaN)."""
        return cls(str(d["case_id"]), {int(k): {m: _number(x) for m, x in v.items()} for k, v in d["metrics"].items()})


@dataclass
class FindingScores:
    """A classified finding: its label (−1 when unknown) and class probabilities by class value."""

    case_id: str
    finding_id: str
    label: int
    probabilities: list[float]
    patient_id: str = ""

    @property
    def key(self) -> str:
        """Unique id 'case/finding'."""
        return f"{self.case_id}/{self.finding_id}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"case_id": self.case_id, "finding_id": self.finding_id, "patient_id": self.patient_id or self.case_id,
                "label": int(self.label), "probabilities": [float(p) for p in self.probabilities]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FindingScores":
        """Inverse of to_json."""
        return cls(str(d["case_id"]), str(d["finding_id"]), int(d["label"]),
                   [float(_number(p)) for p in d["probabilities"]],
                   str(d.get("patient_id", "")))


def _number(value: Any) -> Any:
    """A value read from summary.json: null (how JSON holds NaN) as NaN, anything else as written."""
    return math.nan if value is None else value


def _stats(values: Sequence[float]) -> dict[str, float]:
    """Mean and median over the finite values, and how many there were."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "median": math.nan, "n": 0}
    return {"mean": float(np.mean(finite)), "median": float(np.median(finite)), "n": len(finite)}


@dataclass
class ValidationSummary:
    """Per-case (segmentation) or per-finding (classification) results, where they came from, and their statistics."""

    task: str
    labels: list[int] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    cases: list[CaseScores] = field(default_factory=list)
    findings: list[FindingScores] = field(default_factory=list)
    source: dict[str, str] = field(default_factory=dict)
    extra_predictions: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)   # further statistics a writer adds (kept as written)

    # ---- derived statistics ----
    def per_class(self) -> dict[int, dict[str, dict[str, float]]]:
        """Per label and metric: mean, median and n over the cases where it is defined."""
        return {lab: {m: _stats([c.metrics[lab].get(m, math.nan) for c in self.cases if lab in c.metrics])
                      for m in SUMMARY_METRICS} for lab in self.labels}

    def lesion_pooled(self) -> dict[int, LesionCounts]:
        """Lesion counts per label pooled over cases."""
        return {lab: sum((LesionCounts.from_json(c.metrics[lab]) for c in self.cases if lab in c.metrics),
                         LesionCounts()) for lab in self.labels}

    def foreground_mean(self) -> dict[str, float]:
        """Per metric: the mean over labels of the per-label means."""
        pc = self.per_class()
        return {m: _stats([pc[lab][m]["mean"] for lab in self.labels])["mean"] for m in SUMMARY_METRICS}

    @property
    def mean_dice_foreground(self) -> float:
        """Mean Dice over foreground labels (each label's mean over cases)."""
        return self.foreground_mean()["dice"] if self.task == "segmentation" else math.nan

    def probability_matrix(self) -> np.ndarray:
        """(N, K) probabilities of the findings."""
        k = len(self.classes) or (len(self.findings[0].probabilities) if self.findings else 2)
        return np.array([f.probabilities for f in self.findings], dtype=np.float64).reshape(-1, k)

    @property
    def auc(self) -> float:
        """ROC AUC of the findings (binary: class 1; more classes: macro one-vs-rest); NaN when undefined."""
        from xtlunet.metrics import auc

        if self.task != "classification" or not self.findings:
            return math.nan
        try:
            return auc(np.array([f.label for f in self.findings]), self.probability_matrix())
        except ValueError:  # e.g. multi-class scores that are not probabilities: no macro AUC defined
            return math.nan

    def statistics(self) -> dict[str, Any]:
        """The derived numbers as written to summary.json (string keys)."""
        if self.task == "classification":
            return {"n_findings": len(self.findings), "auc": self.auc}
        return {"n_cases": len(self.cases),
                "per_class": {str(k): v for k, v in self.per_class().items()},
                "foreground_mean": self.foreground_mean(),
                "lesion_pooled": {str(k): v.to_json() for k, v in self.lesion_pooled().items()}}

    def one_line(self) -> str:
        """One line of the result, for logs and the CLI."""
        if self.task == "classification":
            return f"AUC {self.auc:.4f} over {plural(len(self.findings), 'finding')}"
        return f"mean Dice {self.mean_dice_foreground:.4f} over {plural(len(self.cases), 'case')}"

    # ---- the file ----
    def to_json(self) -> dict[str, Any]:
        """summary.json: format, task, source, what was scored, statistics, then the per-item results."""
        head = {"format": FORMAT, "version": VERSION, "task": self.task, "source": dict(self.source)}
        if self.task == "classification":
            items = {"classes": dict(self.classes), "findings": [f.to_json() for f in self.findings]}
        else:
            items = {"labels": list(self.labels), "extra_predictions": list(self.extra_predictions),
                     "cases": [c.to_json() for c in self.cases]}
        body = {**self.statistics(), **self.extra}
        items_first = {k: v for k, v in items.items() if k not in ("cases", "findings")}
        rest = {k: v for k, v in items.items() if k in ("cases", "findings")}
        return {**head, **items_first, **body, **rest}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], path: Path | str = "<summary>") -> "ValidationSummary":
        """Inverse of to_json; refuses another format or version, naming the file."""
        if d.get("format") != FORMAT or d.get("version") != VERSION or d.get("task") not in TASKS:
            raise XtlunetError(f"not an xtlunet validation summary (format {d.get('format')!r}, version "
                               f"{d.get('version')!r})", path=path,
                               fix="re-run the final validation (xtlunet train ... --continue) or xtlunet evaluate")
        derived = set(cls(task=d["task"]).statistics()) | {"format", "version", "task", "source", "labels", "classes",
                                                           "cases", "findings", "extra_predictions"}
        try:
            return cls(task=d["task"], labels=[int(v) for v in d.get("labels", [])],
                       classes={str(k): int(v) for k, v in d.get("classes", {}).items()},
                       cases=[CaseScores.from_json(c) for c in d.get("cases", [])],
                       findings=[FindingScores.from_json(f) for f in d.get("findings", [])],
                       source={str(k): str(v) for k, v in d.get("source", {}).items()},
                       extra_predictions=list(d.get("extra_predictions", [])),
                       extra={k: v for k, v in d.items() if k not in derived})
        except (KeyError, TypeError, ValueError) as exc:
            raise XtlunetError(f"malformed validation summary ({type(exc).__name__}: {exc})", path=path,
                               fix="re-run the validation or evaluation that wrote it") from None

    def save(self, path: Path) -> Path:
        """Write summary.json atomically."""
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> "ValidationSummary":
        """Read a summary.json written by save."""
        if not path.is_file():
            raise XtlunetError("validation summary not found", path=path, fix="finish the fold's final validation")
        return cls.from_json(read_json(path), path)
