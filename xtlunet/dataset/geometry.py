"""Image geometry (spacing, origin, direction, shape) and world↔voxel mapping.

Conventions (used everywhere in xtlunet):
- arrays are in numpy order as SimpleITK returns them: (z, y, x) for 3D, (y, x) for 2D;
- ``spacing`` and ``shape`` follow the array axes (z, y, x);
- ``origin`` and ``direction`` are SimpleITK's physical values, in LPS world order (x, y, z),
  with ``direction`` the row-major flattened direction-cosine matrix (column j: world direction of index axis j,
  index axes in ITK order (x, y, z), i.e. array axis a is index axis ndim-1-a).

``Reorientation`` brings an array to its closest RAS+ frame (index x → Right, y → Anterior, z → Superior) by an
axis permutation and flips only: no resampling, exactly invertible, an oblique direction stays oblique.
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

    def axis_codes(self) -> str:
        """Anatomical direction of each index axis (x, y, z), e.g. 'LPS' for the identity, 'RAS', 'PSL' (sagittal)."""
        d = self.direction_matrix()
        world = closest_world_axes(d)
        return "".join((POSITIVE_CODES if d[w, j] > 0 else NEGATIVE_CODES)[w] for j, w in enumerate(world))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Geometry":
        """Inverse of to_json."""
        return cls(tuple(float(v) for v in d["spacing"]), tuple(float(v) for v in d["origin"]),
                   tuple(float(v) for v in d["direction"]), tuple(int(v) for v in d["shape"]))


POSITIVE_CODES = "LPS"  # where the LPS world axes x, y, z point
NEGATIVE_CODES = "RAI"
RAS_SIGNS = (-1.0, -1.0, 1.0)  # RAS+ axes in LPS world coordinates: R = −x, A = −y, S = +z


def closest_world_axes(direction: np.ndarray) -> list[int]:
    """The world axis closest to each index axis (column), each used once, largest |cosine| assigned first."""
    cos = np.abs(np.asarray(direction, dtype=np.float64))
    out = [0] * len(cos)
    for _ in range(len(cos)):
        w, j = np.unravel_index(int(np.argmax(cos)), cos.shape)
        out[int(j)] = int(w)
        cos[w, :] = -1.0
        cos[:, j] = -1.0
    return out


@dataclass(frozen=True)
class Reorientation:
    """Axis permutation and flips in array order: new axis k is old axis ``axes[k]``, reversed when ``flips[k]``."""

    axes: tuple[int, ...]
    flips: tuple[bool, ...]

    def _flipped_axes(self, lead: int) -> tuple[int, ...]:
        """The (new-order) axes to reverse, after `lead` leading non-spatial axes."""
        return tuple(lead + k for k, f in enumerate(self.flips) if f)

    def apply(self, array: np.ndarray, lead: int = 0) -> np.ndarray:
        """The array in the new frame (its `lead` leading axes, e.g. channels, untouched); exact, a contiguous copy."""
        moved = array.transpose([*range(lead), *(lead + a for a in self.axes)])
        return np.ascontiguousarray(np.flip(moved, self._flipped_axes(lead)))

    def revert(self, array: np.ndarray, lead: int = 0) -> np.ndarray:
        """Inverse of apply: an array of the new frame back in the original axis order."""
        back = [self.axes.index(a) for a in range(len(self.axes))]
        flipped = np.flip(array, self._flipped_axes(lead))
        return np.ascontiguousarray(flipped.transpose([*range(lead), *(lead + k for k in back)]))

    def geometry(self, geo: Geometry) -> Geometry:
        """The geometry of the reoriented array: every voxel keeps its world position."""
        n, d = geo.ndim, geo.direction_matrix()
        columns = [d[:, n - 1 - self.axes[k]] * (-1.0 if self.flips[k] else 1.0) for k in range(n)]
        direction = np.stack(columns[::-1], axis=1)  # array order → index (x, y, z) order
        corner = np.zeros(n)
        for a, f in zip(self.axes, self.flips):
            corner[a] = geo.shape[a] - 1 if f else 0
        origin = geo.index_to_world(corner) if any(self.flips) else np.asarray(geo.origin)
        return Geometry(tuple(geo.spacing[a] for a in self.axes), tuple(float(o) for o in origin),
                        tuple(float(v) for v in direction.ravel()), tuple(geo.shape[a] for a in self.axes))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"axes": list(self.axes), "flips": list(self.flips)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Reorientation":
        """Inverse of to_json (other keys are ignored)."""
        return cls(tuple(int(a) for a in d["axes"]), tuple(bool(f) for f in d["flips"]))


def closest_ras(geo: Geometry) -> Reorientation:
    """The permutation and flips making the array closest to RAS+, as nibabel's as_closest_canonical does."""
    n, d = geo.ndim, geo.direction_matrix()
    world = closest_world_axes(d)
    source = [world.index(t) for t in range(n)]  # old index axis (x, y, z order) that becomes index axis t
    axes = tuple(n - 1 - source[n - 1 - k] for k in range(n))
    flips = tuple(bool(d[n - 1 - k, source[n - 1 - k]] * RAS_SIGNS[n - 1 - k] < 0) for k in range(n))
    return Reorientation(axes, flips)


def _fmt(values: Sequence[float]) -> str:
    """Format a float tuple compactly."""
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
