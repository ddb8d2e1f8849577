"""Classification machinery: class-balanced ROIs around findings, cross-entropy, AUC over validation findings."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.inference.roi import roi_probabilities
from xtlunet.training.data import CaseArrays, FindingRef, ROIBatches, findings_of
from xtlunet.training.losses import classification_loss
from xtlunet.training.metrics import auc
from xtlunet.training.tasks.common import augmentation_config, batch_stream, extract_size
from xtlunet.utils.atomic import write_csv


class ClassificationTask:
    """The parts a lesion-classification trainer swaps in."""

    metric_name = "auc"

    def __init__(self, plans: Plans, conf: ConfigurationPlan, train: list[CaseArrays], val: list[CaseArrays],
                 label_smoothing: float = 0.0) -> None:
        self.plans, self.conf = plans, conf
        self.train, self.val = findings_of(train), findings_of(val)
        self.aug = augmentation_config(conf)
        self.label_smoothing = label_smoothing

    def mirror_axes(self) -> list[int]:
        """Spatial axes mirrored in augmentation, hence usable for test-time mirroring."""
        return list(range(self.conf.dim))

    def loss(self, net: nn.Module) -> nn.Module:
        """Cross-entropy (optional label smoothing)."""
        return classification_loss(self.label_smoothing)

    def batches(self, batch_size: int, workers: int, seed: int) -> Iterator[dict[str, Any]]:
        """Augmented class-balanced ROI batches."""
        loader = ROIBatches(self.train, extract_size(self.conf, self.aug), batch_size, self.conf.patch_size)
        return batch_stream(loader, self.conf, self.aug, workers, seed, with_seg=False)

    def to_device(self, batch: dict[str, Any], net: nn.Module, device: torch.device) -> tuple[torch.Tensor, Any]:
        """Input tensor and class targets."""
        x = torch.from_numpy(np.ascontiguousarray(batch["data"])).to(device, non_blocking=True)
        return x, torch.as_tensor(batch["target"]).long().to(device)

    def probabilities(self, nets: list[nn.Module], findings: list[FindingRef], device: torch.device,
                      mirror: bool, autocast: Any, batch_size: int = 8) -> np.ndarray:
        """Class probabilities per finding (centre ROI), averaged over nets and mirrored copies."""
        return roi_probabilities(nets, [f.case.data for f in findings], [f.index for f in findings],
                                 self.conf.patch_size, self.conf.num_outputs, self.mirror_axes() if mirror else (),
                                 device, autocast, batch_size)

    @torch.no_grad()
    def validate(self, net: nn.Module, device: torch.device, iters: int, batch_size: int, epoch: int,
                 autocast: Any) -> tuple[float, float]:
        """Validation loss and AUC over every validation finding (centre ROI, no augmentation)."""
        if not self.val:
            return float("nan"), float("nan")
        probs = self.probabilities([net], self.val, device, False, autocast, batch_size)
        labels = np.array([f.label for f in self.val])
        nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-8, 1))
        return float(nll.mean()), auc(labels, probs)

    def final_validation(self, nets: list[nn.Module], out_dir: Path, raw_labels: Path, file_ending: str,
                         device: torch.device, step: float, tta: bool = True, autocast: Any = None) -> dict[str, Any]:
        """Per-finding probabilities (mirroring TTA) → validation/predictions.csv, and the AUC."""
        import contextlib

        probs = self.probabilities(nets, self.val, device, tta, autocast or contextlib.nullcontext())
        labels = np.array([f.label for f in self.val])
        rows = [{"case_id": f.case.case_id, "finding_id": f.finding_id, "label": f.label,
                 **{f"p{k}": float(p[k]) for k in range(p.shape[0])}} for f, p in zip(self.val, probs)]
        write_csv(rows, out_dir / "predictions.csv", ["case_id", "finding_id", "label"]
                  + [f"p{k}" for k in range(self.conf.num_outputs)])
        return {"findings": rows, "auc": auc(labels, probs) if len(rows) else float("nan"), "n_findings": len(rows)}
