"""The planner's rules, each a small pure function (nnU-Net-like heuristics)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from xtlunet.plans import ANISOTROPY_THRESHOLD

MIN_EDGE = 4            # smallest bottleneck edge (voxels)
MIN_POOL_SIZE = 8       # an axis is pooled only while its feature map is at least this big
BASE_WIDTH = 32


def target_spacing(spacings: np.ndarray, threshold: float = ANISOTROPY_THRESHOLD) -> list[float]:
    """Median spacing; an axis > threshold× coarser than the others takes its 10th percentile (never finer than them)."""
    spacings = np.asarray(spacings, dtype=float)
    target = np.median(spacings, axis=0)
    if target.size < 2:
        return target.tolist()
    worst = int(np.argmax(target))
    others = np.delete(target, worst)
    if target[worst] > threshold * others.max():
        target[worst] = max(float(np.percentile(spacings[:, worst], 10)), float(others.max()))
    return [float(v) for v in target]


def transpose_forward(spacing: Sequence[float]) -> list[int]:
    """Axis order putting the coarsest axis first (the depth axis of 2D→3D transfer)."""
    n = len(spacing)
    if n < 3:
        return list(range(n))
    worst = int(np.argmax(spacing))
    return [worst] + [i for i in range(n) if i != worst]


def median_shape(shapes: np.ndarray, spacings: np.ndarray, target: Sequence[float]) -> list[int]:
    """Median shape of the cases once resampled to the target spacing."""
    new = np.asarray(shapes, float) * np.asarray(spacings, float) / np.asarray(target, float)[None]
    return [int(round(v)) for v in np.median(new, axis=0)]


def initial_patch_size(spacing: Sequence[float], shape: Sequence[int], budget_voxels: float) -> list[int]:
    """Patch ∝ 1/spacing (isotropic in mm), scaled to a voxel budget, clipped to the median shape."""
    inv = 1.0 / np.asarray(spacing, float)
    patch = inv * (budget_voxels / np.prod(inv)) ** (1.0 / len(inv))
    return [int(max(1, min(round(p), s))) for p, s in zip(patch, shape)]


def conv_kernel(spacing: Sequence[float], threshold: float = 2.0) -> list[int]:
    """Kernel 3 on an axis whose spacing is < threshold× the finest, 1 on an axis still much coarser."""
    finest = min(spacing)
    return [3 if s / finest < threshold else 1 for s in spacing]


def pooling_plan(spacing: Sequence[float], patch: Sequence[int], max_stages: int,
                 min_edge: int = MIN_EDGE) -> tuple[list[list[int]], list[list[int]]]:
    """Per-stage strides and kernels: pool an axis while its map is ≥ 2·min_edge and its spacing < 2× the finest such axis."""
    cur_sp = np.asarray(spacing, float).copy()
    cur_sz = np.asarray(patch, float).copy()
    strides = [[1] * len(cur_sp)]
    kernels = [conv_kernel(cur_sp)]
    while len(strides) < max_stages:
        big = cur_sz >= 2 * min_edge
        if not big.any():
            break
        finest = cur_sp[big].min()          # among the axes still large enough to pool
        pool = big & (cur_sp / finest < 2)
        stride = [2 if p else 1 for p in pool]
        cur_sp = cur_sp * np.asarray(stride)
        cur_sz = cur_sz / np.asarray(stride)
        strides.append(stride)
        kernels.append(conv_kernel(cur_sp))
    return strides, kernels


def total_stride(strides: Sequence[Sequence[int]]) -> list[int]:
    """Product of the strides per axis."""
    return [int(np.prod([s[a] for s in strides])) for a in range(len(strides[0]))]


def round_to_divisible(patch: Sequence[int], divisor: Sequence[int]) -> list[int]:
    """Round each edge up to a multiple of its divisor (at least one multiple)."""
    return [int(max(d, math.ceil(p / d) * d)) for p, d in zip(patch, divisor)]


def stage_widths(num_stages: int, max_width: int, base: int = BASE_WIDTH) -> list[int]:
    """Channels per stage: min(base·2^i, max_width)."""
    return [min(base * 2 ** i, max_width) for i in range(num_stages)]


def shrink_axis(patch: Sequence[int], shape: Sequence[int], divisor: Sequence[int]) -> list[int] | None:
    """Shrink the axis with the largest patch/median-shape ratio by one divisor step (None when impossible)."""
    patch = list(patch)
    ratio = [p / max(s, 1) if p > d else -1 for p, s, d in zip(patch, shape, divisor)]
    axis = int(np.argmax(ratio))
    if ratio[axis] < 0:
        return None
    patch[axis] -= divisor[axis]
    return patch


def batch_size_cap(patch: Sequence[int], shape: Sequence[int], num_cases: int, fraction: float = 0.05) -> int:
    """Largest batch whose voxels stay within `fraction` of the dataset's voxels (at least 2)."""
    dataset_voxels = float(np.prod(shape)) * num_cases
    return max(2, int(fraction * dataset_voxels / float(np.prod(patch))))


def normalization_scheme(channel_name: str) -> str:
    """'ct' for CT channels, 'none' for channels named noNorm, else per-image 'zscore'."""
    name = channel_name.strip().lower()
    if name == "ct":
        return "ct"
    if name in ("nonorm", "none"):
        return "none"
    return "zscore"


def use_mask_for_norm(scheme: str, relative_size_after_crop: float) -> bool:
    """Normalise inside the non-zero mask when cropping removed much (≥ 25 % of voxels) and the scheme is zscore."""
    return scheme == "zscore" and relative_size_after_crop < 0.75


def roi_field_of_view(border_mm: Sequence[float], spacing: Sequence[float], max_mm: float = 48.0,
                      min_voxels: int = 8) -> list[float]:
    """ROI edge in mm per axis for classification: ≤ max_mm and ≤ twice the median finding-to-border distance."""
    fov = max_mm if not len(border_mm) else min(max_mm, 2.0 * float(np.median(border_mm)))
    return [float(max(fov, min_voxels * s)) for s in spacing]
