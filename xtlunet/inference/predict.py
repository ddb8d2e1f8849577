"""Predict one preprocessed case with every fold's network and average the probabilities."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.inference.ensemble import average_probabilities, check_distinct
from xtlunet.inference.sliding_window import predict_sliding_window
from xtlunet.plans import ConfigurationPlan, Plans


def predict_case(nets: Sequence[nn.Module], data: np.ndarray, conf: ConfigurationPlan, plans: Plans,
                 step: float = 0.5, batch_windows: int = 4, mirror_axes: Sequence[int] = (),
                 device: torch.device | str = "cpu", progress: bool = False) -> np.ndarray:
    """Fold-averaged probabilities (K, *spatial) of preprocessed data (C, *spatial).

    `mirror_axes`: the axes test-time mirroring flips (every combination); the trained model's checkpoint
    records the axes its augmentation mirrored, which is where callers take them from. () = no mirroring.
    """
    if conf.task != "segmentation":
        raise XtlunetError(f"configuration '{conf.name}' is for {conf.task}; sliding-window prediction is for "
                           "segmentation",
                           fix="predict a segmentation configuration (e.g. 3d_fullres or 2d)")
    if not nets:
        raise XtlunetError("no networks to predict with", fix="pass at least one fold's network")
    check_distinct(nets, "network")
    channels = len(plans.channel_names)
    if data.ndim - 1 not in (conf.dim, conf.dim + 1) or data.shape[0] != channels:
        raise XtlunetError(f"preprocessed data of shape {data.shape} does not fit configuration '{conf.name}' "
                           f"({channels} channels, {conf.dim}D)", fix="preprocess the case with this plan first")
    axes = tuple(mirror_axes)
    tensor = torch.from_numpy(np.array(data, dtype=np.float32))
    probs = average_probabilities(
        predict_sliding_window(net, tensor, conf.patch_size, conf.num_outputs, step=step, batch_windows=batch_windows,
                               mirror_axes=axes, device=device, progress=progress) for net in nets)
    return probs.numpy()
