"""Each planner rule on its own, including anisotropic data and a dataset with one tiny axis."""
import numpy as np
import pytest

from xtlunet.planners import rules


def _shapes(shape, n):
    return np.array([shape] * n, dtype=float)


def test_target_spacing_is_median_when_isotropic():
    sp = np.array([[1.0, 1.0, 1.0], [1.2, 0.9, 0.9], [0.8, 1.1, 1.1]])
    assert rules.target_spacing(sp, _shapes([140, 170, 140], 3)) == pytest.approx([1.0, 1.0, 1.0])


def test_anisotropic_axis_takes_10th_percentile_not_finer_than_others():
    sp = np.array([[5.0, 0.8, 0.8], [6.0, 0.8, 0.8], [4.0, 0.8, 0.8], [3.0, 0.8, 0.8], [7.0, 0.8, 0.8]])
    t = rules.target_spacing(sp, _shapes([20, 300, 300], 5))
    assert t[0] == pytest.approx(np.percentile(sp[:, 0], 10))
    assert t[1:] == pytest.approx([0.8, 0.8])
    # 10th percentile would be finer than the in-plane axes: clamped to just above them (the axis stays coarsest)
    sp2 = np.array([[0.5, 1.0, 1.0], [0.5, 1.0, 1.0], [6.0, 1.0, 1.0], [6.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    assert rules.target_spacing(sp2, _shapes([10, 200, 200], 5))[0] == pytest.approx(1.00001, abs=1e-9)


def test_below_threshold_keeps_median():
    sp = np.array([[2.9, 1.0, 1.0], [2.9, 1.0, 1.0]])
    assert rules.target_spacing(sp, _shapes([20, 300, 300], 2))[0] == pytest.approx(2.9)


# Expected targets worked out by hand from nnU-Net's ExperimentPlanner.determine_fullres_target_spacing:
# median spacing; the coarsest axis takes the 10th percentile of its spacings only if its median spacing is
# > 3x the others' largest AND its median size (shapes after crop) x 3 is < the others' smallest; that value
# is clamped to the others' largest + 1e-5.
BRAIN_MS_SPACINGS = [[3.4, 1.0, 1.0], [1.0, 1.0, 1.0], [3.3, 1.0, 1.0], [3.5, 1.0, 1.0], [3.2, 1.0, 1.0]]
BRAIN_MS_SHAPES = [[19, 58, 47], [40, 61, 51], [19, 65, 54], [18, 58, 49], [20, 64, 51]]
PROSTATE_SPACINGS = [[s, 0.62, 0.62] for s in (3.6, 3.6, 3.6, 3.0, 4.0, 2.2, 3.6, 3.6, 3.6, 3.6)]
TARGET_TABLE = [
    # brain-like, 1 mm isotropic: the median
    ("brain_1mm", [[1.0, 1.0, 1.0], [1.1, 0.9, 1.0], [0.9, 1.1, 1.0]], [[138, 169, 138]] * 3, [1.0, 1.0, 1.0]),
    # prostate-like 3.6 x 0.62 mm, 20 x 320 x 320: both conditions hold (3.6 > 1.86; 20 x 3 < 320) ->
    # sorted coarse spacings 2.2, 3.0, 3.6 x 7, 4.0: 10th percentile = 2.2 + 0.9 x 0.8 = 2.92
    ("prostate", PROSTATE_SPACINGS, [[20, 320, 320]] * 10, [2.92, 0.62, 0.62]),
    # thick slices but many of them: condition 2 fails (median 19 x 3 = 57 >= 51 voxels) -> median 3.3
    ("brain_ms_like", BRAIN_MS_SPACINGS, BRAIN_MS_SHAPES, [3.3, 1.0, 1.0]),
    # the coarse axis last: 10th percentile of 4.0, 5.0, 5.0, 6.0, 5.0 = 4.4
    ("coarse_last", [[0.7, 0.7, s] for s in (4.0, 5.0, 5.0, 6.0, 5.0)], [[512, 512, 30]] * 5, [0.7, 0.7, 4.4]),
    # exactly 3x: condition 1 is strict -> median
    ("ratio_exactly_3", [[3.0, 1.0, 1.0], [3.0, 1.0, 1.0]], [[20, 300, 300]] * 2, [3.0, 1.0, 1.0]),
    # few voxels but spacing only 2x coarser: condition 1 fails -> median 2.5
    ("few_slices_mild_spacing", [[2.0, 1.0, 1.0], [2.5, 1.0, 1.0], [3.0, 1.0, 1.0]], [[10, 300, 300]] * 3,
     [2.5, 1.0, 1.0]),
    # 2D: the median
    ("2d", [[0.8, 0.7], [0.8, 0.9], [1.0, 0.8]], [[100, 80]] * 3, [0.8, 0.8]),
]


@pytest.mark.parametrize("name, spacings, shapes, expected", TARGET_TABLE, ids=[t[0] for t in TARGET_TABLE])
def test_target_spacing_matches_nnunet(name, spacings, shapes, expected):
    assert rules.target_spacing(np.array(spacings), np.array(shapes)) == pytest.approx(expected, abs=1e-9)


def test_transpose_puts_coarsest_axis_first():
    assert rules.transpose_forward([1.0, 1.0, 4.0]) == [2, 0, 1]
    assert rules.transpose_forward([4.0, 1.0, 1.0]) == [0, 1, 2]
    assert rules.transpose_forward([1.0, 1.0]) == [0, 1]


def test_initial_patch_proportional_to_inverse_spacing_and_clipped():
    p = rules.initial_patch_size([2.0, 1.0, 1.0], [1000, 1000, 1000], 64 ** 3)
    assert p[1] == p[2] and p[1] == pytest.approx(2 * p[0], abs=1)
    assert np.prod(p) == pytest.approx(64 ** 3, rel=0.05)
    assert rules.initial_patch_size([1.0, 1.0, 1.0], [10, 200, 200], 128 ** 3)[0] == 10


def test_conv_kernel_one_on_much_coarser_axis_and_sticky():
    assert rules.conv_kernel([3.0, 1.0, 1.0]) == [1, 3, 3]
    assert rules.conv_kernel([1.5, 1.0, 1.0]) == [3, 3, 3]
    assert rules.conv_kernel([1.0, 2.0, 2.0], previous=[3, 3, 3]) == [3, 3, 3]   # once 3, stays 3
    assert rules.conv_kernel([1.0, 2.0, 2.0], previous=[3, 1, 1]) == [3, 1, 1]


KERNEL_CASES = [  # (spacing as planned: coarse axis first, patch)
    ([1.0, 1.0, 1.0], [32, 128, 128]),     # 1 mm isotropic, a short axis that stops pooling first
    ([1.0, 1.0, 1.0], [128, 128, 128]),
    ([3.0, 0.5, 0.5], [24, 256, 256]),     # 0.5 x 0.5 x 3 mm
    ([6.0, 0.8, 0.8], [12, 320, 320]),     # 0.8 x 0.8 x 6 mm
    ([1.0, 1.0], [512, 384]),              # 2D
    ([0.7, 0.7], [1024, 96]),              # 2D, one short axis
]


@pytest.mark.parametrize("spacing, patch", KERNEL_CASES)
def test_kernels_monotone_per_axis_and_bottleneck_all_3(spacing, patch):
    strides, kernels = rules.pooling_plan(spacing, patch)
    assert len(kernels) == len(strides)
    assert kernels[-1] == [3] * len(spacing)
    for axis in range(len(spacing)):
        column = [k[axis] for k in kernels]
        assert set(column) <= {1, 3}
        first3 = column.index(3)
        assert all(k == 3 for k in column[first3:]), column


def test_isotropic_kernels_never_collapse_to_1():
    # before: once the short axis stopped pooling the others' spacings doubled and got kernel 1 ([3, 1, 1])
    strides, kernels = rules.pooling_plan([1.0, 1.0, 1.0], [32, 128, 128])
    assert strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert kernels == [[3, 3, 3]] * 6


def test_anisotropic_kernels_as_nnunet():
    # worked out from nnU-Net's get_pool_and_conv_props: 3 mm vs 0.5 mm, in-plane pooled alone until 2 mm
    strides, kernels = rules.pooling_plan([3.0, 0.5, 0.5], [24, 256, 256])
    assert strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert kernels == [[1, 3, 3], [1, 3, 3]] + [[3, 3, 3]] * 5
    # 6 mm vs 0.8 mm, 12 slices: at 6 vs 3.2 mm all axes pool (12 -> 6 slices, too few to pool again) and the
    # kernels turn 3; then the in-plane axes pool alone down to 5 (kernels stay 3 although they are coarser now)
    strides, kernels = rules.pooling_plan([6.0, 0.8, 0.8], [12, 320, 320])
    assert strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert kernels == [[1, 3, 3], [1, 3, 3]] + [[3, 3, 3]] * 5


def test_lone_axis_pools_only_from_3_min_edges():
    # nnU-Net: when a single axis is left to pool it needs a map >= 3 x 4 = 12; 8 x 7 x 7 -> no further stage
    strides, _ = rules.pooling_plan([1.0, 1.0, 1.0], [8, 7, 7])
    assert strides == [[1, 1, 1]]
    strides, _ = rules.pooling_plan([1.0, 1.0, 1.0], [8, 8, 7])   # two axes: 8 is enough
    assert strides == [[1, 1, 1], [2, 2, 1]]
    strides, _ = rules.pooling_plan([1.0, 1.0, 1.0], [4, 4, 12])
    assert strides == [[1, 1, 1], [1, 1, 2]]


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
