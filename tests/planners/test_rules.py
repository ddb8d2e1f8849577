"""Each planner rule on its own, including anisotropic data and a dataset with one tiny axis."""
import numpy as np
import pytest

from xtlunet.planners import rules


def test_target_spacing_is_median_when_isotropic():
    sp = np.array([[1.0, 1.0, 1.0], [1.2, 0.9, 0.9], [0.8, 1.1, 1.1]])
    assert rules.target_spacing(sp) == pytest.approx([1.0, 1.0, 1.0])


def test_anisotropic_axis_takes_10th_percentile_not_finer_than_others():
    sp = np.array([[5.0, 0.8, 0.8], [6.0, 0.8, 0.8], [4.0, 0.8, 0.8], [3.0, 0.8, 0.8], [7.0, 0.8, 0.8]])
    t = rules.target_spacing(sp)
    assert t[0] == pytest.approx(np.percentile(sp[:, 0], 10))
    assert t[1:] == pytest.approx([0.8, 0.8])
    # 10th percentile would be finer than the in-plane axes: clamped to them
    sp2 = np.array([[0.5, 1.0, 1.0], [0.5, 1.0, 1.0], [6.0, 1.0, 1.0], [6.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    assert rules.target_spacing(sp2)[0] == pytest.approx(1.0)


def test_below_threshold_keeps_median():
    sp = np.array([[2.9, 1.0, 1.0], [2.9, 1.0, 1.0]])
    assert rules.target_spacing(sp)[0] == pytest.approx(2.9)


def test_transpose_puts_coarsest_axis_first():
    assert rules.transpose_forward([1.0, 1.0, 4.0]) == [2, 0, 1]
    assert rules.transpose_forward([4.0, 1.0, 1.0]) == [0, 1, 2]
    assert rules.transpose_forward([1.0, 1.0]) == [0, 1]


def test_initial_patch_proportional_to_inverse_spacing_and_clipped():
    p = rules.initial_patch_size([2.0, 1.0, 1.0], [1000, 1000, 1000], 64 ** 3)
    assert p[1] == p[2] and p[1] == pytest.approx(2 * p[0], abs=1)
    assert np.prod(p) == pytest.approx(64 ** 3, rel=0.05)
    assert rules.initial_patch_size([1.0, 1.0, 1.0], [10, 200, 200], 128 ** 3)[0] == 10


def test_conv_kernel_one_on_much_coarser_axis():
    assert rules.conv_kernel([3.0, 1.0, 1.0]) == [1, 3, 3]
    assert rules.conv_kernel([1.5, 1.0, 1.0]) == [3, 3, 3]


def test_pooling_isotropic_stops_at_min_edge():
    strides, kernels = rules.pooling_plan([1.0, 1.0, 1.0], [64, 64, 64], max_stages=6)
    assert strides[0] == [1, 1, 1]
    total = rules.total_stride(strides)
    assert all(64 // t >= 4 for t in total)
    assert len(strides) == 5  # 64 → 32 → 16 → 8 → 4
    assert all(k == [3, 3, 3] for k in kernels)


def test_pooling_anisotropic_delays_the_coarse_axis():
    strides, kernels = rules.pooling_plan([4.0, 1.0, 1.0], [16, 128, 128], max_stages=6)
    assert strides[1] == [1, 2, 2] and strides[2] == [1, 2, 2]      # 4 mm vs 1 → 2 → 4 mm
    assert kernels[0] == [1, 3, 3] and kernels[1] == [1, 3, 3]
    assert [3, 3, 3] in kernels                                     # once spacings meet, 3D kernels
    total = rules.total_stride(strides)
    assert total[0] < total[1]
    assert 16 // total[0] >= 4


def test_pooling_tiny_axis_never_pooled():
    strides, _ = rules.pooling_plan([1.0, 1.0, 1.0], [6, 96, 96], max_stages=6)
    assert all(s[0] == 1 for s in strides)
    assert rules.total_stride(strides)[1] >= 16


def test_max_stages_caps_depth():
    strides, _ = rules.pooling_plan([1.0, 1.0], [2048, 2048], max_stages=7)
    assert len(strides) == 7


def test_round_and_shrink():
    assert rules.round_to_divisible([17, 30, 33], [4, 8, 8]) == [20, 32, 40]
    assert rules.round_to_divisible([2, 2], [8, 8]) == [8, 8]
    assert rules.shrink_axis([32, 64, 64], [100, 100, 50], [4, 8, 8]) == [32, 64, 56]
    assert rules.shrink_axis([4, 8], [100, 100], [4, 8]) is None


def test_widths_and_batch_cap():
    assert rules.stage_widths(7, 320) == [32, 64, 128, 256, 320, 320, 320]
    assert rules.batch_size_cap([64, 64, 64], [64, 64, 64], 20) == 2
    assert rules.batch_size_cap([8, 8, 8], [64, 64, 64], 100) == int(0.05 * 64 ** 3 * 100 / 512)


def test_normalization_rules():
    assert rules.normalization_scheme("CT") == "ct"
    assert rules.normalization_scheme("FLAIR") == "zscore"
    assert rules.normalization_scheme("noNorm") == "none"
    assert rules.use_mask_for_norm("zscore", 0.5) is True
    assert rules.use_mask_for_norm("zscore", 0.9) is False
    assert rules.use_mask_for_norm("ct", 0.5) is False


def test_roi_field_of_view():
    assert rules.roi_field_of_view([100.0, 100.0], [3.0, 0.5, 0.5]) == [48.0, 48.0, 48.0]
    fov = rules.roi_field_of_view([10.0, 12.0, 14.0], [3.0, 0.5, 0.5])
    assert fov[1] == pytest.approx(24.0) and fov[0] == pytest.approx(24.0)
    assert rules.roi_field_of_view([1.0], [3.0, 0.5, 0.5])[0] == pytest.approx(24.0)  # at least 8 voxels
