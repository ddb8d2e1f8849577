"""batchgenerators augmentation pipelines (nnU-Net-like), for 2D and 3D batches.

Strongly anisotropic 3D plans (a coarse slice axis, by spacing or by patch shape) use nnU-Net's
"dummy 2D" spatial augmentation: the slices become channels, a 2D rotation/scaling transforms every
slice alike, and the slices are restored, so the slice axis is never rotated or scaled.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import RemoveLabelTransform

from xtlunet.plans import ConfigurationPlan


@dataclass
class AugmentationConfig:
    """Which augmentations run, and how strongly (nnU-Net's defaults)."""

    rotation_deg: float = 30.0
    scale: tuple[float, float] = (0.7, 1.4)
    elastic: bool = False
    p_rotation: float = 0.2
    p_scale: float = 0.2
    noise: float = 0.1
    blur: tuple[float, float] = (0.5, 1.0)
    brightness: tuple[float, float] = (0.75, 1.25)
    contrast: tuple[float, float] = (0.75, 1.25)
    low_resolution: tuple[float, float] = (0.5, 1.0)
    gamma: tuple[float, float] = (0.7, 1.5)
    mirror_axes: tuple[int, ...] | None = None     # None: every spatial axis of the patch
    in_plane_only: bool = False                   # strongly anisotropic plans: 2D spatial transform per slice
    mask_channels: tuple[int, ...] = ()            # channels normalised inside the body mask (use_mask_for_norm)
    previous_stage_labels: tuple[int, ...] = ()    # cascade: seg channel 1 → one-hot data channels, perturbed

    def mirrored(self, dim: int) -> tuple[int, ...]:
        """The spatial axes mirrored in training, hence the ones test-time mirroring may flip (their one home)."""
        return tuple(range(dim)) if self.mirror_axes is None else tuple(self.mirror_axes)


def augmentation_config(conf: ConfigurationPlan) -> AugmentationConfig:
    """nnU-Net's defaults for a configuration: 2D (and dummy-2D) patches rotate in plane by ±180°, or ±15° when the
    in-plane patch aspect exceeds 1.5; 3D patches by ±30° about every axis."""
    sp, patch, thr = conf.spacing, conf.patch_size, conf.anisotropy_threshold
    dummy_2d = conf.dim == 3 and (max(sp) / min(sp) > thr or max(patch[1:]) / patch[0] > thr)
    masked = tuple(c for c, m in enumerate(conf.use_mask_for_norm) if m)
    if conf.dim == 2 or dummy_2d:
        plane = patch[-2:]
        return AugmentationConfig(rotation_deg=15.0 if max(plane) / min(plane) > 1.5 else 180.0,
                                  in_plane_only=dummy_2d, mask_channels=masked)
    return AugmentationConfig(rotation_deg=30.0, mask_channels=masked)


class SlicesAsChannels(AbstractTransform):
    """(B, C, D, H, W) → (B, C·D, H, W) for data and seg, so that a 2D spatial transform moves every slice alike."""

    def __call__(self, **batch):
        """Fold the slice axis into the channels, remembering each array's shape."""
        for key in ("data", "seg"):
            if batch.get(key) is not None:
                shape = batch[key].shape
                batch[f"_{key}_shape"] = shape
                batch[key] = batch[key].reshape(shape[0], shape[1] * shape[2], *shape[3:])
        return batch


class ChannelsAsSlices(AbstractTransform):
    """The inverse of SlicesAsChannels, with the (transformed) in-plane size."""

    def __call__(self, **batch):
        """Unfold the channels back into (C, D)."""
        for key in ("data", "seg"):
            shape = batch.pop(f"_{key}_shape", None)
            if shape is not None:
                batch[key] = batch[key].reshape(shape[0], shape[1], shape[2], *batch[key].shape[2:])
        return batch


class MaskOutside(AbstractTransform):
    """Channels normalised inside the body mask are set back to 0 where seg is −1 (outside the mask, or outside the
    image), as preprocessing left them: intensity augmentation never shows the network a background that inference
    does not see (nnU-Net's MaskImageTransform)."""

    def __init__(self, channels: Sequence[int]) -> None:
        self.channels = list(channels)

    def __call__(self, **batch):
        """Zero the masked channels outside."""
        outside = batch["seg"][:, 0] < 0
        for c in self.channels:
            batch["data"][:, c][outside] = 0
        return batch


class SeedPythonRandom(AbstractTransform):
    """Seeds Python's `random` from numpy's global generator before every batch is augmented.

    batchgenerators draws some parameters from numpy (rotation, scale, mirroring) and others from Python's `random`
    (blur sigma, noise variance, gamma, brightness and contrast factors, through `get_range_val`). Training seeds
    and checkpoints numpy's generator, and batchgenerators' workers seed only numpy's, so without this the second
    half of every batch's draws came from an unseeded generator (shared, in forked workers, by every worker): the
    same `--seed` did not give the same batches. With it a batch is a function of numpy's state alone, in this
    process or in any worker, and after a resume."""

    def __call__(self, **batch):
        """Seed `random`, leave the batch as it is."""
        random.seed(int(np.random.randint(2 ** 31)))
        return batch


def spatial_transform(patch_size: Sequence[int], cfg: AugmentationConfig) -> SpatialTransform:
    """Rotation and scaling (optionally elastic), cropping to `patch_size` around the sampled centre."""
    a = math.radians(cfg.rotation_deg)
    no = (0.0, 0.0)
    if len(patch_size) == 2:
        angles = {"angle_x": (-a, a), "angle_y": no, "angle_z": no}
    else:
        angles = {"angle_x": (-a, a), "angle_y": (-a, a), "angle_z": (-a, a)}
    return SpatialTransform(list(patch_size), patch_center_dist_from_border=None, do_elastic_deform=cfg.elastic,
                            alpha=(0.0, 200.0), sigma=(9.0, 13.0), do_rotation=True, **angles, do_scale=True,
                            scale=cfg.scale, border_mode_data="constant", border_cval_data=0, order_data=3,
                            border_mode_seg="constant", border_cval_seg=-1, order_seg=1, random_crop=False,
                            p_el_per_sample=0.2, p_scale_per_sample=cfg.p_scale, p_rot_per_sample=cfg.p_rotation,
                            independent_scale_for_each_axis=False)


def build_augmentation(patch_size: Sequence[int], cfg: AugmentationConfig | None = None,
                       with_seg: bool = True) -> Compose:
    """The training transforms: spatial (per slice for dummy 2D), noise, blur, brightness, contrast, low resolution,
    gamma, mirroring; for a cascade, last, the previous stage's one-hot channels and their perturbations."""
    cfg = cfg or AugmentationConfig()
    dim = len(patch_size)
    mirror = cfg.mirrored(dim)
    dummy_2d = cfg.in_plane_only and dim == 3
    ignore = (0,) if dummy_2d else None
    spatial = spatial_transform(list(patch_size)[1:] if dummy_2d else patch_size, cfg)
    if not with_seg:
        spatial.label_key = None
    transforms = [
        SeedPythonRandom(),
        *([SlicesAsChannels(), spatial, ChannelsAsSlices()] if dummy_2d else [spatial]),
        GaussianNoiseTransform(noise_variance=(0, cfg.noise), p_per_sample=0.1),
        GaussianBlurTransform(cfg.blur, different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=cfg.brightness, p_per_sample=0.15),
        ContrastAugmentationTransform(contrast_range=cfg.contrast, p_per_sample=0.15),
        SimulateLowResolutionTransform(zoom_range=cfg.low_resolution, per_channel=True, p_per_channel=0.5,
                                       order_downsample=0, order_upsample=3, p_per_sample=0.25, ignore_axes=ignore),
        GammaTransform(cfg.gamma, True, True, retain_stats=True, p_per_sample=0.1),
        GammaTransform(cfg.gamma, False, True, retain_stats=True, p_per_sample=0.3),
    ]
    if mirror:
        transforms.append(MirrorTransform(mirror))
    if with_seg:  # then, as nnU-Net, outside the body (and the image) is trained as background
        transforms += [MaskOutside(cfg.mask_channels), RemoveLabelTransform(-1, 0)]
    if with_seg and cfg.previous_stage_labels:
        from xtlunet.cascade.transforms import previous_stage_transforms

        transforms += previous_stage_transforms(cfg.previous_stage_labels)
    return Compose(transforms)
