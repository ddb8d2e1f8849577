"""Tiny segmentation networks and plans shared by the inference tests."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from xtlunet.networks import ArchitectureDescription, build_network
from xtlunet.plans import ConfigurationPlan, Plans

LABELS = {"background": 0, "lesion": 1, "edema": 2}


def tiny_description(dim: int, in_channels: int = 2) -> ArchitectureDescription:
    """A 3-stage plain U-Net description (widths 4, 8, 16; total stride 4)."""
    return ArchitectureDescription(family="plain", dim=dim, in_channels=in_channels, widths=[4, 8, 16],
                                   strides=[[1] * dim, [2] * dim, [2] * dim], kernel_sizes=[[3] * dim] * 3,
                                   blocks=[1, 1, 1], decoder_blocks=[1, 1])


@pytest.fixture
def make_net() -> Callable[..., nn.Module]:
    """A factory of seeded tiny SegmentationNets (deep supervision on, as the trainer builds them)."""
    def make(dim: int, in_channels: int = 2, classes: int = 3, seed: int = 0) -> nn.Module:
        """A tiny plain U-Net of `dim` dimensions."""
        torch.manual_seed(seed)
        return build_network(tiny_description(dim, in_channels), "segmentation", classes)
    return make


@pytest.fixture
def make_plans() -> Callable[..., Plans]:
    """A factory of one-configuration plans (`conf`) with the given transpose and target spacing."""
    def make(transpose: list[int], spacing: list[float], patch: list[int], channels: int = 1,
             name: str = "3d_fullres", task: str = "segmentation") -> Plans:
        """Plans with one configuration `name` (dimension = len(patch))."""
        dim = len(patch)
        conf = ConfigurationPlan(name=name, task=task, dim=dim, spacing=list(spacing), patch_size=list(patch),
                                 batch_size=2, median_shape=list(patch), normalization=["zscore"] * channels,
                                 use_mask_for_norm=[True] * channels,
                                 architecture=tiny_description(dim, channels).to_json(), num_outputs=len(LABELS),
                                 data_identifier=f"xtlunetPlans_{name}")
        return Plans(plans_name="xtlunetPlans", dataset_name="Dataset999_Inference", planner="DefaultPlanner",
                     task=task, channel_names={str(c): f"ch{c}" for c in range(channels)}, labels=dict(LABELS),
                     classes={}, transpose_forward=list(transpose),
                     foreground_intensity_properties={str(c): {} for c in range(channels)},
                     configurations={name: conf})
    return make
