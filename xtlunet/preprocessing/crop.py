"""Crop to the non-zero region of all channels (nnU-Net's first preprocessing step)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels that are non-zero in any channel, holes filled; data is (C, *spatial)."""
    mask = np.any(data != 0, axis=0)
    return ndimage.binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """[[start, stop), ...] per axis of the True voxels (the whole array when none)."""
    if not mask.any():
        return [[0, s] for s in mask.shape]
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append([int(hit[0]), int(hit[-1]) + 1])
    return out


def crop_to_bbox(array: np.ndarray, bbox: list[list[int]]) -> np.ndarray:
    """Crop the trailing spatial axes of `array` to bbox."""
    lead = array.ndim - len(bbox)
    return array[(slice(None),) * lead + tuple(slice(a, b) for a, b in bbox)]


def crop_case(data: np.ndarray, seg: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[list[int]]]:
    """Crop data (C, *spatial) and seg to the non-zero box; returns data, seg, cropped mask, bbox."""
    mask = nonzero_mask(data)
    bbox = bounding_box(mask)
    return (crop_to_bbox(data, bbox), None if seg is None else crop_to_bbox(seg, bbox),
            crop_to_bbox(mask, bbox), bbox)
