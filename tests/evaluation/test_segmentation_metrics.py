"""Segmentation metrics on hand-made masks with known answers, and their empty-mask conventions."""
import math

import numpy as np
import pytest

from xtlunet.evaluation.segmentation_metrics import (LesionCounts, dice, evaluate_case, hausdorff, hd95, iou,
                                                     lesion_detection, volume_difference, volume_mm3)


def _box(shape, *slices) -> np.ndarray:
    """A boolean array of `shape` that is True inside the given slices."""
    out = np.zeros(shape, dtype=bool)
    out[tuple(slices)] = True
    return out


def test_dice_and_iou_of_two_overlapping_cubes():
    ref = _box((8, 8, 8), slice(0, 4), slice(0, 4), slice(0, 4))
    pred = _box((8, 8, 8), slice(2, 6), slice(0, 4), slice(0, 4))  # 32 of 64 voxels shared
    assert dice(pred, ref) == 0.5
    assert iou(pred, ref) == pytest.approx(1 / 3, abs=1e-15)
    assert dice(ref, ref) == 1.0 and iou(ref, ref) == 1.0


def test_overlap_conventions_for_empty_masks():
    empty, cube = np.zeros((4, 4), bool), _box((4, 4), slice(1, 3), slice(1, 3))
    assert math.isnan(dice(empty, empty)) and math.isnan(iou(empty, empty))
    assert dice(cube, empty) == 0.0 and iou(empty, cube) == 0.0


def _plate(shape, z) -> np.ndarray:
    """A one-voxel-thick square plate at slice z."""
    return _box(shape, slice(z, z + 1), slice(3, 9), slice(2, 10))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_hd95_of_a_plate_shifted_along_the_coarse_axis(k):
    spacing = (3.0, 0.7, 0.4)
    ref, pred = _plate((10, 12, 12), 2), _plate((10, 12, 12), 2 + k)
    assert hd95(pred, ref, spacing) == pytest.approx(k * 3.0, rel=1e-12)


@pytest.mark.parametrize("axis,k", [(0, 1), (1, 2), (2, 3)])
def test_hd95_of_a_cube_shifted_by_k_voxels_is_k_times_the_spacing(axis, k):
    spacing = (2.5, 0.5, 0.8)
    ref = _box((16, 16, 16), slice(4, 10), slice(4, 10), slice(4, 10))
    pred = np.roll(ref, k, axis=axis)
    assert hd95(pred, ref, spacing) == pytest.approx(k * spacing[axis], rel=1e-12)
    assert hausdorff(pred, ref, spacing, 100.0) == pytest.approx(k * spacing[axis], rel=1e-12)


def _brute_force_hd(pred, ref, spacing, q) -> float:
    """Percentile Hausdorff from all pairwise distances between face-connected border voxels."""
    def border(mask):
        padded = np.pad(mask, 1)
        inner = np.ones_like(mask)
        for ax in range(mask.ndim):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=ax)[(slice(1, -1),) * mask.ndim]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    a, b = border(pred), border(ref)
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([dist.min(1), dist.min(0)]), q))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_a_brute_force_computation_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    pred, ref = rng.random((2, 7, 9, 8)) > 0.6
    spacing = (1.7, 0.6, 0.9)
    for q in (95.0, 100.0):
        assert hausdorff(pred, ref, spacing, q) == pytest.approx(_brute_force_hd(pred, ref, spacing, q), rel=1e-12)


def test_hd95_conventions_for_empty_masks():
    empty, cube = np.zeros((5, 5, 5), bool), _box((5, 5, 5), slice(1, 3), slice(1, 3), slice(1, 3))
    assert hd95(empty, empty, (1, 1, 1)) == 0.0
    assert math.isnan(hd95(cube, empty, (1, 1, 1))) and math.isnan(hd95(empty, cube, (1, 1, 1)))


def test_volume_difference_in_mm3_and_relative():
    spacing = (2.0, 0.5, 0.5)  # 0.5 mm³ per voxel
    ref = _box((8, 8, 8), slice(0, 3), slice(0, 3), slice(0, 3))
    pred = _box((8, 8, 8), slice(0, 4), slice(0, 4), slice(0, 4))
    assert volume_mm3(ref, spacing) == 13.5
    assert volume_difference(pred, ref, spacing) == (18.5, pytest.approx(18.5 / 13.5))
    empty = np.zeros_like(ref)
    assert volume_difference(empty, empty, spacing) == (0.0, 0.0)
    diff, rel = volume_difference(pred, empty, spacing)
    assert diff == 32.0 and math.isnan(rel)
    assert volume_difference(empty, ref, spacing) == (-13.5, -1.0)


