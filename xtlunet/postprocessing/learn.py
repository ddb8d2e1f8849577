"""Learn post-processing on cross-validation: per foreground label, try keeping only the largest connected component
and removing components under a volume threshold; keep an operation only if it raises the label's pooled Dice and does
not lower its lesion-wise F1 (a lesion task must not lose small true lesions for a cleaner volume).

Threshold candidates come from the distribution of predicted component volumes (mm³): midway between consecutive
distinct volumes, so each candidate removes every predicted component up to one volume; at most MAX_THRESHOLDS of
them, evenly spread over that distribution. Of the operations that pass, the one of highest pooled Dice is chosen;
on a tie the earlier: keep-largest, then thresholds from small to large (the one that removes least).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from xtlunet.postprocessing.components import KEEP_LARGEST, NONE, REMOVE_SMALL, at_least, largest_only
from xtlunet.postprocessing.plan import LabelRule, PostprocessingPlan, Tried
from xtlunet.postprocessing.scores import ClassScore, ClassTable, score_label

MAX_THRESHOLDS = 32
EPS = 1e-9  # score differences below this are float noise, not a change


def threshold_candidates(tables: Sequence[ClassTable], max_candidates: int = MAX_THRESHOLDS) -> list[float]:
    """Volume thresholds (mm³) midway between consecutive distinct predicted component volumes, ascending."""
    volumes = np.unique(np.concatenate([t.pred_voxels * t.voxel_mm3 for t in tables] or [np.zeros(0)]))
    mids = (volumes[:-1] + volumes[1:]) / 2.0
    if mids.size > max_candidates:
        mids = mids[np.unique(np.linspace(0, mids.size - 1, max_candidates).round().astype(int))]
    return [float(v) for v in mids]


def _verdict(before: ClassScore, after: ClassScore) -> tuple[bool, str]:
    """(passed?, why) of an operation's scores against the label's scores without it."""
    if not math.isfinite(after.pooled_dice) or not after.pooled_dice > before.pooled_dice + EPS:
        return False, "pooled Dice not raised"
    if math.isfinite(before.lesion_f1) and math.isfinite(after.lesion_f1) and after.lesion_f1 < before.lesion_f1 - EPS:
        return False, "lesion F1 lowered"
    return True, "raises pooled Dice, lesion F1 not lowered"


def _try(tables: Sequence[ClassTable], before: ClassScore, operation: str, volume: float | None) -> Tried:
    """Score one candidate operation on every case of a label."""
    if operation == KEEP_LARGEST:
        score = score_label(tables, lambda t: largest_only(t.pred_voxels))
    else:
        score = score_label(tables, lambda t: at_least(t.pred_voxels, t.voxel_mm3, volume))
    passed, why = _verdict(before, score)
    return Tried(operation, volume, score, passed, why)


def learn_label(tables: Sequence[ClassTable], name: str = "") -> LabelRule:
    """The rule of one label from its cases' component tables (see the module docstring)."""
    before = score_label(tables)
    largest = _try(tables, before, KEEP_LARGEST, None)
    thresholds = [_try(tables, before, REMOVE_SMALL, v) for v in threshold_candidates(tables)]
    passing = [t for t in [largest, *thresholds] if t.passed]
    best = None
    if passing:
        top = max(t.score.pooled_dice for t in passing)
        best = next(t for t in passing if t.score.pooled_dice >= top - EPS)  # the first of (nearly) equal ones
    shown_threshold = _shown_threshold(thresholds, best)
    tried = [largest] + ([shown_threshold] if shown_threshold else [])
    if best is None:
        return LabelRule(name, NONE, None, before, before, tried)
    return LabelRule(name, best.operation, best.min_volume_mm3, before, best.score, tried)


def _shown_threshold(thresholds: Sequence[Tried], best: Tried | None) -> Tried | None:
    """The threshold reported in the file: the chosen one, else the one of highest pooled Dice (None if none)."""
    if best is not None and best.operation == REMOVE_SMALL:
        return best
    return max(thresholds, key=lambda t: (t.score.pooled_dice if math.isfinite(t.score.pooled_dice) else -1.0),
               default=None)


def learn_postprocessing(tables: Mapping[int, Sequence[ClassTable]], names: Mapping[int, str] | None = None,
                         source: Mapping[str, Any] | None = None) -> PostprocessingPlan:
    """A rule for every label of `tables` (label → per-case component tables of the CV predictions)."""
    names = names or {}
    return PostprocessingPlan({int(lab): learn_label(ts, names.get(int(lab), "")) for lab, ts in tables.items()},
                              dict(source or {}))
