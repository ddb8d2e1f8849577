"""Array helpers shared by training and inference."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def crop_padded(arr: np.ndarray, center: Sequence[float], size: Sequence[int], pad_value: float) -> np.ndarray:
    """Cut `size` around `center` from the trailing axes of arr, padding with pad_value outside it."""
    return crop_box(arr, [int(round(c - s / 2)) for c, s in zip(center, size)], size, pad_value)


def crop_box(arr: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """Cut the box [start, start + size) from the trailing axes of arr, padding with pad_value outside it."""
    lead = arr.ndim - len(size)
    shape = arr.shape[lead:]
    lo = [int(v) for v in start]
    src = tuple(slice(max(0, l), min(n, l + s)) for l, s, n in zip(lo, size, shape))
    out = np.full(arr.shape[:lead] + tuple(size), pad_value, dtype=arr.dtype)
    dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
    out[(slice(None),) * lead + dst] = arr[(slice(None),) * lead + src]
    return out
