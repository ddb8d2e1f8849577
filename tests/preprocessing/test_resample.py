"""Resampling: exact shapes, identity, label preservation, separate out-of-plane handling."""
import numpy as np
import pytest

from xtlunet.preprocessing.crop import bounding_box, crop_case, nonzero_mask
from xtlunet.preprocessing.normalize import normalize_channel
from xtlunet.preprocessing.resample import (anisotropic_axis, new_shape, resample_data, resample_image,
                                            resample_seg)


def test_new_shape():
    assert new_shape([10, 100, 100], [3.0, 0.5, 0.5], [1.5, 1.0, 1.0]) == [20, 50, 50]
    assert new_shape([1, 4], [1.0, 1.0], [10.0, 10.0]) == [1, 1]


def test_identity_when_shape_equal():
    x = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    assert np.array_equal(resample_image(x, x.shape, None), x)


def test_exact_output_shapes_and_linear_ramp_preserved():
    z, y, x = np.meshgrid(np.arange(8), np.arange(16), np.arange(16), indexing="ij")
    ramp = (x * 1.0).astype(np.float32)
    out = resample_image(ramp, (8, 32, 32), None, order=1)
    assert out.shape == (8, 32, 32)
    # voxel-centre aligned: output x-centre j maps to (j + 0.5) / 2 - 0.5 in input coordinates
    expect = np.clip((np.arange(32) + 0.5) / 2 - 0.5, 0, 15)
    assert np.allclose(out[4, 10], expect, atol=1e-4)


def test_anisotropic_axis_detection():
    assert anisotropic_axis([4.0, 1.0, 1.0]) == 0
    assert anisotropic_axis([2.0, 1.0, 1.0]) is None
    assert anisotropic_axis([1.0, 1.0]) is None


def test_separate_axis_uses_nearest_out_of_plane():
    x = np.zeros((4, 8, 8), np.float32)
    x[1] = 10.0
    out = resample_image(x, (8, 8, 8), sep_axis=0)
    # nearest along axis 0: every output slice equals one input slice, no blend of 0 and 10
    assert set(np.unique(out).round(4)) <= {0.0, 10.0}
    smooth = resample_image(x, (8, 8, 8), sep_axis=None)
    assert len(np.unique(smooth.round(4))) > 2


def test_seg_resampling_keeps_labels_and_volume():
    seg = np.zeros((16, 32, 32), np.int16)
    seg[4:12, 8:24, 8:24] = 1
    seg[6:10, 12:20, 12:16] = 2
    out = resample_seg(seg, (32, 64, 64), None)
    assert set(np.unique(out)) == {0, 1, 2}
    for lab in (1, 2):
        assert (out == lab).sum() == pytest.approx((seg == lab).sum() * 8, rel=0.1)
    back = resample_seg(out, seg.shape, None)
    assert (back == seg).mean() > 0.98


def test_resample_data_per_channel():
    d = np.random.default_rng(1).random((2, 6, 10, 10)).astype(np.float32)
    assert resample_data(d, (3, 20, 20), None).shape == (2, 3, 20, 20)


def test_crop_to_nonzero():
    d = np.zeros((2, 10, 12, 14), np.float32)
    d[0, 2:5, 3:9, 4:6] = 1
    d[1, 6, 1, 1] = 2
    data, seg, mask, bbox = crop_case(d, np.zeros(d.shape[1:], np.int16))
    assert bbox == [[2, 7], [1, 9], [1, 6]]
    assert data.shape == (2, 5, 8, 5) and seg.shape == (5, 8, 5) and mask.shape == (5, 8, 5)
    assert bounding_box(np.zeros((3, 3), bool)) == [[0, 3], [0, 3]]
    hollow = np.zeros((1, 7, 7, 7), np.float32)
    hollow[0, 1:6, 1:6, 1:6] = 1
    hollow[0, 2:5, 2:5, 2:5] = 0
    assert nonzero_mask(hollow)[3, 3, 3]            # holes filled


def test_normalization_schemes():
    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, (8, 8, 8)).astype(np.float32)
    z = normalize_channel(x, "zscore", None, {})
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    mask = np.zeros_like(x, bool)
    mask[2:6] = True
    zm = normalize_channel(x, "zscore", mask, {})
    assert abs(zm[mask].mean()) < 1e-4 and np.all(zm[~mask] == 0)
    props = {"percentile_00_5": 40.0, "percentile_99_5": 60.0, "mean": 50.0, "std": 5.0}
    ct = normalize_channel(x, "ct", None, props)
    assert ct.min() >= -2 - 1e-6 and ct.max() <= 2 + 1e-6
    assert np.array_equal(normalize_channel(x, "none", None, {}), x)
