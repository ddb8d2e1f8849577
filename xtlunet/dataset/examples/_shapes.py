"""Shapes in world space (mm) for the example datasets: ellipsoids and blobs with lobed or spiculated margins."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from xtlunet.dataset.examples._grid import rotation


@dataclass(frozen=True)
class Blob:
    """An ellipsoid (ellipse in 2D) whose radius grows along a few random directions (lobes or spicules)."""

    centre: np.ndarray
    radii: np.ndarray
    rot: np.ndarray
    lobe_dirs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    lobe_amps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sharpness: float = 2.0

    def local(self, points: np.ndarray) -> list[np.ndarray]:
        """Components of points (ndim, ...) in the blob's frame, scaled by its radii (unit ball = plain ellipsoid)."""
        d = [points[j] - np.float32(self.centre[j]) for j in range(len(self.centre))]
        return [sum(d[j] * np.float32(self.rot[j, i] / self.radii[i]) for j in range(len(d))) for i in range(len(d))]

    def q(self, points: np.ndarray) -> np.ndarray:
        """Normalised radius at points (ndim, ...): < 1 inside the blob, 1 on its margin."""
        loc = self.local(points)
        r = np.sqrt(sum(c * c for c in loc))
        if not len(self.lobe_amps):
            return r
        inv = 1.0 / np.maximum(r, np.float32(1e-6))
        grow = np.ones_like(r)
        for direction, amp in zip(self.lobe_dirs, self.lobe_amps):
            cos = np.clip(sum(c * np.float32(v) for c, v in zip(loc, direction)) * inv, 0.0, 1.0)
            grow += np.float32(amp) * cos ** np.float32(self.sharpness)
        return r / grow

    def mask(self, points: np.ndarray) -> np.ndarray:
        """Boolean inside-mask at the given world points."""
        return self.q(points) < 1.0

    def weight(self, points: np.ndarray, edge: float = 0.15) -> np.ndarray:
        """1 inside, 0 outside, with a linear ramp of relative width `edge` at the margin."""
        return np.clip((1.0 + edge / 2 - self.q(points)) / edge, 0.0, 1.0)


def random_unit_vectors(rng: np.random.Generator, count: int, ndim: int) -> np.ndarray:
    """`count` random directions, shape (count, ndim)."""
    v = rng.standard_normal((count, ndim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_rotation(rng: np.random.Generator, ndim: int, max_deg: float = 180.0) -> np.ndarray:
    """A random rotation with angles up to `max_deg` about each axis."""
    return rotation(rng.uniform(-max_deg, max_deg, size=1 if ndim == 2 else 3))


def random_blob(rng: np.random.Generator, centre: Sequence[float], radius_range: tuple[float, float],
                elongation: float = 0.3, lobes: int = 0, amplitude: tuple[float, float] = (0.0, 0.0),
                sharpness: float = 2.0) -> Blob:
    """A blob of mean radius in `radius_range` (mm), axes varying by ±elongation, with random lobes/spicules."""
    centre = np.asarray(centre, dtype=np.float64)
    ndim = centre.size
    radii = rng.uniform(*radius_range) * rng.uniform(1 - elongation, 1 + elongation, size=ndim)
    dirs = random_unit_vectors(rng, lobes, ndim) if lobes else np.zeros((0, ndim))
    amps = rng.uniform(*amplitude, size=lobes) if lobes else np.zeros(0)
    return Blob(centre, radii, random_rotation(rng, ndim), dirs, amps, sharpness)


def ellipsoid(centre: Sequence[float], radii: Sequence[float], rot: np.ndarray | None = None) -> Blob:
    """A plain ellipsoid (ellipse in 2D) with semi-axes `radii` (mm), optionally rotated."""
    centre = np.asarray(centre, dtype=np.float64)
    return Blob(centre, np.asarray(radii, dtype=np.float64), np.eye(centre.size) if rot is None else rot,
                np.zeros((0, centre.size)), np.zeros(0))


def angular_ripple(points: np.ndarray, centre: np.ndarray, rng: np.random.Generator, waves: int = 4,
                   amplitude: float = 0.04) -> np.ndarray:
    """A smooth function of the direction from `centre` at points (ndim, ...): random cosine waves, for wavy borders."""
    d = [points[j] - np.float32(centre[j]) for j in range(len(centre))]
    inv = 1.0 / np.maximum(np.sqrt(sum(c * c for c in d)), np.float32(1e-6))
    out = np.zeros(points.shape[1:], np.float32)
    for v in random_unit_vectors(rng, waves, len(centre)):
        freq, phase = rng.uniform(4.0, 9.0), rng.uniform(0, 2 * np.pi)
        out += np.cos(np.float32(freq) * sum(c * np.float32(x) for c, x in zip(d, v)) * inv + np.float32(phase))
    return amplitude * out / np.sqrt(waves)


def separated_centres(rng: np.random.Generator, sample: Callable[[np.random.Generator], np.ndarray],
                      radii: Sequence[float], gap: float = 1.0, tries: int = 200) -> list[np.ndarray]:
    """Centres from `sample(rng)` such that blobs of the given radii do not touch (best effort)."""
    out: list[np.ndarray] = []
    for r in radii:
        best = sample(rng)
        for _ in range(tries):
            if all(np.linalg.norm(best - c) > r + rc + gap for c, rc in zip(out, radii)):
                break
            best = sample(rng)
        out.append(best)
    return out
