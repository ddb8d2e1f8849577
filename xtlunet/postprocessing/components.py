"""Connected components of one label in a label map, and the two post-processing operations on them.

Components use full connectivity (26 neighbours in 3D, 8 in 2D), as lesion-wise detection does
(`xtlunet/evaluation/segmentation_metrics.py`), so an operation removes exactly the lesions that scoring counts.
Removed voxels become background (0); every other label is left untouched.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

KEEP_LARGEST = "keep_largest_component"
REMOVE_SMALL = "remove_small_components"
NONE = "none"
OPERATIONS = (NONE, KEEP_LARGEST, REMOVE_SMALL)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(components numbered 1..n, voxels of each component as an (n,) array) of a boolean mask."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    lab, n = ndimage.label(mask, structure=structure)
    return lab, np.bincount(lab.ravel(), minlength=n + 1)[1:]


def largest_only(sizes: np.ndarray) -> np.ndarray:
    """Which components keep_largest_component keeps: the largest (the first of equal ones), none of none."""
    keep = np.zeros(sizes.shape, dtype=bool)
    if sizes.size:
        keep[int(np.argmax(sizes))] = True
    return keep


def at_least(sizes: np.ndarray, voxel_mm3: float, min_volume_mm3: float) -> np.ndarray:
    """Which components remove_small_components keeps: those of min_volume_mm3 or more."""
    return sizes * voxel_mm3 >= min_volume_mm3


def drop_components(seg: np.ndarray, components: np.ndarray, keep: np.ndarray, background: int = 0) -> np.ndarray:
    """A copy of seg with the components not kept (components numbered 1..n, keep an (n,) mask) set to background."""
    out = np.array(seg, copy=True)
    out[np.concatenate([[False], ~keep])[components]] = background
    return out


def voxel_volume(spacing: Sequence[float]) -> float:
    """The volume of one voxel in mm³ (in mm² for 2D images)."""
    return float(np.prod([float(s) for s in spacing]))


def apply_operation(seg: np.ndarray, label: int, operation: str, spacing: Sequence[float],
                    min_volume_mm3: float | None = None) -> np.ndarray:
    """A copy of seg with `operation` applied to `label`'s components (removed voxels → 0)."""
    if operation == NONE:
        return np.array(seg, copy=True)
    lab, sizes = label_components(seg == label)
    if operation == KEEP_LARGEST:
        keep = largest_only(sizes)
    elif operation == REMOVE_SMALL:
        keep = at_least(sizes, voxel_volume(spacing), float(min_volume_mm3))
    else:
        raise ValueError(f"unknown post-processing operation {operation!r}")
    return drop_components(seg, lab, keep)
