"""Sliding-window prediction with Gaussian weighting and mirroring TTA (2D, 3D, and 2D nets slice by slice).

On CUDA the volume is copied to the GPU once, from page-locked memory without blocking the host, and the windows are
cut there; `inference_network` puts a network into channels-last layout (channels_last_3d for 3D) and, when asked,
torch.compile's it, and a compiled network gets every batch padded to `batch_windows` windows (one shape: one
compilation; the padding's outputs are dropped).
"""
from __future__ import annotations

import itertools
import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.inference.mirroring import check_mirror_axes, inference_state, mirrored_logits
from xtlunet.utils.console import progress_bar
from xtlunet.utils.device import Precision
from xtlunet.utils.device import autocast as mixed_precision

Slicer = tuple[slice, ...]
CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}   # by tensor rank: 2D and 3D batches
EmptyKey = tuple[float, ...]            # the per-channel value of a window whose input is constant
EMPTY_WINDOWS = ("reuse", "skip", "run")
SKIP_TOLERANCE = 1e-3   # 'skip': |input| at most this (normalised units) counts as zero (resampling rings near edges)
UNCOVERED_LOGIT = -50.0  # 'skip': the logit of every foreground class where no window ran (softmax: background 1 in fp32)


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


def window_count(image_size: Sequence[int], patch_size: Sequence[int], step: float = 0.5) -> int:
    """Windows predict_sliding_window slides over data of spatial `image_size` (a 2D patch on 3D data: per slice)."""
    slices = int(image_size[0]) if len(image_size) > len(patch_size) else 1
    return slices * math.prod(len(s) for s in window_starts(image_size[-len(patch_size):], patch_size, step))


def empty_key(window: torch.Tensor) -> EmptyKey | None:
    """The per-channel value of a window (C, *spatial) that is constant in every channel, else None."""
    flat = window.reshape(window.shape[0], -1)
    lo, hi = flat.amin(1), flat.amax(1)
    return tuple(lo.tolist()) if bool((lo == hi).all()) else None


def _window_keys(padded: torch.Tensor, slicers: list[Slicer], empty_windows: str) -> list[EmptyKey | None]:
    """Per window: None to run it, else the key of its constant input ('reuse': exactly constant in every channel;
    'skip': every value within SKIP_TOLERANCE of zero, the key all zero)."""
    look_up_option(empty_windows, EMPTY_WINDOWS, "empty_windows")
    if empty_windows == "run":
        return [None] * len(slicers)
    windows = (padded[(slice(None), *s)] for s in slicers)
    if empty_windows == "skip":
        zero = (0.0,) * padded.shape[0]
        return [zero if float(w.abs().amax()) <= SKIP_TOLERANCE else None for w in windows]
    return [empty_key(w) for w in windows]


def _representatives(keys: list[EmptyKey | None], slicers: list[Slicer]) -> list[tuple[EmptyKey, Slicer]]:
    """The first window of each distinct constant input: the one run for all of them ('reuse')."""
    firsts: dict[EmptyKey, Slicer] = {}
    for key, s in zip(keys, slicers):
        if key is not None:
            firsts.setdefault(key, s)
    return list(firsts.items())


def _chunks(keys: list[EmptyKey | None], size: int) -> Iterator[range]:
    """Consecutive ranges of window indices, each holding at most `size` windows to run (key None)."""
    start, run = 0, 0
    for i, key in enumerate(keys):
        if key is None:
            if run == size:
                yield range(start, i)
                start, run = i, 0
            run += 1
    if start < len(keys):
        yield range(start, len(keys))


def inference_network(net: nn.Module, device: torch.device | str, channels_last: bool = True,
                      compile: bool = False) -> nn.Module:
    """The network as prediction runs it: channels-last layout on CUDA (`channels_last`; the windows follow it),
    torch.compile'd with static shapes (`compile`; predict_sliding_window then pads every batch to one size). On
    the CPU compiling also turns on inductor's freezing (weights folded in as constants and pre-packed for oneDNN:
    prediction never changes them), without which a compiled network is no faster there."""
    if channels_last and torch.device(device).type == "cuda":
        dim = next((m.weight.ndim for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)), 0)
        if dim in CHANNELS_LAST:
            net = net.to(memory_format=CHANNELS_LAST[dim])
    if not compile:
        return net
    if torch.device(device).type == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True   # read when the graph compiles (at the first call), so set for the process
    return torch.compile(net, dynamic=False)


def is_compiled(net: nn.Module) -> bool:
    """Whether the network is a torch.compile wrapper."""
    return hasattr(net, "_orig_mod")


def network_memory_format(net: nn.Module) -> torch.memory_format:
    """channels_last(_3d) when the network's convolution weights are in that layout, else contiguous_format (weights
    that are both, e.g. of one input channel, do not decide)."""
    for m in net.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and m.weight.ndim in CHANNELS_LAST and not m.weight.is_contiguous():
            fmt = CHANNELS_LAST[m.weight.ndim]
            return fmt if m.weight.is_contiguous(memory_format=fmt) else torch.contiguous_format
    return torch.contiguous_format


def pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A batch (B, …) with zero samples appended up to `size` (as it is when B ≥ size)."""
    if x.shape[0] >= size:
        return x
    return torch.cat([x, x.new_zeros((size - x.shape[0], *x.shape[1:]))])


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t on the device; to CUDA from page-locked memory without blocking the host (the stream orders later use)."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _check_output(out: torch.Tensor, num_outputs: int, patch_size: Sequence[int]) -> None:
    """Refuse network outputs whose class count or spatial size do not match the plan."""
    if out.shape[1] != num_outputs or tuple(out.shape[2:]) != tuple(patch_size):
        raise XtlunetError(f"the network maps a patch {tuple(patch_size)} to logits {tuple(out.shape[1:])}, expected "
                           f"{num_outputs} classes at the patch size",
                           fix="use the checkpoint that belongs to this plan and configuration")


def predict_sliding_window(net: nn.Module, data: torch.Tensor | np.ndarray, patch_size: Sequence[int],
                           num_outputs: int, step: float = 0.5, batch_windows: int = 4,
                           mirror_axes: Sequence[int] = (), device: torch.device | str = "cpu",
                           use_gaussian: bool = True, precision: Precision | None = None,
                           empty_windows: str = "reuse", progress: bool = False,
                           fixed_batch: bool | None = None) -> torch.Tensor:
    """Class logits (K, *spatial) float32 on the CPU for data (C, *spatial), nnU-Net style.

    Windows of `patch_size` overlap by 1 − step; their logits (averaged over the flips of `mirror_axes`,
    network input axes) are Gaussian-weighted and averaged per voxel in fp32. They stay logits: export resamples
    them to the original grid and only then applies the softmax (nnU-Net's order; resampling probabilities instead
    shifts lesion borders). `batch_windows` windows (times 2^len(mirror_axes) flips) go through the net at once.
    A 2D patch on 3D data runs the 2D net slice by slice along axis 0. `precision`: the autocast of the forward
    passes (None: autocast on CUDA only, as in training). `empty_windows`: windows whose input is constant in
    every channel (e.g. all zero outside the body) are 'reuse': run once per distinct input, the logits reused
    (exact); 'skip': when zero (within SKIP_TOLERANCE), not run at all, and voxels that no run window covers get
    certain background (UNCOVERED_LOGIT for every other class; this changes the output where the net would predict
    foreground there, or near their edges); 'run': all are run. `fixed_batch`: pad every batch to
    `batch_windows` windows (zeros; their outputs dropped), so the network sees one input shape (None: when it is
    compiled).
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
    slicers = _window_slicers(size, patch, step, slice_mode)
    keys = _window_keys(padded, slicers, empty_windows)
    padded = to_device(padded, device)
    fixed = is_compiled(net) if fixed_batch is None else fixed_batch
    layout = network_memory_format(net) if device.type == "cuda" else torch.contiguous_format
    weight = (gaussian_importance_map(patch_size) if use_gaussian else torch.ones(tuple(patch_size))).to(device)
    weight = weight.reshape(patch)
    logits = torch.zeros((num_outputs, *size), dtype=torch.float32, device=device)
    weights = torch.zeros(size, dtype=torch.float32, device=device)
    amp = mixed_precision(device) if precision is None else precision.context(device)

    def forward(batch: list[Slicer]) -> torch.Tensor:
        """fp32 logits (B, K, *patch) of the windows `batch`, mirror-averaged."""
        x = torch.stack([padded[(slice(None), *s)] for s in batch])
        x = x[:, :, 0] if slice_mode else x
        x = pad_batch(x, batch_windows) if fixed else x
        with amp:
            out = mirrored_logits(net, x.contiguous(memory_format=layout), mirror_axes)[:len(batch)]
        _check_output(out, num_outputs, patch_size)
        bar.update()
        return out.reshape(out.shape[0], num_outputs, *patch)

    reps = _representatives(keys, slicers) if empty_windows == "reuse" else []
    chunks = list(_chunks(keys, batch_windows))
    calls = -(-len(reps) // batch_windows) + sum(any(keys[i] is None for i in c) for c in chunks)
    bar = progress_bar(total=calls, desc="sliding window", unit="batch", leave=False, disable=not progress)
    with inference_state(net), torch.inference_mode(), bar:
        cache: dict[EmptyKey, torch.Tensor] = {}   # the logits of each distinct constant input
        for i in range(0, len(reps), batch_windows):
            part = reps[i:i + batch_windows]
            cache.update(zip((k for k, _ in part), forward([s for _, s in part])))
        for chunk in chunks:   # accumulated in window order, as when every window is run
            todo = [slicers[i] for i in chunk if keys[i] is None]
            outs = iter(forward(todo) if todo else ())
            for i in chunk:
                o = next(outs) if keys[i] is None else cache.get(keys[i])
                if o is not None:   # None: a skipped window
                    logits[(slice(None), *slicers[i])] += o * weight
                    weights[slicers[i]] += weight
    return _mean_logits(logits, weights)[(slice(None), *crop)].cpu()


def _mean_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted mean logits; voxels no window covered (skipped windows) are certain background (class 0)."""
    covered = weights > 0
    if bool(covered.all()):
        return logits / weights
    mean = logits / torch.where(covered, weights, torch.ones_like(weights))
    mean[:, ~covered] = UNCOVERED_LOGIT
    mean[0, ~covered] = 0.0
    return mean
