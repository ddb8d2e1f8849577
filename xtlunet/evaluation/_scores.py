"""Shared helpers for score-based statistics: input checks, midranks, rank AUCs and bootstrap resampling."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from xtlunet.errors import XtlunetError

ArrayLike = Sequence[float] | np.ndarray


def binary_scores(labels: ArrayLike, *scores: ArrayLike) -> tuple[np.ndarray, ...]:
    """Check 0/1 labels (both classes present) and matching finite score vectors; return them as arrays."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise XtlunetError(f"labels must be a non-empty 1D sequence, got shape {y.shape}",
                           fix="pass one 0/1 label per case")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise XtlunetError(f"labels must be 0/1, got values {sorted(values)[:5]}",
                           fix="encode the positive class as 1 and the negative class as 0")
    if values != {0, 1}:
        raise XtlunetError(f"ROC statistics need positive and negative cases, but every label is {values.pop()}",
                           fix="evaluate on a set that holds both classes")
    out = [y.astype(np.int64)]
    for s in scores:
        arr = np.asarray(s, dtype=np.float64)
        if arr.shape != y.shape:
            raise XtlunetError(f"scores have shape {arr.shape} but labels have shape {y.shape}",
                               fix="pass one score per labelled case")
        if not np.all(np.isfinite(arr)):
            raise XtlunetError(f"scores contain {int((~np.isfinite(arr)).sum())} NaN/Inf values",
                               fix="drop or repair the cases without a finite score")
        out.append(arr)
    return tuple(out)


def paired_finite(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Two paired 1D arrays with every pair holding a NaN removed, and the number of pairs removed."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise XtlunetError(f"paired values must be two 1D sequences of equal length, got {x.shape} and {y.shape}",
                           fix="pass one value per case for each arm, in the same case order")
    keep = ~(np.isnan(x) | np.isnan(y))
    if not keep.any():
        raise XtlunetError("no pair of values without NaN", fix="check that both arms were evaluated on the same cases")
    return x[keep], y[keep], int((~keep).sum())


def midrank(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1D array with ties given their mean rank (Sun & Xu's fast midrank, O(N log N))."""
    order = np.argsort(x, kind="mergesort")
    z = x[order]
    n = z.size
    starts = np.flatnonzero(np.r_[True, z[1:] != z[:-1]])
    ends = np.r_[starts[1:], n]
    run_rank = 0.5 * (starts + ends - 1) + 1.0
    out = np.empty(n, dtype=np.float64)
    out[order] = np.repeat(run_rank, ends - starts)
    return out


def rank_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC along the last axis from positive and negative scores (Mann-Whitney, ties count one half)."""
    m, n = pos.shape[-1], neg.shape[-1]
    ranks = rankdata(np.concatenate([pos, neg], axis=-1), axis=-1)
    return (ranks[..., :m].sum(axis=-1) - m * (m + 1) / 2.0) / (m * n)


def _rng(n_boot: int, seed: int) -> np.random.Generator:
    """A seeded generator, after checking the number of bootstrap replicates."""
    if n_boot < 1:
        raise XtlunetError(f"n_boot must be at least 1, got {n_boot}", fix="use e.g. n_boot=2000")
    return np.random.default_rng(seed)


def case_bootstrap(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) case indices resampled with replacement."""
    return _rng(n_boot, seed).integers(0, n, (n_boot, n))


def stratified_bootstrap(y: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, n_pos) positive and (n_boot, n_neg) negative case indices, resampled with replacement per class."""
    rng = _rng(n_boot, seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    return (pos[rng.integers(0, pos.size, (n_boot, pos.size))],
            neg[rng.integers(0, neg.size, (n_boot, neg.size))])


def group_bootstrap(groups: ArrayLike, n_boot: int, seed: int) -> list[np.ndarray]:
    """Per replicate, the indices of every item of the groups (patients) drawn with replacement: a cluster bootstrap."""
    rng = _rng(n_boot, seed)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
    draws = rng.integers(0, len(members), (n_boot, len(members)))
    return [np.concatenate([members[g] for g in row]) for row in draws]


def bootstrap_aucs(y: np.ndarray, scores: Sequence[np.ndarray], n_boot: int, seed: int,
                   groups: ArrayLike | None = None) -> np.ndarray:
    """(replicates, k) AUCs of k score vectors on the same resamples: a class-stratified case bootstrap, or, with
    `groups` (patient ids), a patient bootstrap whose replicates holding one class only are dropped."""
    if groups is None:
        pos, neg = stratified_bootstrap(y, n_boot, seed)
        return np.stack([rank_auc(s[pos], s[neg]) for s in scores], axis=1)
    reps = [[rank_auc(s[idx][y[idx] == 1], s[idx][y[idx] == 0]) for s in scores]
            for idx in group_bootstrap(groups, n_boot, seed) if 0 < y[idx].sum() < idx.size]
    if not reps:
        raise XtlunetError("no patient resample holds both classes", fix="evaluate on more patients of each class")
    return np.array(reps)


def percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) percentile interval of bootstrap replicates."""
    if not 0.0 < alpha < 1.0:
        raise XtlunetError(f"alpha must lie in (0, 1), got {alpha}", fix="use e.g. alpha=0.05 for a 95% interval")
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)
