"""AUC with a bootstrap interval, the Youden point and the ROC figure."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xtlunet.errors import XtlunetError
from xtlunet.evaluation._scores import midrank, rank_auc
from xtlunet.evaluation.classification_metrics import auc_with_ci, roc_png, youden_point


def _scores(n: int, seed: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced 0/1 labels and normal scores whose positives are shifted up, rounded to create ties."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    return y, np.round(rng.normal(size=n) + shift * y, 1)


def test_rank_auc_and_midrank_agree_with_sklearn_and_scipy():
    from scipy.stats import rankdata

    y, s = _scores(60, 0)
    assert rank_auc(s[y == 1], s[y == 0]) == pytest.approx(roc_auc_score(y, s), abs=1e-14)
    assert np.array_equal(midrank(s), rankdata(s))


def test_auc_with_ci_brackets_sklearns_auc_and_is_reproducible():
    y, s = _scores(80, 1)
    auc, lo, hi = auc_with_ci(y, s, n_boot=1000, seed=3)
    assert auc == roc_auc_score(y, s)
    assert lo < auc < hi
    assert auc_with_ci(y, s, n_boot=1000, seed=3) == (auc, lo, hi)
    assert auc_with_ci(y, s, n_boot=1000, seed=4) != (auc, lo, hi)


def test_auc_interval_shrinks_with_more_cases():
    widths = []
    for n in (40, 640):
        y, s = _scores(n, 2)
        _, lo, hi = auc_with_ci(y, s, n_boot=500)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~1/sqrt(16) = 1/4 expected


def test_youden_point_of_a_separable_example():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    assert youden_point(y, s) == (0.6, 1.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_youden_point_matches_a_search_over_every_threshold(seed):
    y, s = _scores(30, seed, shift=0.8)
    m, n = int(y.sum()), int((1 - y).sum())
    # J·m·n = TP·n + TN·m − m·n in whole counts; among equal J the highest threshold wins
    t, tp, tn = max(((t, int(np.sum(s[y == 1] >= t)), int(np.sum(s[y == 0] < t))) for t in np.unique(s)),
                    key=lambda c: (c[1] * n + c[2] * m, c[0]))
    assert youden_point(y, s) == pytest.approx((t, tp / m, tn / n), abs=1e-12)


def test_roc_png_is_written_atomically(tmp_path):
    import matplotlib.image

    y, s = _scores(40, 0)
    path = roc_png(y, {"XTL": s, "Scratch": s[::-1]}, tmp_path / "figs" / "roc.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[:2] == (500, 500)
    assert [p.name for p in path.parent.iterdir()] == ["roc.png"]


@pytest.mark.parametrize("labels,scores,message", [
    ([1, 1, 1], [0.1, 0.2, 0.3], "positive and negative"),
    ([0, 1, 2], [0.1, 0.2, 0.3], "0/1"),
    ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
    ([0, 1, 1], [0.1, 0.3], "shape"),
])
def test_bad_labels_or_scores_are_user_errors(labels, scores, message):
    with pytest.raises(XtlunetError, match=message):
        auc_with_ci(labels, scores, n_boot=10)
