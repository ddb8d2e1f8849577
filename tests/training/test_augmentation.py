"""Augmentation: nnU-Net's rotation ranges and the dummy-2D spatial transform of anisotropic plans."""
from __future__ import annotations

import numpy as np
import pytest

from xtlunet.plans import ConfigurationPlan
from xtlunet.training.augmentation import AugmentationConfig, augmentation_config, build_augmentation
from xtlunet.training.data import extraction_size


def _conf(spacing, patch) -> ConfigurationPlan:
    """A segmentation configuration with just what augmentation reads."""
    dim = len(patch)
    return ConfigurationPlan(name="c", task="segmentation", dim=dim, spacing=list(spacing), patch_size=list(patch),
                             batch_size=2, median_shape=list(patch), normalization=["zscore"],
                             use_mask_for_norm=[False], architecture={}, num_outputs=2, data_identifier="x")


@pytest.mark.parametrize("spacing, patch, dummy, rotation", [
    ([1.0, 1.0, 1.0], [64, 64, 64], False, 30.0),         # isotropic 3D: ±30° about every axis
    ([3.3, 0.8, 0.8], [20, 96, 96], True, 180.0),          # coarse slices: 2D per slice, ±180°
    ([1.0, 1.0, 1.0], [16, 96, 96], True, 180.0),          # flat patch (nnU-Net's criterion)
    ([3.6, 0.6, 0.6], [16, 160, 96], True, 15.0),          # in-plane aspect > 1.5: ±15°
    ([0.7, 0.7], [256, 256], False, 180.0),                # 2D
    ([0.7, 0.7], [320, 128], False, 15.0),
])
def test_rotation_ranges_and_dummy_2d(spacing, patch, dummy, rotation):
    cfg = augmentation_config(_conf(spacing, patch))
    assert cfg.in_plane_only is dummy and cfg.rotation_deg == rotation
    assert cfg.mirrored(len(patch)) == tuple(range(len(patch)))


def _slice_coded_batch(extract) -> tuple[np.ndarray, np.ndarray]:
    """Data whose slice z holds the value z + 1 everywhere, and a label in the middle of every slice."""
    d = extract[0]
    data = np.broadcast_to((np.arange(d, dtype=np.float32) + 1)[None, None, :, None, None], (2, 1, *extract)).copy()
    seg = np.zeros((2, 1, *extract), np.float32)
    c = [n // 2 for n in extract[1:]]
    seg[:, :, :, c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3] = 1
    return data, seg


def _only_colour_transforms_off(cfg: AugmentationConfig) -> AugmentationConfig:
    """Rotation and scaling always on, intensity changes off (so values identify the source slice)."""
    cfg.p_rotation = cfg.p_scale = 1.0
    cfg.noise, cfg.brightness, cfg.contrast, cfg.gamma, cfg.low_resolution = 0.0, (1, 1), (1, 1), (1, 1), (1, 1)
    cfg.blur = (0.0, 0.0)
    cfg.mirror_axes = ()
    return cfg


def test_dummy_2d_never_mixes_or_scales_slices_and_leaves_none_empty():
    patch = [8, 24, 24]
    cfg = _only_colour_transforms_off(augmentation_config(_conf([3.3, 0.8, 0.8], patch)))
    extract = extraction_size(patch, cfg.rotation_deg, cfg.scale[0], cfg.in_plane_only)
    assert extract[0] == patch[0] and extract[1] > patch[1]
    aug = build_augmentation(patch, cfg)
    np.random.seed(0)
    for _ in range(25):
        out = aug(**dict(zip(("data", "seg"), _slice_coded_batch(extract))))
        assert out["data"].shape == (2, 1, *patch) and out["seg"].shape == (2, 1, *patch)
        for b in range(2):
            for z in range(patch[0]):
                values = np.unique(np.round(out["data"][b, 0, z], 4))
                assert set(values) <= {0.0, float(z + 1)}, (z, values[:5])   # slice z only from slice z
                assert float(z + 1) in values                                   # no slice emptied


def test_full_3d_rotation_does_mix_slices():
    patch = [16, 16, 16]
    cfg = _only_colour_transforms_off(augmentation_config(_conf([1.0, 1.0, 1.0], patch)))
    aug = build_augmentation(patch, cfg)
    extract = extraction_size(patch, cfg.rotation_deg, cfg.scale[0], cfg.in_plane_only)
    np.random.seed(1)
    mixed = 0
    for _ in range(10):
        out = aug(**dict(zip(("data", "seg"), _slice_coded_batch(extract))))
        mixed += sum(len(np.unique(np.round(out["data"][0, 0, z], 2))) > 3 for z in range(patch[0]))
    assert mixed > 0    # the control: without dummy 2D, rotations carry values across slices


def test_outside_the_body_is_masked_back_to_zero_and_trained_as_background():
    patch = [8, 16, 16]
    conf = _conf([1.0, 1.0, 1.0], patch)
    conf.normalization, conf.use_mask_for_norm = ["zscore", "zscore"], [True, False]
    cfg = augmentation_config(conf)
    assert cfg.mask_channels == (0,)
    cfg.p_rotation = cfg.p_scale = 0.0
    seg = np.full((2, 1, *patch), -1, np.float32)           # outside the body mask ...
    seg[:, :, 2:6, 4:12, 4:12] = 0                           # ... around a body ...
    seg[:, :, 3:5, 6:10, 6:10] = 1                           # ... holding a lesion
    data = np.where(seg < 0, 5.0, 1.0).repeat(2, axis=1)     # a background that augmentation has changed
    aug = build_augmentation(patch, cfg)
    np.random.seed(3)
    for _ in range(5):
        out = aug(data=data.copy(), seg=seg.copy())
        assert set(np.unique(out["seg"])) == {0, 1}                          # −1 is trained as background
        assert (out["data"][:, 0] == 0).sum() == (seg < 0).sum()             # masked channel: 0 exactly outside
        assert (out["data"][:, 1] == 0).sum() == 0                           # the other channel untouched
