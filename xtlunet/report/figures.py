"""The report's figures as PNG bytes, drawn on matplotlib.figure.Figure (no pyplot, no global state).

Figures that evaluation already draws into files (compare's Dice box plots, the ROC curves) are reused through
`via_file`; the rest are drawn here: training curves of every fold of an arm, cross-validation scores per fold and
pooled with their intervals, and finding ROI thumbnails.
"""
from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xtlunet.report.collect import ArmData

DPI = 100


def _png(fig: Any) -> bytes:
    """A Figure rendered to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def via_file(draw: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """The PNG bytes of a function that draws into a file path given as its `path` keyword."""
    with tempfile.TemporaryDirectory(prefix="xtlunet-report-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(*args, path=path, **kwargs)
        return path.read_bytes()


def training_curves(arm: ArmData) -> bytes:
    """Losses (train solid, validation dashed) and the validation metric (raw dotted, moving average solid) of
    every fold of an arm, one colour per fold, on one figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.6), dpi=DPI)
    loss_ax, metric_ax = fig.subplots(1, 2)
    metric = "metric"
    for k, fold in enumerate(arm.folds):
        rec, colour = fold.log.records, f"C{k % 10}"
        metric = fold.log.metric_name
        if not rec:
            continue
        ep = [r["epoch"] for r in rec]
        loss_ax.plot(ep, [r["train_loss"] for r in rec], "-", color=colour, label=f"fold {fold.fold} train")
        loss_ax.plot(ep, [r["val_loss"] for r in rec], "--", color=colour, label=f"fold {fold.fold} val")
        metric_ax.plot(ep, [r["metric"] for r in rec], ":", color=colour)
        metric_ax.plot(ep, [r["metric_ema"] for r in rec], "-", color=colour, label=f"fold {fold.fold}")
    loss_ax.set(xlabel="epoch", ylabel="loss")
    metric_ax.set(xlabel="epoch", ylabel=metric)
    loss_ax.set_title(f"{arm.name}: losses (solid train, dashed validation)", fontsize=10)
    metric_ax.set_title(f"{metric} (dotted per epoch, solid moving average)", fontsize=10)
    for ax in (loss_ax, metric_ax):
        if ax.lines:
            ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return _png(fig)


def cv_scores(arms: Sequence[ArmData]) -> bytes:
    """Each arm's score per fold and pooled over its folds, with the 95 % bootstrap intervals as error bars."""
    from matplotlib.figure import Figure

    folds = sorted({f.fold for arm in arms for f in arm.folds})
    slots = [str(k) for k in folds] + ["pooled"]
    fig = Figure(figsize=(2.5 + 0.9 * len(slots), 3.6), dpi=DPI)
    ax = fig.add_subplot()
    width = 0.7 / max(len(arms), 1)
    for a, arm in enumerate(arms):
        scores = {str(f.fold): f.score for f in arm.folds}
        scores["pooled"] = arm.pooled
        xs, ys, err = [], [], [[], []]
        for i, slot in enumerate(slots):
            s = scores.get(slot)
            if s is None or not math.isfinite(s["value"]):
                continue
            xs.append(i - 0.35 + width * (a + 0.5))
            ys.append(s["value"])
            lo, hi = s["ci_low"], s["ci_high"]
            err[0].append(s["value"] - lo if math.isfinite(lo) else 0.0)
            err[1].append(hi - s["value"] if math.isfinite(hi) else 0.0)
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, color=f"C{a % 10}", label=arm.name)
    metric = arms[0].pooled["metric"] if arms else "score"
    ax.set_xticks(range(len(slots)), [f"fold {s}" if s != "pooled" else s for s in slots])
    ax.set(ylabel="mean Dice per case" if metric == "dice" else "ROC AUC", ylim=(0.0, 1.0),
           title=f"cross-validation {'Dice' if metric == 'dice' else 'AUC'} (95 % bootstrap CI)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _png(fig)


def dice_boxes(dice: Mapping[str, Mapping[str, float]], title: str) -> bytes:
    """compare's box plots of per-case Dice per arm (works for one arm too)."""
    from xtlunet.evaluation.compare import dice_boxplot

    return via_file(dice_boxplot, dice, title=title)


def roc_curves(labels: Sequence[int], scores: Mapping[str, Sequence[float]], title: str) -> bytes:
    """evaluation's ROC curves, one per arm, AUC in the legend."""
    from xtlunet.evaluation.classification_metrics import roc_png

    return via_file(roc_png, labels, scores, title=title)


def roi_thumbnail(crop: np.ndarray, zoom: int = 3) -> bytes:
    """A 2D crop as a grey PNG (0.5/99.5 percentile window), enlarged, with a cross at the finding (its centre)."""
    from matplotlib.image import imsave

    from xtlunet.report.qc import FP_COLOUR, display_window

    lo, hi = display_window(crop)
    grey = (np.clip((crop - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.repeat(np.repeat(np.repeat(grey[..., None], 3, axis=2), zoom, axis=0), zoom, axis=1)
    cy, cx = rgb.shape[0] // 2, rgb.shape[1] // 2
    arm = max(2, min(rgb.shape[:2]) // 12)
    rgb[cy, cx - arm:cx - 1] = rgb[cy, cx + 2:cx + arm + 1] = FP_COLOUR
    rgb[cy - arm:cy - 1, cx] = rgb[cy + 2:cy + arm + 1, cx] = FP_COLOUR
    buf = io.BytesIO()
    imsave(buf, rgb, format="png")
    return buf.getvalue()