def _lesion_scene() -> tuple[np.ndarray, np.ndarray]:
    """Reference lesions A, B, C, D; predicted A' (touches A in 1 voxel), a bar touching B and C, and E (false)."""
    shape = (12, 24, 40)
    ref = (_box(shape, slice(2, 5), slice(2, 5), slice(2, 5))          # A
           | _box(shape, slice(2, 5), slice(2, 5), slice(10, 13))      # B
           | _box(shape, slice(2, 5), slice(2, 5), slice(16, 19))      # C
           | _box(shape, slice(8, 11), slice(10, 13), slice(25, 28)))  # D, missed
    pred = (_box(shape, slice(4, 7), slice(4, 7), slice(4, 7))         # A', shares voxel (4, 4, 4) with A
            | _box(shape, slice(3, 4), slice(3, 4), slice(11, 18))     # bar over B and C (2 voxels each)
            | _box(shape, slice(8, 11), slice(18, 21), slice(32, 35)))  # E, false positive
    return pred, ref


def test_lesion_wise_detection_with_a_miss_a_false_positive_and_a_merged_prediction():
    pred, ref = _lesion_scene()
    counts = lesion_detection(pred, ref)
    assert counts == LesionCounts(n_ref_lesions=4, n_ref_detected=3, n_pred_lesions=3, n_pred_tp=2)
    assert counts.tpr == 0.75 and counts.ppv == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(12 / 17)


def test_min_overlap_fraction_applies_to_both_directions():
    pred, ref = _lesion_scene()
    # A is touched in 1/27 of its voxels, B and C in 2/27; A' lies 1/27 in A, the bar 4/7 in B ∪ C
    assert lesion_detection(pred, ref, min_overlap=0.05) == LesionCounts(4, 2, 3, 1)
    assert lesion_detection(pred, ref, min_overlap=0.5) == LesionCounts(4, 0, 3, 1)


def test_min_lesion_voxels_removes_tiny_components_from_both_masks():
    ref = _box((6, 10, 10), slice(0, 2), slice(0, 2), slice(0, 2))
    ref[5, 9, 9] = True  # one-voxel reference lesion
    pred = ref.copy()
    pred[3, 5, 5] = True  # one-voxel false positive
    assert lesion_detection(pred, ref) == LesionCounts(2, 2, 3, 2)
    assert lesion_detection(pred, ref, min_lesion_voxels=2) == LesionCounts(1, 1, 1, 1)


def test_components_use_full_connectivity_by_default():
    ref = np.zeros((3, 3, 3), bool)
    ref[0, 0, 0] = ref[1, 1, 1] = True  # touching at a corner only
    assert lesion_detection(ref, ref).n_ref_lesions == 1
    assert lesion_detection(ref, ref, connectivity=1).n_ref_lesions == 2
    flat = np.eye(3, dtype=bool)  # 2D: diagonal neighbours are one lesion with 8-connectivity
    assert lesion_detection(flat, flat).n_ref_lesions == 1


def test_lesion_conventions_for_empty_sets():
    empty, blob = np.zeros((4, 4, 4), bool), _box((4, 4, 4), slice(1, 2), slice(1, 2), slice(1, 2))
    none = lesion_detection(empty, empty)
    assert none == LesionCounts() and all(math.isnan(v) for v in (none.tpr, none.ppv, none.f1))
    only_pred = lesion_detection(blob, empty)
    assert math.isnan(only_pred.tpr) and only_pred.ppv == 0.0 and only_pred.f1 == 0.0
    only_ref = lesion_detection(empty, blob)
    assert only_ref.tpr == 0.0 and math.isnan(only_ref.ppv) and only_ref.f1 == 0.0


def test_lesion_counts_pool_by_adding_and_round_trip():
    pooled = LesionCounts(4, 3, 3, 2) + LesionCounts(1, 0, 2, 0)
    assert pooled == LesionCounts(5, 3, 5, 2) and pooled.tpr == 0.6 and pooled.ppv == 0.4
    assert LesionCounts.from_json({**pooled.to_json(), "dice": 0.1}) == pooled


def test_evaluate_case_reports_every_metric_per_label():
    ref = np.zeros((6, 8, 8), np.uint8)
    ref[0:4, 0:4, 0:4] = 1
    ref[5, 6:8, 6:8] = 2
    pred = ref.copy()
    pred[0:4, 0:4, 0:4] = 0
    pred[2:6, 0:4, 0:4] = 1
    out = evaluate_case(pred, ref, (2.0, 1.0, 1.0), [1, 2, 3])
    assert sorted(out) == [1, 2, 3]
    assert out[1]["dice"] == 0.5 and out[2]["dice"] == 1.0 and math.isnan(out[3]["dice"])
    assert out[1]["hd95"] == pytest.approx(4.0) and out[2]["hd95"] == 0.0 and out[3]["hd95"] == 0.0
    assert out[1]["volume_ref_mm3"] == 128.0 and out[1]["volume_diff_mm3"] == 0.0
    assert out[2]["n_ref_lesions"] == 1 and out[2]["lesion_f1"] == 1.0
    assert set(out[1]) == set(out[3])


def test_mismatched_shapes_or_spacing_are_refused():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((3, 3)), np.ones((3, 3)), (1.0, 1.0, 1.0))
