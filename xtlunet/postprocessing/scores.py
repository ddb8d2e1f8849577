"""Cross-validation scores of segmentations as component tables, so any choice of predicted components to keep is
scored without touching the images again.

A `ClassTable` holds one case's one foreground label: the size of each predicted component, how many of its voxels
lie in the reference, and which reference components it overlaps. From it, for a choice of kept components:
- pooled Dice of a label: 2·ΣTP / (ΣP + ΣR) over cases, volumes in mm³ (mm² in 2D); NaN when the label is absent
  from every prediction and reference;
- mean Dice of a label: the mean over cases of each case's Dice (cases where the label is absent from both skipped),
  as `ValidationSummary` computes it;
- lesion-wise F1 of a label: detection counts pooled over cases, with the conventions of
  `xtlunet/evaluation/segmentation_metrics.py` (full connectivity, any overlap detects).
A candidate's single numbers are the means of these over the foreground labels (undefined labels skipped).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xtlunet.evaluation.segmentation_metrics import LesionCounts
from xtlunet.postprocessing.components import label_components, voxel_volume

NAN = float("nan")


@dataclass(frozen=True)
class ClassTable:
    """One case's one label as connected components."""

    voxel_mm3: float
    pred_voxels: np.ndarray   # (n_pred,) voxels of each predicted component
    pred_hits: np.ndarray     # (n_pred,) of those, voxels inside the reference mask
    ref_voxels: int           # reference foreground voxels
    n_ref: int                # reference components (lesions)
    pairs: np.ndarray         # (m, 2) overlapping (predicted component, reference component) indices, 0-based

    def all_kept(self) -> np.ndarray:
        """The choice that keeps every predicted component (no post-processing)."""
        return np.ones(self.pred_voxels.shape, dtype=bool)

    def counts(self, keep: np.ndarray) -> "ClassCounts":
        """Volumes and lesion counts when only the `keep` components of the prediction remain."""
        detected = np.unique(self.pairs[keep[self.pairs[:, 0]], 1]).size if self.pairs.size else 0
        lesions = LesionCounts(self.n_ref, detected, int(keep.sum()), int((keep & (self.pred_hits > 0)).sum()))
        return ClassCounts(float(self.pred_hits[keep].sum()) * self.voxel_mm3,
                           float(self.pred_voxels[keep].sum()) * self.voxel_mm3, self.ref_voxels * self.voxel_mm3,
                           lesions)


@dataclass(frozen=True)
class ClassCounts:
    """Overlap volumes (mm³) and lesion counts of one label, of a case or pooled over cases."""

    tp_mm3: float
    pred_mm3: float
    ref_mm3: float
    lesions: LesionCounts

    @property
    def dice(self) -> float:
        """2·TP/(P+R); NaN when both volumes are 0."""
        denom = self.pred_mm3 + self.ref_mm3
        return 2.0 * self.tp_mm3 / denom if denom else NAN


def class_table(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> ClassTable:
    """The component table of one label of one case (boolean masks on one grid)."""
    pred_lab, pred_sizes = label_components(pred_mask)
    ref_lab, _ = label_components(ref_mask)
    hits = np.bincount(pred_lab[ref_mask], minlength=pred_sizes.size + 1)[1:]
    both = (pred_lab > 0) & (ref_lab > 0)
    pairs = np.unique(np.stack([pred_lab[both], ref_lab[both]], axis=1), axis=0) - 1 if both.any() \
        else np.zeros((0, 2), dtype=np.int64)
    return ClassTable(voxel_volume(spacing), pred_sizes, hits, int(ref_mask.sum()), int(ref_lab.max(initial=0)),
                      pairs.astype(np.int64))


def case_tables(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], labels: Sequence[int]
                ) -> dict[int, ClassTable]:
    """Component tables of every foreground label of one case."""
    return {int(lab): class_table(pred == lab, ref == lab, spacing) for lab in labels}


@dataclass(frozen=True)
class ClassScore:
    """One label's cross-validation scores."""

    pooled_dice: float
    mean_dice: float
    lesion_f1: float

    def to_json(self) -> dict[str, float]:
        """{'pooled_dice', 'mean_dice', 'lesion_f1'}."""
        return {"pooled_dice": self.pooled_dice, "mean_dice": self.mean_dice, "lesion_f1": self.lesion_f1}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ClassScore":
        """Inverse of to_json (null as NaN)."""
        return cls(*(NAN if d.get(k) is None else float(d[k]) for k in ("pooled_dice", "mean_dice", "lesion_f1")))


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values, NaN when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else NAN


def score_label(tables: Sequence[ClassTable], choose: Callable[[ClassTable], np.ndarray] | None = None) -> ClassScore:
    """A label's scores over cases when `choose(table)` says which predicted components remain (default: all)."""
    per_case = [t.counts(choose(t) if choose else t.all_kept()) for t in tables]
    pooled = ClassCounts(sum(c.tp_mm3 for c in per_case), sum(c.pred_mm3 for c in per_case),
                         sum(c.ref_mm3 for c in per_case), sum((c.lesions for c in per_case), LesionCounts()))
    return ClassScore(pooled.dice, finite_mean([c.dice for c in per_case]), pooled.lesions.f1)


@dataclass(frozen=True)
class CvScore:
    """A candidate's scores per foreground label and their means over labels."""

    per_label: dict[int, ClassScore]

    @property
    def overall(self) -> ClassScore:
        """Each score averaged over the labels where it is defined."""
        scores = list(self.per_label.values())
        return ClassScore(finite_mean([s.pooled_dice for s in scores]), finite_mean([s.mean_dice for s in scores]),
                          finite_mean([s.lesion_f1 for s in scores]))


def score_tables(tables: Mapping[int, Sequence[ClassTable]]) -> CvScore:
    """The scores of unmodified predictions, per label, from their component tables."""
    return CvScore({lab: score_label(ts) for lab, ts in tables.items()})


def _pair_tables(job: tuple[Path, Path, str, tuple[int, ...]]) -> dict[int, ClassTable]:
    """Component tables of one predicted file against its reference (runs in a worker)."""
    from xtlunet.evaluation.evaluate_folders import _read_pair

    pred_path, ref_path, case, labels = job
    pred, ref, spacing = _read_pair(ref_path, pred_path, case, None)
    return case_tables(pred, ref, spacing, labels)


def tables_from_files(pairs: Mapping[str, tuple[Path, Path]], labels: Sequence[int], num_workers: int = 1,
                      desc: str = "score") -> dict[int, list[ClassTable]]:
    """label → per-case tables of {case: (prediction file, reference file)}, read in `num_workers` processes."""
    from xtlunet.utils.parallel import map_cases

    jobs = [(pred, ref, case, tuple(int(v) for v in labels)) for case, (pred, ref) in sorted(pairs.items())]
    per_case = map_cases(_pair_tables, jobs, num_workers, desc=desc)
    return {int(lab): [t[int(lab)] for t in per_case] for lab in labels}
