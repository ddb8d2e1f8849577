"""Patch sampling inside the image (nnU-Net's bounds) and the foreground fraction across DDP ranks."""
from __future__ import annotations

import numpy as np
import pytest

from xtlunet.training.data import box_start, forced_count, rank_share

SHAPES = [((40, 50, 60), (16, 24, 24), (16, 40, 40)),     # 3D, dummy-2D-like extraction (depth not grown)
          ((30, 30, 30), (20, 20, 20), (32, 32, 32)),     # 3D, extraction larger than the image
          ((64, 80), (32, 48), (52, 76)),                  # 2D
          ((16, 120, 90), (16, 64, 64), (16, 96, 96))]     # patch depth equal to the image's


def _central_patch(start: np.ndarray, extract, patch) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the patch the spatial transform centre-crops from the extracted box."""
    lo = start + (np.asarray(extract) - np.asarray(patch)) // 2
    return lo, lo + np.asarray(patch)


@pytest.mark.parametrize("shape, patch, extract", SHAPES)
def test_random_patches_lie_inside_the_image(shape, patch, extract):
    np.random.seed(0)
    starts = np.array([box_start(shape, extract, patch) for _ in range(2000)])
    for start in starts:
        lo, hi = _central_patch(start, extract, patch)
        assert (lo >= 0).all() and (hi <= np.asarray(shape)).all(), (start, lo, hi)
    # and they cover the image: the corners of the allowed range are reached
    lo_all = np.array([_central_patch(s, extract, patch)[0] for s in starts])
    assert (lo_all.min(0) == 0).all() and (lo_all.max(0) == np.asarray(shape) - np.asarray(patch)).all()


@pytest.mark.parametrize("shape, patch, extract", SHAPES)
def test_forced_patches_keep_the_voxel_and_are_clipped_at_the_lower_bound_only(shape, patch, extract):
    rng = np.random.default_rng(1)
    e, p = np.asarray(extract), np.asarray(patch)
    floor = box_start(shape, extract, patch, [0] * len(shape))          # the lower bound itself
    for _ in range(500):
        voxel = np.array([rng.integers(0, n) for n in shape])
        start = box_start(shape, extract, patch, voxel)
        lo, hi = _central_patch(start, extract, patch)
        assert (lo <= voxel).all() and (voxel < hi).all()
        assert (start >= floor).all()                                   # never further below than a random patch
        # where the lower bound does not bite, the voxel is the box's centre (nnU-Net: voxel − extract // 2)
        free = voxel - e // 2 > floor
        assert (start[free] == (voxel - e // 2)[free]).all()
    # near the far side the patch is not pulled back inside: the foreground voxel stays central
    far = np.asarray(shape) - 1
    lo, hi = _central_patch(box_start(shape, extract, patch, far), extract, patch)
    assert (hi - 1 - far >= (p - 1) // 2 - 1).all()


def test_forced_patches_move_an_image_smaller_than_the_patch():
    # random patches pin such an image to the box centre; forced ones centre the voxel, so the image moves
    starts = {tuple(box_start([6, 5], [10, 10], [8, 8], v)) for v in ([0, 0], [5, 4], [4, 3])}
    assert len(starts) == 3


def test_an_image_smaller_than_the_patch_is_centred_with_padding_on_both_sides():
    np.random.seed(2)
    for _ in range(200):
        start = box_start([6, 5], [10, 10], [8, 8])
        # the whole image lies inside the box; the box reaches past it by 4–5 voxels in total per axis
        assert (start <= 0).all() and (start + 10 >= np.array([6, 5])).all()


@pytest.mark.parametrize("batch", [2, 3, 4, 5, 6, 8, 9, 12])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_foreground_fraction_holds_across_ranks(batch, world):
    if world > batch:
        pytest.skip("fewer samples than ranks")
    shares = [rank_share(batch, world, r) for r in range(world)]
    assert sum(b for b, _ in shares) == batch
    assert max(b for b, _ in shares) - min(b for b, _ in shares) <= 1
    assert sum(f for _, f in shares) == forced_count(batch)          # the single-process count, over all ranks


def test_a_per_rank_batch_of_one_is_not_all_foreground():
    # global batch 2 on 2 ranks: one sample each; only the global batch's last sample is forced
    assert [rank_share(2, 2, r) for r in range(2)] == [(1, 0), (1, 1)]
    assert forced_count(2) == 1 and forced_count(3) == 1 and forced_count(6) == 2 and forced_count(9) == 3
    assert forced_count(4, oversample=0) == 0
