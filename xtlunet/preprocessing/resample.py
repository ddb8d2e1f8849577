"""Resampling of images (order 3) and label maps (order 1 per label), separate out-of-plane handling when anisotropic."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

from xtlunet.plans import ANISOTROPY_THRESHOLD


def new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    """Shape after resampling from `spacing` to `target` (at least 1 voxel per axis)."""
    return [max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target)]


def anisotropic_axis(spacing: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
    """The axis to treat separately (order 0) when one spacing is > threshold× the finest, else None."""
    sp = np.asarray(spacing, float)
    if len(sp) < 3 or sp.max() / sp.min() <= threshold:
        return None
    return int(np.argmax(sp))


def _zoom(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Zoom one spatial array to an exact shape (voxel-centre aligned)."""
    if tuple(arr.shape) == tuple(shape):
        return arr
    factors = [n / o for n, o in zip(shape, arr.shape)]
    out = ndimage.zoom(arr, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if tuple(out.shape) != tuple(shape):  # guard against rounding in zoom's shape computation
        out = out[tuple(slice(0, s) for s in shape)]
        out = np.pad(out, [(0, s - o) for s, o in zip(shape, out.shape)], mode="edge")
    return out


def resample_image(arr: np.ndarray, shape: Sequence[int], sep_axis: int | None, order: int = 3) -> np.ndarray:
    """Resample one image channel to `shape`; with sep_axis, in-plane order `order` then nearest along that axis."""
    arr = arr.astype(np.float32, copy=False)
    if sep_axis is None:
        return _zoom(arr, shape, order).astype(np.float32)
    inplane = list(shape)
    inplane[sep_axis] = arr.shape[sep_axis]
    out = _zoom(arr, inplane, order)
    return _zoom(out, shape, 0).astype(np.float32)


def resample_data(data: np.ndarray, shape: Sequence[int], sep_axis: int | None, order: int = 3) -> np.ndarray:
    """Resample every channel of data (C, *spatial)."""
    return np.stack([resample_image(c, shape, sep_axis, order) for c in data])


def resample_seg(seg: np.ndarray, shape: Sequence[int], sep_axis: int | None) -> np.ndarray:
    """Resample a label map: each label's mask linearly (order 1 in-plane, nearest out-of-plane), thresholded at 0.5."""
    if tuple(seg.shape) == tuple(shape):
        return seg
    out = np.zeros(shape, dtype=seg.dtype)
    for label in np.unique(seg):
        if label == 0:
            continue
        mask = resample_image((seg == label).astype(np.float32), shape, sep_axis, order=1)
        out[mask >= 0.5] = label
    return out


def resample_class_maps(maps: np.ndarray, shape: Sequence[int], sep_axis: int | None) -> np.ndarray:
    """Resample class logits (or probabilities) (C, *spatial) linearly (out-of-plane nearest when anisotropic)."""
    return np.stack(list(resample_classes(maps, shape, sep_axis)))


def resample_classes(maps: np.ndarray, shape: Sequence[int], sep_axis: int | None) -> Iterator[np.ndarray]:
    """resample_class_maps one class at a time (fp32), so that a caller need not hold every class resampled."""
    for p in maps:
        yield resample_image(p, shape, sep_axis, order=1)
