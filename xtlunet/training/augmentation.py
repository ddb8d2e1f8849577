"""batchgenerators augmentation pipelines (nnU-Net-like), for 2D and 3D batches."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

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
    in_plane_only: bool = False                   # strongly anisotropic plans: rotate/scale in-plane only

    def mirrored(self, dim: int) -> tuple[int, ...]:
        """The spatial axes mirrored in training, hence the ones test-time mirroring may flip (their one home)."""
        return tuple(range(dim)) if self.mirror_axes is None else tuple(self.mirror_axes)


def augmentation_config(conf: ConfigurationPlan) -> AugmentationConfig:
    """nnU-Net's defaults for a configuration; rotation/scaling in-plane only when the plan is strongly anisotropic."""
    sp = conf.spacing
    aniso = conf.dim == 3 and max(sp) / min(sp) > conf.anisotropy_threshold
    return AugmentationConfig(in_plane_only=aniso)


def spatial_transform(patch_size: Sequence[int], cfg: AugmentationConfig) -> SpatialTransform:
    """Rotation and scaling (optionally elastic), cropping to `patch_size` around the sampled centre."""
    a = math.radians(cfg.rotation_deg)
    dim = len(patch_size)
    no = (0.0, 0.0)
    if dim == 2:
        angles = {"angle_x": (-a, a), "angle_y": no, "angle_z": no}
    elif cfg.in_plane_only:
        angles = {"angle_x": (-a, a), "angle_y": no, "angle_z": no}   # rotation about the depth axis only
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
    """The training transforms: spatial, noise, blur, brightness, contrast, low resolution, gamma, mirroring."""
    cfg = cfg or AugmentationConfig()
    dim = len(patch_size)
    mirror = cfg.mirrored(dim)
    ignore = (0,) if cfg.in_plane_only and dim == 3 else None
    transforms = [
        spatial_transform(patch_size, cfg),
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
    if not with_seg:
        transforms[0].label_key = None
    return Compose(transforms)
