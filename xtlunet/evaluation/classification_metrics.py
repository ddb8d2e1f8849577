"""Classification metrics for lesion scores: ROC AUC with a bootstrap interval, the Youden point, ROC figures."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from xtlunet.errors import XtlunetError
from xtlunet.evaluation._scores import ArrayLike, binary_scores, bootstrap_aucs, percentile_ci
from xtlunet.utils.atomic import atomic_path


def auc_with_ci(labels: ArrayLike, scores: ArrayLike, n_boot: int = 2000, seed: int = 0,
                alpha: float = 0.05, groups: ArrayLike | None = None) -> tuple[float, float, float]:
    """(AUC, lower, upper): sklearn's AUC and a percentile interval from a class-stratified case bootstrap, or from
    a patient bootstrap when `groups` gives each case's patient (findings of one patient are not independent)."""
    y, s = binary_scores(labels, scores)
    lo, hi = percentile_ci(bootstrap_aucs(y, [s], n_boot, seed, groups)[:, 0], alpha)
    return float(roc_auc_score(y, s)), lo, hi


def youden_point(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float, float]:
    """(threshold, sensitivity, specificity) maximising sensitivity + specificity − 1; positive means score ≥ threshold."""
    y, s = binary_scores(labels, scores)
    fpr, tpr, thresholds = roc_curve(y, s)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    # J·n_pos·n_neg in whole counts, so equal J values tie exactly; the first is the highest threshold
    best = int(np.argmax(np.rint(tpr * n_pos) * n_neg - np.rint(fpr * n_neg) * n_pos))
    return float(thresholds[best]), float(tpr[best]), float(1.0 - fpr[best])


def roc_png(labels: ArrayLike, scores_by_name: Mapping[str, ArrayLike], path: str | Path,
            title: str | None = None) -> Path:
    """Write one ROC curve per named score set (AUC in the legend) to a PNG file, atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    if not scores_by_name:
        raise XtlunetError("no score sets to plot", fix="pass {name: scores} for at least one arm")
    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    ax = fig.add_subplot()
    for name, scores in scores_by_name.items():
        y, s = binary_scores(labels, scores)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0.0, 1.0], [0.0, 1.0], ls="--", lw=0.8, color="grey")
    ax.set(xlim=(0.0, 1.0), ylim=(0.0, 1.0), xlabel="1 − specificity", ylabel="sensitivity",
           title=title or "ROC", aspect="equal")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
