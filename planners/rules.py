"""The planner's rules, each a small pure function (nnU-Net-like heuristics)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from xtlunet.plans import ANISOTROPY_THRESHOLD

MIN_EDGE = 4            # smallest bottleneck edge (voxels)
BASE_WIDTH = 32


def target_spacing(spacings: np.ndarray, shapes: np.ndarray, threshold: float = ANISOTROPY_THRESHOLD) -> list[float]:
    """Median spacing, except on a coarse axis of thick slices, which takes its 10th percentile (nnU-Net's rule).

    The coarse axis (largest median spacing) takes the 10th percentile of its spacings only when both
    (1) its median spacing is > threshold× the others' and (2) its median size in voxels (`shapes`:
    the cases' shapes after cropping) is < 1/threshold of the others'. The result is never finer than
    the other axes: it is clamped to just above (+1e-5, so the axis stays the coarsest) their largest.
    """
    spacings = np.asarray(spacings, dtype=float)
    target = np.median(spacings, axis=0)
    if target.size < 2:
        return target.tolist()
    sizes = np.median(np.asarray(shapes, dtype=float), axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(target.size) if a != worst]
    aniso_spacing = target[worst] > threshold * target[others].max()
    aniso_voxels = sizes[worst] * threshold < sizes[others].min()
    if aniso_spacing and aniso_voxels:
        tenth = float(np.percentile(spacings[:, worst], 10))
        finest_allowed = float(target[others].max())
        target[worst] = tenth if tenth >= finest_allowed else finest_allowed + 1e-5
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


def conv_kernel(spacing: Sequence[float], previous: Sequence[int] | None = None, threshold: float = 2.0) -> list[int]:
    """Kernel 3 on an axis whose spacing is < threshold× the finest or whose previous stage had 3; else 1."""
    finest = min(spacing)
    previous = previous or [1] * len(spacing)
    return [3 if k == 3 or s / finest < threshold else 1 for s, k in zip(spacing, previous)]


def pooling_plan(spacing: Sequence[float], patch: Sequence[int], max_stages: int | None = None,
                 min_edge: int = MIN_EDGE) -> tuple[list[list[int]], list[list[int]]]:
    """Per-stage strides and kernels, as nnU-Net's get_pool_and_conv_props.

    Each step pools the axes whose map is ≥ 2·min_edge and whose spacing is < 2× the finest of those
    (a lone such axis only while its map is ≥ 3·min_edge); stages continue until no axis can pool (or
    `max_stages`, None: no cap). A stage's kernel is 3 on an axis once its spacing at that stage is
    within 2× of the finest (`conv_kernel`) and stays 3 in later stages; the bottleneck is all 3s.
    """
    cur_sp = [float(s) for s in spacing]
    cur_sz = [float(p) for p in patch]
    dim = len(cur_sp)
    strides, kernels = [[1] * dim], []
    kernel = [1] * dim
    while max_stages is None or len(strides) < max_stages:
        big = [a for a in range(dim) if cur_sz[a] >= 2 * min_edge]
        if not big:
            break
        finest = min(cur_sp[a] for a in big)
        pool = [a for a in big if cur_sp[a] / finest < 2]
        if len(pool) == 1 and cur_sz[pool[0]] < 3 * min_edge:
            break
        kernel = conv_kernel(cur_sp, kernel)
        kernels.append(kernel)
        for a in pool:
            cur_sp[a] *= 2
            cur_sz[a] = math.ceil(cur_sz[a] / 2)
        strides.append([2 if a in pool else 1 for a in range(dim)])
    kernels.append([3] * dim)
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
