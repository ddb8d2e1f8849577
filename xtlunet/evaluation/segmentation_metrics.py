"""Segmentation metrics on label arrays with voxel spacing: Dice, IoU, HD95, volumes and lesion-wise detection.

Conventions (masks: nonzero = foreground; spacing in array order (z, y, x), mm):
- Dice / IoU: NaN when the class is absent from both masks (nothing to score), 0.0 when absent from one.
- HD95: 95th percentile of the pooled symmetric surface distances in mm; 0.0 when both masks are
  empty (perfect agreement), NaN when exactly one is empty (undefined; summaries skip it and report n).
  Surface voxels are foreground voxels with a face-neighbour in the background or on the array edge.
- Volume difference: prediction minus reference in mm³, and relative to the reference volume
  (0.0 when both are empty, NaN when only the reference is empty).
- Lesions are connected components with full connectivity (26 in 3D, 8 in 2D) unless `connectivity`
  says otherwise; components under `min_lesion_voxels` are deleted from both masks before matching.
  A reference lesion is detected, and a predicted lesion is a true positive, when it overlaps the other
  mask's (kept) foreground in more than 0 voxels and in at least `min_overlap` of its own voxels.
  TPR is NaN without reference lesions, PPV is NaN without predicted lesions; F1 is NaN when both sets
  are empty, otherwise 0.0 whenever TPR or PPV is 0 or undefined.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

NAN = float("nan")


def _as_mask(mask: np.ndarray) -> np.ndarray:
    """A boolean view of a mask (nonzero = foreground)."""
    return np.asarray(mask).astype(bool, copy=False)


def _check_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> None:
    """Refuse masks of different shapes or a spacing of the wrong length."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if spacing is not None and len(spacing) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {ref.ndim}D array")


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice overlap 2|P∩R|/(|P|+|R|); NaN when both masks are empty."""
    p, r = _as_mask(pred_mask), _as_mask(ref_mask)
    _check_pair(p, r)
    denom = int(p.sum()) + int(r.sum())
    return 2.0 * int(np.logical_and(p, r).sum()) / denom if denom else NAN


def iou(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Intersection over union |P∩R|/|P∪R|; NaN when both masks are empty."""
    p, r = _as_mask(pred_mask), _as_mask(ref_mask)
    _check_pair(p, r)
    union = int(np.logical_or(p, r).sum())
    return int(np.logical_and(p, r).sum()) / union if union else NAN


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face-neighbour in the background or outside the array."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(p: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their joint bounding box plus one voxel (distances and surfaces unchanged)."""
    coords = np.argwhere(p | r)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, p.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    return p[box], r[box]


