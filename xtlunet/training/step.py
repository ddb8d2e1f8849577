"""The one optimisation step that every training run uses (fold training, pretrain-2d, the step benchmark).

Autocast (bf16 on CUDA, fp16 + GradScaler where bf16 is missing, fp32 on CPU), channels-last memory
layout on CUDA, gradients of frozen parameters dropped (they get no update, no momentum and no weight
decay while frozen), gradient-norm clipping, then the optimiser step. On CUDA a batch's input comes from
page-locked memory (`pin_batch`), so the tasks' non_blocking copies to the GPU do not block the host.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from xtlunet.utils.device import autocast
from xtlunet.utils.parallel import read_ahead


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 autocast (CUDA without bf16) needs loss scaling; bf16 and CPU do not."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


def place_network(net: nn.Module, device: torch.device, channels_last: bool = True) -> nn.Module:
    """Move a network to the device; channels-last (2D) or channels-last-3D layout on CUDA."""
    net = net.to(device)
    if channels_last and device.type == "cuda":
        dim = next((m.weight.ndim - 2 for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)), 0)
        fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(dim)
        if fmt is not None:
            net = net.to(memory_format=fmt)
    return net


def pin_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """On CUDA, the batch with its input array ("data") in page-locked memory (the tasks' `to_device` copies it with
    non_blocking=True, which is asynchronous only from there); unchanged on any other device."""
    if device.type != "cuda" or not isinstance(batch.get("data"), np.ndarray):
        return batch
    return {**batch, "data": torch.from_numpy(np.ascontiguousarray(batch["data"])).pin_memory().numpy()}


def device_batches(batches: Iterator[dict[str, Any]], device: torch.device, workers: int) -> Iterator[dict[str, Any]]:
    """The training batches for the step on `device`: on CUDA with background augmentation workers, the next batch is
    fetched and pinned in a thread while the step runs (close the iterator at the end); else `batches` itself
    (augmentation in this process draws from numpy's global generator, which validation seeds and restores: it must
    not run beside it)."""
    if device.type != "cuda" or workers <= 0:
        return batches
    return read_ahead(pin_batch(b, device) for b in batches)


class TrainStep:
    """Forward under autocast, loss, (scaled) backward, frozen gradients dropped, clipping, optimiser step."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, grad_clip: float = 12.0, frozen: Sequence[nn.Parameter] = ()) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.grad_clip, self.frozen = grad_clip, list(frozen)
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device))
        self.autocast = autocast(device)

    def __call__(self, x: torch.Tensor, y: Any, freeze: bool = False) -> float:
        """One step on batch (x, y); with `freeze` the frozen parameters keep their values. Returns the loss."""
        with self.autocast:
            loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if freeze:
            for p in self.frozen:
                p.grad = None
        self.scaler.unscale_(self.optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any] | None:
        """The grad scaler's state (None when no scaling is used)."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the grad scaler's state."""
        if state:
            self.scaler.load_state_dict(state)
