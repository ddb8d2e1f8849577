"""Classification machinery: class-balanced ROIs around findings, cross-entropy, AUC over validation findings."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from xtlunet.metrics import auc
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.augmentation import AugmentationConfig, augmentation_config
from xtlunet.training.data import CaseArrays, ROIBatches, findings_of
from xtlunet.training.losses import classification_loss
from xtlunet.training.tasks.common import batch_stream, extract_size
from xtlunet.utils.arrays import crop_padded


class ClassificationTask:
    """The data side of a lesion-classification run: ROI batches, targets, the default loss, per-epoch AUC."""

    metric_name = "auc"

    def __init__(self, plans: Plans, conf: ConfigurationPlan, train: list[CaseArrays], val: list[CaseArrays],
                 aug: AugmentationConfig | None = None) -> None:
        self.plans, self.conf = plans, conf
        self.train, self.val = findings_of(train), findings_of(val)
        self.aug = aug or augmentation_config(conf)
        self.mirror_axes = self.aug.mirrored(conf.dim)

    @staticmethod
    def loss(net: nn.Module, label_smoothing: float = 0.0) -> nn.Module:
        """Cross-entropy (optional label smoothing)."""
        return classification_loss(label_smoothing)

    def batches(self, batch_size: int, workers: int, seed: int, forced: int | None = None) -> Iterator[dict[str, Any]]:
        """Augmented class-balanced ROI batches (every ROI is on a finding: `forced` does not apply)."""
        loader = ROIBatches(self.train, extract_size(self.conf, self.aug), batch_size, self.conf.patch_size)
        return batch_stream(loader, self.conf, self.aug, workers, seed, with_seg=False)

    def to_device(self, batch: dict[str, Any], net: nn.Module, device: torch.device) -> tuple[torch.Tensor, Any]:
        """Input tensor and class targets."""
        x = torch.from_numpy(np.ascontiguousarray(batch["data"])).to(device, non_blocking=True)
        return x, torch.as_tensor(batch["target"]).long().to(device)

    @torch.no_grad()
    def validate(self, net: nn.Module, loss_fn: nn.Module, device: torch.device, iters: int, batch_size: int,
                 epoch: int, autocast: Any) -> tuple[float, float]:
        """The training loss and AUC over every validation finding (centre ROI, no augmentation)."""
        if not self.val:
            return float("nan"), float("nan")
        net.eval()
        total, probs = 0.0, []
        for start in range(0, len(self.val), batch_size):
            chunk = self.val[start:start + batch_size]
            batch = {"data": np.stack([crop_padded(np.asarray(f.case.data), f.index, self.conf.patch_size, 0.0)
                                       for f in chunk]).astype(np.float32),
                     "target": np.array([f.label for f in chunk])}
            x, y = self.to_device(batch, net, device)
            with autocast:
                logits = net(x).float()
            total += float(loss_fn(logits, y)) * len(chunk)
            probs.append(torch.softmax(logits, 1).cpu().numpy())
        labels = np.array([f.label for f in self.val])
        return total / len(self.val), auc(labels, np.concatenate(probs))
