"""Arm comparison: fast DeLong vs a direct computation, Wilcoxon vs enumeration, paired bootstraps."""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm, wilcoxon
from sklearn.metrics import roc_auc_score

from xtlunet.errors import XtlunetError
from xtlunet.evaluation.statistics import (bootstrap_auc_diff_ci, bootstrap_mean_ci, bootstrap_mean_diff_ci, delong_test,
                                           paired_wilcoxon)


def _direct_delong(y, sa, sb) -> tuple[float, float]:
    """(z, p) from DeLong's structural components computed pair by pair, O(m·n)."""
    def psi(x, v):
        return 1.0 if x > v else 0.5 if x == v else 0.0

    comps = []
    for s in (sa, sb):
        pos, neg = [float(v) for v in s[y == 1]], [float(v) for v in s[y == 0]]
        v10 = [sum(psi(x, v) for v in neg) / len(neg) for x in pos]
        v01 = [sum(psi(x, v) for x in pos) / len(pos) for v in neg]
        comps.append((sum(v10) / len(v10), v10, v01))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = comps
    m, n = len(v10a), len(v01a)

    def s(u, w, mean_u, mean_w):
        return sum((a - mean_u) * (b - mean_w) for a, b in zip(u, w)) / (len(u) - 1)

    var = ((s(v10a, v10a, auc_a, auc_a) + s(v10b, v10b, auc_b, auc_b) - 2 * s(v10a, v10b, auc_a, auc_b)) / m
           + (s(v01a, v01a, auc_a, auc_a) + s(v01b, v01b, auc_b, auc_b) - 2 * s(v01a, v01b, auc_a, auc_b)) / n)
    z = (auc_a - auc_b) / math.sqrt(var)
    return z, 2 * norm.sf(abs(z))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_delong_matches_the_direct_computation_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(90) < 0.4).astype(int)
    sa = np.round(rng.normal(size=90) + 1.2 * y, 1)  # rounding creates ties within and across classes
    sb = np.round(0.6 * sa + rng.normal(size=90) * 0.8, 1)
    res = delong_test(y, sa, sb)
    z, p = _direct_delong(y, sa, sb)
    assert res["z"] == pytest.approx(z, abs=1e-10) and res["p"] == pytest.approx(p, abs=1e-10)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, sa), abs=1e-14)
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, sb), abs=1e-14)
    assert res["diff"] == pytest.approx(res["auc_a"] - res["auc_b"]) and res["var"] > 0


def test_delong_of_identical_scores_is_no_difference():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    res = delong_test(y, s, s)
    assert (res["diff"], res["var"], res["z"], res["p"]) == (0.0, 0.0, 0.0, 1.0)


