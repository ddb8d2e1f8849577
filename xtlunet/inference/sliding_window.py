"""Sliding-window prediction with Gaussian weighting and mirroring TTA (2D, 3D, and 2D nets slice by slice)."""
from __future__ import annotations

import contextlib
import itertools
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from xtlunet.utils.console import progress_bar

from xtlunet.errors import XtlunetError
from xtlunet.inference.mirroring import check_mirror_axes, inference_state, mirrored_logits
from xtlunet.utils.device import autocast as mixed_precision

Slicer = tuple[slice, ...]


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1 / 8,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A Gaussian centred in the patch (σ = patch · sigma_scale per axis), max 1, no zeros (nnU-Net's weighting)."""
    if sigma_scale <= 0:
        raise XtlunetError(f"sigma_scale must be positive, got {sigma_scale}", fix="use e.g. 1/8")
    gauss = np.ones(())
    for n in patch_size:
        offset = np.arange(n) - (n - 1) / 2
        gauss = np.multiply.outer(gauss, np.exp(-0.5 * (offset / (n * sigma_scale)) ** 2))
    out = torch.from_numpy(gauss / gauss.max()).to(dtype)
    zero = out == 0
    if zero.any():  # a zero weight could leave a voxel with nothing to divide by
        out[zero] = out[~zero].min()
    return out


def window_starts(image_size: Sequence[int], patch_size: Sequence[int], step: float = 0.5) -> list[list[int]]:
    """Per axis, evenly spaced window starts from 0 to image − patch, at most step · patch apart.

    An axis shorter than the patch gets the single start 0 (the image is padded to the patch first).
    """
    if not 0 < step <= 1:
        raise XtlunetError(f"step must be in (0, 1], got {step}", fix="use e.g. 0.5 (half-patch overlap)")
    starts = []
    for size, patch in zip(image_size, patch_size):
        span = max(int(size) - int(patch), 0)
        num = int(np.ceil(span / (patch * step))) + 1
        stride = span / (num - 1) if num > 1 else 0.0
        starts.append([int(round(stride * k)) for k in range(num)])
    return starts


def pad_to_patch(data: torch.Tensor, patch_size: Sequence[int]) -> tuple[torch.Tensor, Slicer]:
    """Zero-pad the spatial axes of data (C, *spatial) to at least the patch (centred); the slicer undoes it."""
    spatial = data.shape[1:]
    before = [max(p - s, 0) // 2 for s, p in zip(spatial, patch_size)]
    after = [max(p - s, 0) - b for s, p, b in zip(spatial, patch_size, before)]
    if not any(before) and not any(after):
        return data, (slice(None),) * len(spatial)
    pad = [v for b, a in zip(reversed(before), reversed(after)) for v in (b, a)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    return F.pad(data, pad, mode="constant", value=0.0), crop


def _window_slicers(size: Sequence[int], patch: Sequence[int], step: float, slice_mode: bool) -> list[Slicer]:
    """Spatial slicers of every window (in slice mode, one window row per slice along axis 0)."""
    if slice_mode:
        starts = [list(range(size[0])), *window_starts(size[1:], patch[1:], step)]
    else:
        starts = window_starts(size, patch, step)
    return [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in itertools.product(*starts)]


def _batches(items: list[Slicer], size: int) -> Iterator[list[Slicer]]:
    """Consecutive chunks of at most `size` items."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _check_output(out: torch.Tensor, num_outputs: int, patch_size: Sequence[int]) -> None:
    """Refuse network outputs whose class count or spatial size do not match the plan."""
    if out.shape[1] != num_outputs or tuple(out.shape[2:]) != tuple(patch_size):
        raise XtlunetError(f"the network maps a patch {tuple(patch_size)} to logits {tuple(out.shape[1:])}, expected "
                           f"{num_outputs} classes at the patch size",
                           fix="use the checkpoint that belongs to this plan and configuration")


def predict_sliding_window(net: nn.Module, data: torch.Tensor | np.ndarray, patch_size: Sequence[int],
                           num_outputs: int, step: float = 0.5, batch_windows: int = 4,
                           mirror_axes: Sequence[int] = (), device: torch.device | str = "cpu",
                           use_gaussian: bool = True, autocast: bool = True,
                           progress: bool = False) -> torch.Tensor:
    """Class probabilities (K, *spatial) float32 on the CPU for data (C, *spatial), nnU-Net style.

    Windows of `patch_size` overlap by 1 − step; their logits (averaged over the flips of `mirror_axes`,
    network input axes) are Gaussian-weighted, averaged per voxel, then softmaxed. `batch_windows` windows
    (times 2^len(mirror_axes) flips) go through the net at once. A 2D patch on 3D data runs the 2D net slice
    by slice along axis 0. `autocast` enables mixed precision on CUDA (a no-op on the CPU).
    """
    device = torch.device(device)
    data = torch.as_tensor(data, dtype=torch.float32)
    net_dim, data_dim = len(patch_size), data.ndim - 1
    if net_dim not in (data_dim, data_dim - 1):
        raise XtlunetError(f"a {net_dim}D patch {tuple(patch_size)} cannot slide over data of shape "
                           f"{tuple(data.shape)}",
                           fix="pass data as (channels, *spatial) with as many spatial axes as the patch (or one more)")
    if batch_windows < 1:
        raise XtlunetError(f"batch_windows must be at least 1, got {batch_windows}", fix="use e.g. 4")
    check_mirror_axes(mirror_axes, net_dim)
    slice_mode = net_dim < data_dim
    patch = [1, *patch_size] if slice_mode else [int(p) for p in patch_size]
    padded, crop = pad_to_patch(data, patch)
    size = list(padded.shape[1:])
    padded = padded.to(device)
    weight = (gaussian_importance_map(patch_size) if use_gaussian else torch.ones(tuple(patch_size))).to(device)
    weight = weight.reshape(patch)
    logits = torch.zeros((num_outputs, *size), dtype=torch.float32, device=device)
    weights = torch.zeros(size, dtype=torch.float32, device=device)
    slicers = _window_slicers(size, patch, step, slice_mode)
    amp = mixed_precision(device) if autocast else contextlib.nullcontext()
    bar = progress_bar(total=-(-len(slicers) // batch_windows), desc="sliding window", unit="batch",
                       leave=False, disable=not progress)
    with inference_state(net), torch.inference_mode(), amp, bar:
        for batch in _batches(slicers, batch_windows):
            x = torch.stack([padded[(slice(None), *s)] for s in batch])
            out = mirrored_logits(net, x[:, :, 0] if slice_mode else x, mirror_axes)
            _check_output(out, num_outputs, patch_size)
            out = out.reshape(out.shape[0], num_outputs, *patch)
            for o, s in zip(out, batch):
                logits[(slice(None), *s)] += o * weight
                weights[s] += weight
            bar.update()
    probs = torch.softmax(logits / weights, dim=0)
    return probs[(slice(None), *crop)].cpu()
