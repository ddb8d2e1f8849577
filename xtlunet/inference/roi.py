"""Classification of findings: the ROI around each finding, probabilities averaged over folds and mirrored copies.

Test-time mirroring means what it means for segmentation: every combination of flips of the mirror axes
(2^n copies, `mirror_combinations`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from xtlunet.inference.mirroring import mirror_combinations
from xtlunet.utils.arrays import crop_padded


@torch.no_grad()
def roi_probabilities(nets: Sequence[nn.Module], volumes: Sequence[np.ndarray], centers: Sequence[np.ndarray],
                      patch: Sequence[int], num_outputs: int, mirror_axes: Sequence[int] = (),
                      device: torch.device | str = "cpu", autocast: Any = None, batch_size: int = 8) -> np.ndarray:
    """(N, K) probabilities of the ROI of `patch` voxels centred on centers[i] in volumes[i] (C, *spatial)."""
    flips = mirror_combinations(mirror_axes)
    out = np.zeros((len(centers), num_outputs))
    amp = autocast or contextlib.nullcontext()
    for start in range(0, len(centers), batch_size):
        idx = range(start, min(start + batch_size, len(centers)))
        x = torch.from_numpy(np.stack([crop_padded(np.asarray(volumes[i]), centers[i], patch, 0.0) for i in idx]))
        x = x.float().to(device)
        acc = torch.zeros(len(idx), num_outputs, device=device)
        for net in nets:
            net.eval()
            for flip in flips:
                xi = torch.flip(x, [a + 2 for a in flip]) if flip else x
                with amp:
                    acc += torch.softmax(net(xi).float(), 1)
        out[start:start + len(idx)] = (acc / (len(nets) * len(flips))).cpu().numpy()
    return out