def surface_distances(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from each prediction surface voxel to the reference surface and back, pooled."""
    p, r = _as_mask(pred_mask), _as_mask(ref_mask)
    _check_pair(p, r, spacing)
    if not (p.any() and r.any()):
        raise ValueError("surface distances need two non-empty masks")
    p, r = _crop_to_union(p, r)
    ps, rs = _surface(p), _surface(r)
    to_ref = ndimage.distance_transform_edt(~rs, sampling=spacing)[ps]
    to_pred = ndimage.distance_transform_edt(~ps, sampling=spacing)[rs]
    return np.concatenate([to_ref, to_pred])


def hausdorff(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float],
              percentile: float = 95.0) -> float:
    """Percentile Hausdorff distance in mm (100 = classic Hausdorff); 0.0 if both empty, NaN if one is."""
    p, r = _as_mask(pred_mask), _as_mask(ref_mask)
    _check_pair(p, r, spacing)
    if not p.any() and not r.any():
        return 0.0
    if not (p.any() and r.any()):
        return NAN
    return float(np.percentile(surface_distances(p, r, spacing), percentile))


def hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (conventions in the module docstring)."""
    return hausdorff(pred_mask, ref_mask, spacing, 95.0)


def volume_mm3(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Foreground volume in mm³."""
    return float(_as_mask(mask).sum()) * float(np.prod(spacing))


def volume_difference(pred_mask: np.ndarray, ref_mask: np.ndarray,
                      spacing: Sequence[float]) -> tuple[float, float]:
    """(prediction − reference volume in mm³, that difference relative to the reference volume)."""
    p, r = _as_mask(pred_mask), _as_mask(ref_mask)
    _check_pair(p, r, spacing)
    vp, vr = volume_mm3(p, spacing), volume_mm3(r, spacing)
    if vr == 0.0:
        return vp - vr, (0.0 if vp == 0.0 else NAN)
    return vp - vr, (vp - vr) / vr


@dataclass(frozen=True)
class LesionCounts:
    """Lesion-wise detection counts of one case (or pooled over cases, by adding)."""

    n_ref_lesions: int = 0
    n_ref_detected: int = 0
    n_pred_lesions: int = 0
    n_pred_tp: int = 0

    def __add__(self, other: "LesionCounts") -> "LesionCounts":
        """Pool the counts of two cases."""
        return LesionCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def tpr(self) -> float:
        """Detected reference lesions / reference lesions (NaN without reference lesions)."""
        return self.n_ref_detected / self.n_ref_lesions if self.n_ref_lesions else NAN

    @property
    def ppv(self) -> float:
        """True-positive predicted lesions / predicted lesions (NaN without predicted lesions)."""
        return self.n_pred_tp / self.n_pred_lesions if self.n_pred_lesions else NAN

    @property
    def f1(self) -> float:
        """2·PPV·TPR/(PPV+TPR); NaN when both sets are empty, 0.0 when either rate is 0 or undefined."""
        if not self.n_ref_lesions and not self.n_pred_lesions:
            return NAN
        tpr, ppv = self.tpr, self.ppv
        if math.isnan(tpr) or math.isnan(ppv) or tpr + ppv == 0.0:
            return 0.0
        return 2.0 * ppv * tpr / (ppv + tpr)

    def to_json(self) -> dict[str, Any]:
        """Counts and rates as a flat dict (the keys used in per-case rows)."""
        return {**asdict(self), "lesion_tpr": self.tpr, "lesion_ppv": self.ppv, "lesion_f1": self.f1}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LesionCounts":
        """The counts of a dict written by to_json (extra keys ignored)."""
        return cls(*(int(d[f.name]) for f in fields(cls)))


def _components(mask: np.ndarray, structure: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """Connected components numbered 1..n, those under `min_voxels` voxels removed."""
    lab, n = ndimage.label(mask, structure=structure)
    if min_voxels > 1 and n:
        keep = np.bincount(lab.ravel(), minlength=n + 1) >= min_voxels
        keep[0] = False
        remap = np.zeros(n + 1, dtype=lab.dtype)
        remap[keep] = np.arange(1, int(keep.sum()) + 1)
        lab, n = remap[lab], int(keep.sum())
    return lab, n


def _n_hit(lab: np.ndarray, n: int, other: np.ndarray, min_overlap: float) -> int:
    """How many of the n components overlap `other` in > 0 voxels and in ≥ min_overlap of their voxels."""
    if n == 0:
        return 0
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    overlap = np.bincount(lab[other], minlength=n + 1)[1:]
    return int(np.sum((overlap > 0) & (overlap >= min_overlap * size)))


def lesion_detection(pred_mask: np.ndarray, ref_mask: np.ndarray, *, min_overlap: float = 0.0,
                     min_lesion_voxels: int = 1, connectivity: int | None = None) -> LesionCounts:
    """Lesion-wise detection counts; connectivity 1..ndim (None = ndim, i.e. 26 in 3D, 8 in 2D)."""
    p, r = _as_mask(pred_mask), _as_mask(ref_mask)
    _check_pair(p, r)
    conn = r.ndim if connectivity is None else int(connectivity)
    if not 1 <= conn <= r.ndim:
        raise ValueError(f"connectivity must lie in 1..{r.ndim} for {r.ndim}D masks, got {connectivity}")
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap is a fraction in [0, 1], got {min_overlap}")
    structure = ndimage.generate_binary_structure(r.ndim, conn)
    ref_lab, n_ref = _components(r, structure, min_lesion_voxels)
    pred_lab, n_pred = _components(p, structure, min_lesion_voxels)
    return LesionCounts(n_ref, _n_hit(ref_lab, n_ref, pred_lab > 0, min_overlap),
                        n_pred, _n_hit(pred_lab, n_pred, ref_lab > 0, min_overlap))


def class_metrics(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float],
                  **lesion_options: Any) -> dict[str, float]:
    """Every metric of one class: overlap, HD95, volumes and lesion-wise detection."""
    p, r = _as_mask(pred_mask), _as_mask(ref_mask)
    _check_pair(p, r, spacing)
    vol_diff, vol_rel = volume_difference(p, r, spacing)
    return {"dice": dice(p, r), "iou": iou(p, r), "hd95": hd95(p, r, spacing),
            "volume_pred_mm3": volume_mm3(p, spacing), "volume_ref_mm3": volume_mm3(r, spacing),
            "volume_diff_mm3": vol_diff, "volume_rel_diff": vol_rel,
            **lesion_detection(p, r, **lesion_options).to_json()}


def evaluate_case(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], labels: Sequence[int], *,
                  min_overlap: float = 0.0, min_lesion_voxels: int = 1,
                  connectivity: int | None = None) -> dict[int, dict[str, float]]:
    """Metrics of each label of one case: {label: {metric: value}} (see the module docstring)."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    _check_pair(pred, ref, spacing)
    options = {"min_overlap": min_overlap, "min_lesion_voxels": min_lesion_voxels, "connectivity": connectivity}
    return {int(lab): class_metrics(pred == lab, ref == lab, spacing, **options) for lab in labels}
