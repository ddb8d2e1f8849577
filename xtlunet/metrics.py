"""Metric primitives shared by training (per-epoch validation) and evaluation: pooled pseudo-Dice and ROC AUC."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def pseudo_dice(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Dice per class from summed true/false positives and false negatives (nnU-Net's pseudo Dice)."""
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def confusion_counts(pred: np.ndarray, ref: np.ndarray, labels: list[int]) -> np.ndarray:
    """(3, L) array of tp, fp, fn per label."""
    out = np.zeros((3, len(labels)))
    for i, lab in enumerate(labels):
        p, r = pred == lab, ref == lab
        out[:, i] = [np.logical_and(p, r).sum(), np.logical_and(p, ~r).sum(), np.logical_and(~p, r).sum()]
    return out


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: binary on the positive-class probability, macro one-vs-rest for more classes; NaN if undefined."""
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.ndim == 2 and probs.shape[1] == 2:
        probs = probs[:, 1]
    if probs.ndim == 1:
        return float(roc_auc_score(labels, probs))
    present = np.unique(labels)
    if len(present) < probs.shape[1]:
        return float("nan")
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
