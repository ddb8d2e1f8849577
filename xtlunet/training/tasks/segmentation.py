"""Segmentation machinery: oversampled patches, Dice+CE with deep supervision, pseudo-Dice, full validation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.data import CaseArrays, SegmentationBatches
from xtlunet.training.losses import DeepSupervisionLoss, DiceCELoss, downsample_targets
from xtlunet.training.metrics import confusion_counts, pseudo_dice
from xtlunet.training.tasks.common import augmentation_config, batch_stream, extract_size


class SegmentationTask:
    """The parts a segmentation trainer swaps in."""

    metric_name = "pseudo_dice"

    def __init__(self, plans: Plans, conf: ConfigurationPlan, train: list[CaseArrays], val: list[CaseArrays]) -> None:
        self.plans, self.conf, self.train, self.val = plans, conf, train, val
        self.aug = augmentation_config(conf)
        self.labels = [v for v in sorted(set(plans.labels.values())) if v != 0]

    def mirror_axes(self) -> list[int]:
        """Spatial axes mirrored in augmentation, hence usable for test-time mirroring."""
        return list(range(self.conf.dim))

    def loss(self, net: nn.Module) -> nn.Module:
        """Dice + CE over every deep-supervision output, weights halving per scale."""
        return DeepSupervisionLoss(DiceCELoss(), len(net.deep_supervision_scales()))

    def batches(self, batch_size: int, workers: int, seed: int) -> Iterator[dict[str, Any]]:
        """Augmented training batches."""
        loader = SegmentationBatches(self.train, self.conf.patch_size, batch_size, extract_size(self.conf, self.aug))
        return batch_stream(loader, self.conf, self.aug, workers, seed, with_seg=True)

    def to_device(self, batch: dict[str, Any], net: nn.Module, device: torch.device) -> tuple[torch.Tensor, Any]:
        """Input tensor and the target pyramid for deep supervision."""
        x = torch.from_numpy(np.ascontiguousarray(batch["data"])).to(device, non_blocking=True)
        seg = torch.from_numpy(np.ascontiguousarray(batch["seg"][:, 0])).round().long().to(device, non_blocking=True)
        return x, downsample_targets(seg, net.deep_supervision_scales())

    @torch.no_grad()
    def validate(self, net: nn.Module, device: torch.device, iters: int, batch_size: int, epoch: int,
                 autocast: Any) -> tuple[float, float]:
        """Validation loss and pseudo-Dice (mean over foreground classes) over sampled validation patches."""
        if not self.val or iters <= 0:
            return float("nan"), float("nan")
        net.eval()
        rng = np.random.default_rng(epoch)
        state = np.random.get_state()
        np.random.seed(int(rng.integers(2 ** 31)))
        loader = SegmentationBatches(self.val, self.conf.patch_size, batch_size, self.conf.patch_size)
        loss_fn = DiceCELoss()
        losses, counts = [], np.zeros((3, len(self.labels)))
        for _ in range(iters):
            b = loader.generate_train_batch()
            x = torch.from_numpy(b["data"]).to(device)
            y = torch.from_numpy(b["seg"][:, 0]).long().to(device)
            with autocast:
                out = net(x)
            losses.append(float(loss_fn(out.float(), y)))
            pred = out.argmax(1).cpu().numpy()
            ref = b["seg"][:, 0]
            pred[ref < 0] = 0
            counts += confusion_counts(pred, ref, self.labels)
        np.random.set_state(state)
        return float(np.mean(losses)), float(np.nanmean(pseudo_dice(*counts)))

    def final_validation(self, nets: list[nn.Module], out_dir: Path, raw_labels: Path, file_ending: str,
                         device: torch.device, step: float, tta: bool = True) -> dict[str, Any]:
        """Sliding-window prediction of each held-out case, exported in its original geometry, scored against the raw label."""
        from xtlunet.evaluation.segmentation_metrics import evaluate_case
        from xtlunet.inference import predict_case
        from xtlunet.inference.export import export_prediction
        from xtlunet.dataset.io import read_image

        rows, cases = [], []
        for case in self.val:
            probs = predict_case(nets, np.asarray(case.data), self.conf, self.plans, step=step, batch_windows=4,
                                 mirror_axes=tuple(self.mirror_axes()) if tta else (), device=device)
            pred = export_prediction(probs, case.props, self.plans, out_dir / f"{case.case_id}{file_ending}")
            ref, geo = read_image(raw_labels / f"{case.case_id}{file_ending}")
            metrics = evaluate_case(pred, ref, geo.spacing, self.labels)
            rows.append(metrics)
            cases.append({"case_id": case.case_id, **{str(k): v for k, v in metrics.items()}})
        return {"cases": cases, **summarise_cases(rows, self.labels)}


def summarise_cases(rows: list[dict[str, Any]], labels: list[int]) -> dict[str, Any]:
    """Mean Dice per class and pooled lesion-wise detection over validation cases."""
    from xtlunet.evaluation.segmentation_metrics import LesionCounts

    out: dict[str, Any] = {"mean_dice": {}, "lesion_detection": {}, "n_cases": len(rows)}
    for lab in labels:
        vals = [r[lab]["dice"] for r in rows if not np.isnan(r[lab]["dice"])]
        out["mean_dice"][str(lab)] = float(np.mean(vals)) if vals else float("nan")
        pooled = sum((LesionCounts(r[lab]["n_ref_lesions"], r[lab]["n_ref_detected"], r[lab]["n_pred_lesions"],
                                   r[lab]["n_pred_tp"]) for r in rows), LesionCounts(0, 0, 0, 0))
        out["lesion_detection"][str(lab)] = pooled.to_json()
    fg = [v for v in out["mean_dice"].values() if not np.isnan(v)]
    out["mean_dice_foreground"] = float(np.mean(fg)) if fg else float("nan")
    return out
