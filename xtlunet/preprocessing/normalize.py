"""Intensity normalisation per channel scheme: CT (global, clipped) or per-image z-score."""
from __future__ import annotations

import numpy as np

from xtlunet.errors import look_up_option

SCHEMES = ("ct", "zscore", "none")


def normalize_channel(x: np.ndarray, scheme: str, mask: np.ndarray | None, props: dict[str, float]) -> np.ndarray:
    """Normalise one channel; `mask` restricts z-score statistics (and zeroes outside) when given."""
    look_up_option(scheme, SCHEMES, "normalization scheme")
    x = x.astype(np.float32, copy=False)
    if scheme == "none":
        return x
    if scheme == "ct":
        lo, hi = props["percentile_00_5"], props["percentile_99_5"]
        return ((np.clip(x, lo, hi) - props["mean"]) / max(props["std"], 1e-8)).astype(np.float32)
    if mask is not None and mask.any():
        vals = x[mask]
        out = (x - vals.mean()) / max(float(vals.std()), 1e-8)
        out[~mask] = 0
        return out.astype(np.float32)
    return ((x - x.mean()) / max(float(x.std()), 1e-8)).astype(np.float32)
