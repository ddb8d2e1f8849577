"""Image geometry (spacing, origin, direction, shape) and world↔voxel mapping.

Conventions (used everywhere in xtlunet):
- arrays are in numpy order as SimpleITK returns them: (z, y, x) for 3D, (y, x) for 2D;
- ``spacing`` and ``shape`` follow the array axes (z, y, x);
- ``origin`` and ``direction`` are SimpleITK's physical values, in LPS world order (x, y, z),
  with ``direction`` the row-major flattened direction-cosine matrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Where an array lies in the world (LPS mm)."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.shape)

    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as an (ndim, ndim) matrix in world (x, y, z) order."""
        n = self.ndim
        return np.asarray(self.direction, dtype=np.float64).reshape(n, n)

    def is_single_slice(self) -> bool:
        """Whether this is a 3D grid exactly one slice deep (a 2D image stored in a 3D file)."""
        return self.ndim == 3 and self.shape[0] == 1

    def without_slice_axis(self) -> "Geometry":
        """The 2D geometry of a single-slice 3D grid: its slice axis (z) dropped."""
        direction = self.direction_matrix()[:2, :2].ravel()
        return Geometry(self.spacing[1:], self.origin[:2], tuple(float(d) for d in direction), self.shape[1:])

    def world_to_index(self, point: Sequence[float]) -> np.ndarray:
        """Continuous array index (z, y, x) of a world point (x, y, z) in LPS mm."""
        rel = np.asarray(point, dtype=np.float64) - np.asarray(self.origin, dtype=np.float64)
        sp_xyz = np.asarray(self.spacing[::-1], dtype=np.float64)
        idx_xyz = np.linalg.solve(self.direction_matrix() * sp_xyz[None, :], rel)
        return idx_xyz[::-1]

    def index_to_world(self, index: Sequence[float]) -> np.ndarray:
        """World point (x, y, z) in LPS mm of a continuous array index (z, y, x)."""
        idx_xyz = np.asarray(index, dtype=np.float64)[::-1]
        sp_xyz = np.asarray(self.spacing[::-1], dtype=np.float64)
        return np.asarray(self.origin) + (self.direction_matrix() * sp_xyz[None, :]) @ idx_xyz

    def contains_index(self, index: Sequence[float], margin: float = 0.5) -> bool:
        """Whether a continuous index lies inside the array (within `margin` voxels of its edge)."""
        idx = np.asarray(index)
        return bool(np.all(idx >= -margin) and np.all(idx <= np.asarray(self.shape) - 1 + margin))

    def same_grid(self, other: "Geometry", rtol: float = 1e-4, atol: float = 1e-3) -> bool:
        """Whether two geometries describe the same voxel grid."""
        return (self.shape == other.shape
                and np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol)
                and np.allclose(self.origin, other.origin, rtol=rtol, atol=atol)
                and np.allclose(self.direction, other.direction, atol=atol))

    def mismatch(self, other: "Geometry", rtol: float = 1e-4, atol: float = 1e-3) -> list[str]:
        """Names of the fields (shape, spacing, origin, direction) in which two grids differ."""
        out = []
        if self.shape != other.shape:
            out.append(f"shape {self.shape} vs {other.shape}")
        if len(self.spacing) != len(other.spacing) or not np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol):
            out.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if len(self.origin) != len(other.origin) or not np.allclose(self.origin, other.origin, rtol=rtol, atol=atol):
            out.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if len(self.direction) != len(other.direction) or not np.allclose(self.direction, other.direction, atol=atol):
            out.append("direction")
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Geometry":
        """Inverse of to_json."""
        return cls(tuple(float(v) for v in d["spacing"]), tuple(float(v) for v in d["origin"]),
                   tuple(float(v) for v in d["direction"]), tuple(int(v) for v in d["shape"]))


def _fmt(values: Sequence[float]) -> str:
    """Format a float tuple compactly."""
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