def _exact_two_sided_p(d: np.ndarray) -> float:
    """Signed-rank p-value by enumerating all 2^n sign assignments (|d| distinct and non-zero)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    t_obs = ranks[d > 0].sum()
    null = np.array([sum(r for r, pos in zip(ranks, signs) if pos)
                     for signs in itertools.product([0, 1], repeat=d.size)])
    return min(1.0, 2 * min(np.mean(null <= t_obs), np.mean(null >= t_obs)))


def test_wilcoxon_matches_the_enumerated_signed_rank_distribution():
    a = np.array([3.5, 1.0, 4.2, 2.7, 0.9, 5.0])
    b = np.array([2.0, 1.3, 2.0, 2.0, 2.0, 2.0])  # differences 1.5, -0.3, 2.2, 0.7, -1.1, 3.0
    res = paired_wilcoxon(a, b)
    # W+ = 2 + 4 + 5 + 6 = 17, W- = 1 + 3 = 4; P(W+ <= 4) = 7/64 (sets {}, 1, 2, 3, 4, 12, 13)
    assert res["statistic"] == 4.0
    assert res["p"] == pytest.approx(14 / 64, abs=1e-12)
    assert res["p"] == pytest.approx(_exact_two_sided_p(a - b), abs=1e-12)
    assert res["n"] == 6 and res["median_diff"] == pytest.approx(1.1)


def test_wilcoxon_drops_nan_pairs_and_agrees_with_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=30) - 0.4
    a[[3, 7]], b[11] = np.nan, np.nan
    keep = ~(np.isnan(a) | np.isnan(b))
    expected = wilcoxon(a[keep], b[keep])
    res = paired_wilcoxon(a, b)
    assert (res["statistic"], res["p"]) == (expected.statistic, expected.pvalue)
    assert res["n"] == 27 and res["n_nan_dropped"] == 3


def test_wilcoxon_zero_differences():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    b = a - np.array([0.0, 0.0, 0.5, -0.2, 1.1, 0.8, 1.7])
    res = paired_wilcoxon(a, b)
    assert res["n_zero"] == 2 and res["n"] == 7
    assert res["p"] == pytest.approx(_exact_two_sided_p((a - b)[2:]), abs=1e-12)  # zeros dropped
    same = paired_wilcoxon(a, a)
    assert (same["statistic"], same["p"], same["median_diff"]) == (0.0, 1.0, 0.0)


def test_bootstrap_mean_diff_ci_brackets_the_mean_and_shrinks_with_n():
    widths = []
    for n in (30, 480):
        rng = np.random.default_rng(n)
        a = rng.normal(size=n)
        b = a - 0.3 + rng.normal(size=n) * 0.5
        diff, lo, hi = bootstrap_mean_diff_ci(a, b, n_boot=1000, seed=1)
        assert diff == pytest.approx(np.mean(a - b)) and lo < diff < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5


def test_bootstrap_mean_ci_brackets_the_mean_drops_nan_and_matches_the_normal_interval():
    rng = np.random.default_rng(7)
    v = rng.normal(0.7, 0.1, 400)
    mean, lo, hi = bootstrap_mean_ci(np.append(v, np.nan), n_boot=2000, seed=2)
    assert mean == pytest.approx(v.mean()) and lo < mean < hi
    assert hi - lo == pytest.approx(2 * 1.96 * v.std(ddof=1) / np.sqrt(v.size), rel=0.15)
    assert all(np.isnan(bootstrap_mean_ci([np.nan])))


def test_bootstrap_auc_diff_ci_brackets_the_difference_and_shrinks_with_n():
    widths = []
    for n in (40, 640):
        rng = np.random.default_rng(n)
        y = np.repeat([0, 1], n // 2)
        sa = rng.normal(size=n) + 1.5 * y
        sb = sa + rng.normal(size=n)
        diff, lo, hi = bootstrap_auc_diff_ci(y, sa, sb, n_boot=500, seed=0)
        assert diff == pytest.approx(roc_auc_score(y, sa) - roc_auc_score(y, sb)) and lo < diff < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5


def test_unpaired_or_empty_input_is_a_user_error():
    with pytest.raises(XtlunetError, match="equal length"):
        paired_wilcoxon([1.0, 2.0], [1.0])
    with pytest.raises(XtlunetError, match="NaN"):
        bootstrap_mean_diff_ci([np.nan], [1.0])
    with pytest.raises(XtlunetError, match="n_boot"):
        bootstrap_mean_diff_ci([1.0, 2.0], [0.0, 1.0], n_boot=0)


def test_delong_needs_two_cases_of_each_class():
    with pytest.raises(XtlunetError, match="two positive and two negative"):
        delong_test([0, 0, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_patient_bootstrap_resamples_patients_not_findings():
    """Six patients with five identical findings each: resampling patients is resampling the six distinct
    findings (AUC ignores a common multiplicity), while resampling findings pretends there are 30 of them."""
    from xtlunet.evaluation.classification_metrics import auc_with_ci

    y6 = np.array([0, 0, 0, 1, 1, 1])
    s6 = np.array([0.1, 0.4, 0.7, 0.3, 0.6, 0.9])
    y30, s30 = np.repeat(y6, 5), np.repeat(s6, 5)
    patients = np.repeat([f"p{i}" for i in range(6)], 5)
    by_patient = auc_with_ci(y30, s30, n_boot=800, seed=4, groups=patients)
    assert by_patient == auc_with_ci(y6, s6, n_boot=800, seed=4, groups=np.arange(6))
    by_finding = auc_with_ci(y30, s30, n_boot=800, seed=4)
    assert by_patient[0] == by_finding[0] == pytest.approx(6 / 9)   # 1 + 2 + 3 of the 9 pairs
    assert (by_patient[2] - by_patient[1]) > 1.8 * (by_finding[2] - by_finding[1])   # the honest interval is wider
    diff = bootstrap_auc_diff_ci(y30, s30, np.repeat(s6[::-1], 5), n_boot=300, seed=1, groups=patients)
    assert diff == bootstrap_auc_diff_ci(y6, s6, s6[::-1], n_boot=300, seed=1, groups=np.arange(6))
