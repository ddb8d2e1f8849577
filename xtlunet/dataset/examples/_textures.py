"""Intensity textures for the example datasets: smooth noise, bias fields and scanner noise."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """White noise low-pass filtered with a Gaussian of `sigma` voxels (per axis), scaled to mean 0 and std 1."""
    shape = tuple(int(s) for s in shape)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(shape),))
    step = np.maximum(1, np.floor(sig / 2.0)).astype(int)  # filter wide fields on a coarser grid
    coarse = tuple(int(np.ceil(s / k)) + 1 for s, k in zip(shape, step))
    field = gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sig / step, mode="wrap")
    for axis, (size, k) in enumerate(zip(shape, step)):
        if k == 1:
            field = field[(slice(None),) * axis + (slice(0, size),)]
        else:
            field = np.moveaxis(np.tensordot(_linear_upsampler(field.shape[axis], int(k), size), field,
                                             axes=(1, axis)), 0, axis)
    std = float(field.std())
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _linear_upsampler(n: int, step: int, size: int) -> np.ndarray:
    """Matrix (size × n) interpolating samples spaced `step` apart linearly onto `size` unit-spaced points."""
    pos = np.minimum(np.arange(size) / step, n - 1)
    lo = np.minimum(np.floor(pos).astype(int), n - 2) if n > 1 else np.zeros(size, int)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((size, n), np.float32)
    m[np.arange(size), lo] = 1 - frac
    if n > 1:
        m[np.arange(size), lo + 1] += frac
    return m


def bias_field(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float],
               strength: float) -> np.ndarray:
    """A smooth multiplicative field exp(strength · smooth noise), like MR coil inhomogeneity."""
    return np.exp(strength * smooth_noise(rng, shape, sigma)).astype(np.float32)


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise, as in MR magnitude images."""
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imag).astype(np.float32)


def quantise(values: np.ndarray, inside: np.ndarray, dtype: type = np.int16, low: int = 1) -> np.ndarray:
    """Round to an integer type; voxels inside the body are at least `low`, voxels outside exactly 0."""
    info = np.iinfo(dtype)
    out = np.clip(np.rint(values), max(low, info.min), info.max).astype(dtype)
    out[~inside] = 0
    return out
