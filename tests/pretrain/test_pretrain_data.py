"""Mammogram preparation: breast crop, normalisation, input size, grouped validation split."""
import numpy as np
import pytest

from xtlunet.errors import XtlunetError
from xtlunet.pretrain.data import ImageSet, breast_box, normalize_region, prepare_image, validation_split
from xtlunet.trainers.pretrain2d import planned_input_size


def _breast(h=120, w=90):
    """A bright half-disc against the left edge, dark background."""
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w), np.float32)
    inside = ((yy - h / 2) / (h * 0.4)) ** 2 + (xx / (w * 0.6)) ** 2 < 1
    img[inside] = 1000 + 50 * np.sin(yy[inside] / 3.0)
    return img, inside


def test_breast_box_encloses_the_breast_only():
    img, inside = _breast()
    img[2, 85] = 5000  # a tiny bright label marker away from the breast: ignored (not the largest region)
    (y0, y1), (x0, x1) = breast_box(img)
    ys, xs = np.nonzero(inside)
    assert y0 <= ys.min() and y1 > ys.max() and x0 <= xs.min() and x1 > xs.max()
    assert x1 < 85 and y1 - y0 < 120


def test_normalize_region_zscore():
    img, inside = _breast()
    out = normalize_region(img, inside)
    assert abs(out[inside].mean()) < 0.05 and abs(out[inside].std() - 1) < 0.05


def test_prepare_image_resizes_image_and_mask():
    img, inside = _breast()
    mask = np.zeros_like(img, np.uint8)
    mask[50:60, 20:30] = 1
    x, m, frac = prepare_image([img, img * 2], mask, (64, 48))
    assert x.shape == (2, 64, 48) and m.shape == (64, 48) and m.any() and 0 < frac < 1


def test_planned_input_size():
    shapes = np.array([[400, 300], [420, 310], [380, 290]])
    size = planned_input_size(shapes, 256, 32)
    assert all(s % 32 == 0 for s in size) and max(size) <= 256 and size[0] > size[1]
    assert planned_input_size(np.array([[20, 20]]), 256, 32) == [32, 32]


def test_validation_split_is_grouped_and_stratified():
    n = 40
    groups = [f"P{i // 2}" for i in range(n)]
    labels = np.array([(i // 2) % 2 for i in range(n)])
    data = ImageSet([f"c{i}" for i in range(n)], np.zeros((n, 1, 4, 4)), labels, None, groups)
    tr, va = validation_split(data, 0.2, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == n
    assert {groups[i] for i in tr}.isdisjoint({groups[i] for i in va})
    assert set(labels[va]) == {0, 1}
    with pytest.raises(XtlunetError):
        validation_split(data.subset([0, 1, 2]), 0.2, 0)
