"""Voxel grids for the example datasets: placing a grid in the world and sampling world functions on it."""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

from xtlunet.dataset.geometry import Geometry


def rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """A rotation matrix: one angle in 2D; (about x, about y, about z) in 3D, applied x first."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if a.size == 1:
        c, s = np.cos(a[0]), np.sin(a[0])
        return np.array([[c, -s], [s, c]])
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_around(centre: Sequence[float], shape: Sequence[int], spacing: Sequence[float],
                direction: np.ndarray | None = None, shift: Sequence[float] | None = None) -> Geometry:
    """A grid (shape/spacing in array order) whose middle voxel, moved by `shift` voxels (z, y, x), lies at `centre`."""
    n = len(shape)
    d = np.eye(n) if direction is None else np.asarray(direction, dtype=np.float64)
    mid = (np.asarray(shape, dtype=np.float64) - 1) / 2 + (np.zeros(n) if shift is None else np.asarray(shift))
    sp_xyz = np.asarray(spacing, dtype=np.float64)[::-1]
    origin = np.asarray(centre, dtype=np.float64) - (d * sp_xyz[None, :]) @ mid[::-1]
    return Geometry(spacing=tuple(float(s) for s in spacing), origin=tuple(float(round(o, 4)) for o in origin),
                    direction=tuple(float(round(v, 12)) for v in d.ravel()), shape=tuple(int(s) for s in shape))


def world_points(geometry: Geometry, offset: Sequence[float] | None = None) -> np.ndarray:
    """World coordinates (x, y, z) of every voxel centre (plus a sub-voxel `offset`), float32 (ndim, *shape)."""
    n = geometry.ndim
    off = [0.0] * n if offset is None else list(offset)
    axes = [np.arange(s, dtype=np.float64) + off[i] for i, s in enumerate(geometry.shape)]
    sp_xyz = np.asarray(geometry.spacing[::-1], dtype=np.float64)
    affine = geometry.direction_matrix() * sp_xyz[None, :]  # world xyz ← index xyz
    out = np.empty((n, *geometry.shape), np.float32)
    for w in range(n):
        out[w] = np.float32(geometry.origin[w])
        for a in range(n):  # array axis a is index axis n-1-a
            shape = [1] * n
            shape[a] = geometry.shape[a]
            out[w] += (affine[w, n - 1 - a] * axes[a]).astype(np.float32).reshape(shape)
    return out


def render(geometry: Geometry, fn: Callable[[np.ndarray], np.ndarray],
           factor: Sequence[int] | None = None) -> np.ndarray:
    """Average `fn(world_points)` over factor[i] sub-samples per voxel axis (partial-volume effect)."""
    factor = [1] * geometry.ndim if factor is None else list(factor)
    subs = [[(k + 0.5) / f - 0.5 for k in range(f)] for f in factor]
    total = None
    for offset in itertools.product(*subs):
        value = fn(world_points(geometry, offset))
        total = value if total is None else total + value
    return total / float(np.prod(factor))


def to_frame(points: np.ndarray, rot: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    """Points (ndim, ...) expressed in a frame placed at `origin` with axes rot[:, i] (i.e. rotᵀ (p − origin))."""
    d = [points[j] - np.float32(origin[j]) for j in range(len(origin))]
    return np.stack([sum(d[j] * np.float32(rot[j, i]) for j in range(len(d))) for i in range(len(d))])

