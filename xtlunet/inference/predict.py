"""Predict one preprocessed case with every fold's network and average the logits (as nnU-Net does)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.inference.ensemble import average_predictions, check_distinct
from xtlunet.inference.mirroring import mirror_combinations, tta_mirror_axes
from xtlunet.inference.sliding_window import EMPTY_WINDOWS, predict_sliding_window, window_count
from xtlunet.networks.memory import estimate_activation_elements
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.utils.device import Precision, available_memory_bytes, resolve_precision

if TYPE_CHECKING:
    from xtlunet.inference.folder import PredictOptions
    from xtlunet.inference.models import TrainedModel

log = logging.getLogger("xtlunet")

MAX_AUTO_BATCH = 8          # windows per forward pass chosen at most: beyond it batching gains little
MEMORY_SHARE = 0.25         # share of the available memory the windows of one forward pass may take
FALLBACK_BATCH = 4          # when the available memory cannot be read


def predict_case(nets: Sequence[nn.Module], data: np.ndarray, conf: ConfigurationPlan, plans: Plans,
                 step: float = 0.5, batch_windows: int | None = 4, mirror_axes: Sequence[int] = (),
                 device: torch.device | str = "cpu", progress: bool = False, precision: Precision | None = None,
                 empty_windows: str = "reuse") -> np.ndarray:
    """Fold-averaged logits (K, *spatial) of preprocessed data (C, *spatial); export_prediction resamples them
    and applies the softmax.

    `mirror_axes`: the axes test-time mirroring flips (every combination); the trained model's checkpoint
    records the axes its augmentation mirrored, which is where callers take them from. () = no mirroring.
    `batch_windows` None: chosen from the free memory (auto_batch_windows). `precision` and `empty_windows`:
    as predict_sliding_window takes them (None: autocast on CUDA only; 'reuse' is exact).
    """
    if conf.task != "segmentation":
        raise XtlunetError(f"configuration '{conf.name}' is for {conf.task}; sliding-window prediction is for "
                           "segmentation",
                           fix="predict a segmentation configuration (e.g. 3d_fullres or 2d)")
    if not nets:
        raise XtlunetError("no networks to predict with", fix="pass at least one fold's network")
    check_distinct(nets, "network")
    check_empty_windows(conf, empty_windows)
    channels = plans.input_channels(conf)   # a cascade's network also reads the previous stage's one-hot labels
    if data.ndim - 1 not in (conf.dim, conf.dim + 1) or data.shape[0] != channels:
        raise XtlunetError(f"preprocessed data of shape {data.shape} does not fit configuration '{conf.name}' "
                           f"({channels} channels, {conf.dim}D)", fix="preprocess the case with this plan first")
    axes = tuple(mirror_axes)
    if batch_windows is None:
        batch_windows = auto_batch_windows(conf, window_count(data.shape[1:], conf.patch_size, step),
                                           len(mirror_combinations(axes)), device, precision)
    tensor = torch.from_numpy(np.array(data, dtype=np.float32))
    logits = average_predictions(
        predict_sliding_window(net, tensor, conf.patch_size, conf.num_outputs, step=step, batch_windows=batch_windows,
                               mirror_axes=axes, device=device, progress=progress, precision=precision,
                               empty_windows=empty_windows) for net in nets)
    return logits.numpy()


def auto_batch_windows(conf: ConfigurationPlan, windows: int, flips: int, device: torch.device | str,
                       precision: Precision | None = None) -> int:
    """Windows per forward pass: as many as MEMORY_SHARE of the free memory holds, at most MAX_AUTO_BATCH and never
    more than the case has (`windows`); each window runs `flips` times (TTA).

    A window's memory is the training estimate of its activations (every layer's input, an upper bound for a
    forward pass without gradients) at 2 bytes under bf16/fp16 autocast, else 4.
    """
    free = available_memory_bytes(device)
    if free is None:
        return max(1, min(FALLBACK_BATCH, windows))
    layers, logits = estimate_activation_elements(conf.network(), conf.patch_size, conf.num_outputs, conf.task)
    width = 2 if precision is not None and precision.dtype is not None else 4
    per_window = flips * (width * layers + 4 * logits)
    fit = int(MEMORY_SHARE * free // max(per_window, 1))
    chosen = max(1, min(MAX_AUTO_BATCH, fit, windows))
    log.debug("batch of %d windows (%d in the case, %.1f GB free, ~%.0f MB per window)", chosen, windows,
              free / 2 ** 30, per_window / 2 ** 20)
    return chosen


def check_empty_windows(conf: ConfigurationPlan, empty_windows: str) -> None:
    """Refuse 'skip' unless every channel is normalised inside the body mask: only there is an all-zero window
    known to lie outside the body (where training taught background)."""
    look_up_option(empty_windows, EMPTY_WINDOWS, "empty-windows mode")
    if empty_windows != "skip":
        return
    unmasked = [str(c) for c, m in enumerate(conf.use_mask_for_norm) if not m]
    if unmasked:
        raise XtlunetError(f"--empty-windows skip needs every channel normalised inside the body mask; configuration "
                           f"'{conf.name}' does not (use_mask_for_norm false for channel {', '.join(unmasked)})",
                           fix="use --empty-windows reuse (the default: exact, and nearly as fast)")


def inference_choices(model: TrainedModel, opts: PredictOptions,
                      announce: bool = False) -> tuple[tuple[int, ...], Precision]:
    """The mirror axes and the precision of a prediction run, checked: a bad choice is a one-line error.
    `announce`: log which precision is used and why (once per run)."""
    axes = tta_mirror_axes(model.mirror_axes, opts.tta, opts.tta_axes)
    if model.conf.task == "segmentation":
        check_empty_windows(model.conf, opts.empty_windows)
    precision = resolve_precision(opts.precision, opts.device)
    if announce:
        log.info("precision: %s; outputs are averaged in fp32", precision.reason)
    return axes, precision
