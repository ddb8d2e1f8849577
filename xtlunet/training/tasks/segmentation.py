"""Segmentation machinery: oversampled patches, Dice+CE with deep supervision, pseudo-Dice on validation patches."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from xtlunet.cascade.onehot import previous_stage_to_data
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.augmentation import AugmentationConfig, augmentation_config
from xtlunet.training.data import CaseArrays, SegmentationBatches
from xtlunet.training.losses import DeepSupervisionLoss, DiceCELoss, downsample_targets
from xtlunet.metrics import confusion_counts, pseudo_dice
from xtlunet.training.tasks.common import batch_stream, extract_size


class SegmentationTask:
    """The data side of a segmentation run: batches, targets, the default loss and per-epoch validation."""

    metric_name = "pseudo_dice"

    def __init__(self, plans: Plans, conf: ConfigurationPlan, train: list[CaseArrays], val: list[CaseArrays],
                 aug: AugmentationConfig | None = None) -> None:
        self.plans, self.conf, self.train, self.val = plans, conf, train, val
        self.aug = aug or augmentation_config(conf)
        self.mirror_axes = self.aug.mirrored(conf.dim)
        self.labels = plans.foreground_labels()
        if conf.previous_stage:   # a cascade stage reads the previous stage's labels, one-hot, whatever the hook said
            self.aug = replace(self.aug, previous_stage_labels=tuple(self.labels))

    @staticmethod
    def loss(net: nn.Module, batch_dice: bool = True) -> nn.Module:
        """Dice (batch or per-sample) + CE over every deep-supervision output, weights halving per scale."""
        return DeepSupervisionLoss(DiceCELoss(batch_dice), len(net.deep_supervision_scales()))

    def batches(self, batch_size: int, workers: int, seed: int, forced: int | None = None) -> Iterator[dict[str, Any]]:
        """Augmented training batches, `forced` of each centred on foreground (default: the last third)."""
        loader = SegmentationBatches(self.train, self.conf.patch_size, batch_size, extract_size(self.conf, self.aug),
                                     forced=forced)
        return batch_stream(loader, self.conf, self.aug, workers, seed, with_seg=True)

    def to_device(self, batch: dict[str, Any], net: nn.Module, device: torch.device) -> tuple[torch.Tensor, Any]:
        """Input tensor and the target pyramid for deep supervision."""
        x = torch.from_numpy(np.ascontiguousarray(batch["data"])).to(device, non_blocking=True)
        seg = torch.from_numpy(np.ascontiguousarray(batch["seg"][:, 0])).round().long().to(device, non_blocking=True)
        return x, downsample_targets(seg, net.deep_supervision_scales())

    @torch.no_grad()
    def validate(self, net: nn.Module, loss_fn: nn.Module, device: torch.device, iters: int, batch_size: int,
                 epoch: int, autocast: Any) -> tuple[float, float]:
        """The training loss and pseudo-Dice (mean over foreground classes) over sampled validation patches."""
        if not self.val or iters <= 0:
            return float("nan"), float("nan")
        net.eval()
        rng = np.random.default_rng(epoch)
        state = np.random.get_state()
        np.random.seed(int(rng.integers(2 ** 31)))
        loader = SegmentationBatches(self.val, self.conf.patch_size, batch_size, self.conf.patch_size)
        losses, counts = [], np.zeros((3, len(self.labels)))
        for _ in range(iters):
            b = loader.generate_train_batch()
            if self.aug.previous_stage_labels:
                b = previous_stage_to_data(b, self.aug.previous_stage_labels)
            x, y = self.to_device(b, net, device)
            with autocast:
                out = net(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            losses.append(float(loss_fn(out.float(), y)))
            pred = out.argmax(1).cpu().numpy()
            ref = b["seg"][:, 0]
            pred[ref < 0] = 0
            counts += confusion_counts(pred, ref, self.labels)
        np.random.set_state(state)
        return float(np.mean(losses)), float(np.nanmean(pseudo_dice(*counts)))
