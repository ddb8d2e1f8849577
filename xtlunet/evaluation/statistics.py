"""Statistics comparing two arms on the same cases: DeLong's test, paired Wilcoxon, paired bootstraps.

- ``delong_test``: DeLong, DeLong & Clarke-Pearson (1988) test of two correlated ROC AUCs, computed with
  Sun & Xu's (2014) fast algorithm (midranks, structural components, covariance with 1/(m−1), 1/(n−1)).
- ``paired_wilcoxon``: scipy's signed-rank test; pairs holding a NaN are dropped and counted; zero
  differences follow `zero_method` (default 'wilcox': dropped before ranking, as in Wilcoxon's original
  test); when every difference is zero the result is statistic 0.0, p 1.0.
- ``bootstrap_*``: percentile intervals from resampling cases with replacement, the same cases for both
  arms; the AUC bootstrap resamples positives and negatives separately (stratified), or whole patients when
  patient ids are given (several findings of one patient are not independent).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm, wilcoxon
from sklearn.metrics import roc_auc_score

from xtlunet.errors import XtlunetError
from xtlunet.evaluation._scores import (ArrayLike, binary_scores, bootstrap_aucs, case_bootstrap, midrank,
                                        paired_finite, percentile_ci)


def delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs (k,), covariance (k, k)) of k score rows (k, N) on checked 0/1 labels, by fast DeLong."""
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = np.stack([midrank(row) for row in pos])
    ty = np.stack([midrank(row) for row in neg])
    tz = np.stack([midrank(row) for row in np.concatenate([pos, neg], axis=1)])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n  # per positive: fraction of negatives it outranks
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: fraction of positives that outrank it
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike) -> dict[str, float]:
    """DeLong's two-sided test of AUC(a) = AUC(b) on the same cases: auc_a, auc_b, diff, var, z, p."""
    y, sa, sb = binary_scores(labels, scores_a, scores_b)
    if min(int(y.sum()), int(y.size - y.sum())) < 2:
        raise XtlunetError("DeLong's test needs at least two positive and two negative cases",
                           fix="compare the arms on a larger evaluation set")
    aucs, cov = delong_components(y, np.vstack([sa, sb]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var > 0.0:
        z = diff / math.sqrt(var)
        p = float(2.0 * norm.sf(abs(z)))
    else:  # identical rankings, or two rankings without any spread: no uncertainty left
        z = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0.0 else 0.0
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "var": var, "z": z, "p": p}


def paired_wilcoxon(a: ArrayLike, b: ArrayLike, zero_method: str = "wilcox",
                    method: str = "auto") -> dict[str, float]:
    """Wilcoxon signed-rank test of a − b: statistic (min(W+, W−)), p, n, n_nan_dropped, n_zero, median_diff."""
    x, y, n_nan = paired_finite(a, b)
    d = x - y
    out = {"n": int(d.size), "n_nan_dropped": n_nan, "n_zero": int(np.sum(d == 0.0)),
           "median_diff": float(np.median(d))}
    if not np.any(d != 0.0):
        return {"statistic": 0.0, "p": 1.0, **out}
    res = wilcoxon(d, zero_method=zero_method, method=method)
    return {"statistic": float(res.statistic), "p": float(res.pvalue), **out}


def bootstrap_mean_ci(values: ArrayLike, n_boot: int = 2000, seed: int = 0,
                      alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lower, upper) with a case bootstrap; NaN values dropped (all NaN: NaN, NaN, NaN)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return math.nan, math.nan, math.nan
    lo, hi = percentile_ci(v[case_bootstrap(v.size, n_boot, seed)].mean(axis=1), alpha)
    return float(v.mean()), lo, hi


def bootstrap_mean_diff_ci(a: ArrayLike, b: ArrayLike, n_boot: int = 2000, seed: int = 0,
                           alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean of a − b, lower, upper) with a paired case bootstrap; NaN pairs dropped."""
    x, y, _ = paired_finite(a, b)
    d = x - y
    lo, hi = percentile_ci(d[case_bootstrap(d.size, n_boot, seed)].mean(axis=1), alpha)
    return float(d.mean()), lo, hi


def bootstrap_auc_diff_ci(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, n_boot: int = 2000,
                          seed: int = 0, alpha: float = 0.05,
                          groups: ArrayLike | None = None) -> tuple[float, float, float]:
    """(AUC(a) − AUC(b), lower, upper) with a class-stratified bootstrap of cases shared by both arms, or a patient
    bootstrap when `groups` gives each case's patient."""
    y, sa, sb = binary_scores(labels, scores_a, scores_b)
    reps = bootstrap_aucs(y, [sa, sb], n_boot, seed, groups)
    lo, hi = percentile_ci(reps[:, 0] - reps[:, 1], alpha)
    return float(roc_auc_score(y, sa) - roc_auc_score(y, sb)), lo, hi
