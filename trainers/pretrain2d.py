"""Pretrainer2D: the mammogram stage (`xtlunet pretrain-2d`), a 2D classifier or segmenter whose encoder XTL carries into 3D."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from xtlunet.utils.console import progress_bar

import xtlunet
from xtlunet.dataset.io import read_header
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.networks.build import build_network
from xtlunet.networks.description import FAMILIES, ArchitectureDescription, family_description
from xtlunet.planners.default import plain_architecture
from xtlunet.pretrain.data import NORMALIZATION, ImageSet, load_image_set, validation_split
from xtlunet.training.augmentation import build_augmentation
from xtlunet.training.checkpoint import save_checkpoint
from xtlunet.transfer.checkpoint import FORMAT_VERSION, NO_INIT, chain_step
from xtlunet.utils.atomic import sweep_partial_files
from xtlunet.utils.device import pick_device, seed_everything
from xtlunet.training.losses import DeepSupervisionLoss, DiceCELoss, classification_loss, downsample_targets
from xtlunet.metrics import auc, confusion_counts, pseudo_dice
from xtlunet.training.optim import EarlyStopping, apply_schedule, poly, sgd
from xtlunet.training.step import TrainStep, place_network
from xtlunet.training.progress import Progress

log = logging.getLogger("xtlunet")


# `--budget`: "full" fits a mammogram set of a few thousand images (nnU-Net-like length, images up to 512 px,
# early stopping on the validation metric); "tiny" is for tests and the demo. Explicit options override either.
BUDGETS: dict[str, dict[str, Any]] = {
    "full": {"epochs": 100, "iters_per_epoch": 250, "max_side": 512, "patience": 15},
    "tiny": {"epochs": 4, "iters_per_epoch": 10, "max_side": 128, "patience": None},
}
ENCODER_LR_FACTOR_INIT = 0.1   # an ImageNet-initialised encoder learns at 0.1× (its features are kept, then tuned)


@dataclass
class PretrainConfig:
    """Everything `pretrain-2d` needs; the CLI fills it from its arguments (None: from the budget / the init)."""

    dataset_root: Path
    arch: str
    output: Path
    task: str = "classification"
    init: Path | None = None
    budget: str = "full"
    epochs: int | None = None
    iters_per_epoch: int | None = None
    batch_size: int = 16
    input_size: list[int] | None = None
    max_side: int | None = None
    lr: float = 1e-2
    momentum: float | None = None          # 0.99 from random weights (nnU-Net), 0.9 from --init weights
    patience: int | None = None            # epochs without a better validation metric before stopping
    val_fraction: float = 0.2
    device: str = "auto"
    seed: int = 0
    num_workers: int = 1

    def resolved(self) -> "PretrainConfig":
        """A copy with every None filled from the budget and the initialisation."""
        look_up_option(self.budget, list(BUDGETS), "budget")
        budget = BUDGETS[self.budget]
        fill = {k: budget[k] for k in ("epochs", "iters_per_epoch", "max_side") if getattr(self, k) is None}
        if self.patience is None and self.epochs is None:
            fill["patience"] = budget["patience"]
        if self.momentum is None:
            fill["momentum"] = 0.9 if self.init is not None else 0.99
        return dataclasses.replace(self, **fill)


def image_shapes(spec: DatasetSpec) -> np.ndarray:
    """(N, 2) shapes of the training images, from headers only."""
    return np.array([list(read_header(c.image_files[0]).shape[-2:]) for c in spec.cases("Tr")])


def check_pretraining_dataset(spec: DatasetSpec, task: str) -> None:
    """Refuse a 3D dataset, or one without the labels the task needs."""
    from xtlunet.dataset.integrity import dataset_dimension

    if dataset_dimension(spec) != 2:
        raise XtlunetError(f"pretrain-2d needs a 2D dataset; {spec.name} is 3D", path=spec.json_path,
                           fix="point -d at a 2D dataset (e.g. 'xtlunet example mammo')")
    if task == "classification" and not spec.is_classification:
        raise XtlunetError("classification pretraining needs whole-image labels", path=spec.json_path,
                           fix="add \"task\": \"classification\", \"classes\" and a findings.csv, or use --task segmentation")
    if task == "segmentation" and not (spec.root / "labelsTr").is_dir():
        raise XtlunetError("segmentation pretraining needs masks", path=spec.root / "labelsTr", fix="add 2D masks to labelsTr")


def planned_input_size(shapes: np.ndarray, max_side: int, divisor: int) -> list[int]:
    """Median aspect ratio, longer side ≤ max_side, both sides multiples of the network's stride."""
    med = np.median(shapes, axis=0)
    scale = min(1.0, max_side / med.max())
    return [int(max(divisor, round(s * scale / divisor) * divisor)) for s in med]


def description_2d(arch: str, in_channels: int, size: list[int]) -> ArchitectureDescription:
    """The 2D encoder description for a family (plain: planned for the input size, nnU-Net-like)."""
    look_up_option(arch, FAMILIES, "architecture")
    if arch != "plain":
        return family_description(arch, 2, in_channels)
    return plain_architecture([1.0, 1.0], size, in_channels)


class Pretrainer2D:
    """Trains a 2D network on a 2D dataset; writes a checkpoint that the XTL planner and trainers read."""

    def __init__(self, cfg: PretrainConfig) -> None:
        look_up_option(cfg.task, ("classification", "segmentation"), "task")
        cfg = cfg.resolved()
        self.cfg = cfg
        self.spec = DatasetSpec.load(cfg.dataset_root)
        check_pretraining_dataset(self.spec, cfg.task)
        self.device = pick_device(cfg.device)
        if cfg.init is not None and not Path(cfg.init).is_file():
            raise XtlunetError("--init checkpoint not found (nothing is downloaded)", path=cfg.init,
                               fix="give a local torchvision-format state dict, e.g. saved from torchvision.models")
        seed_everything(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        probe = description_2d(cfg.arch, self.spec.num_channels, cfg.input_size or [cfg.max_side, cfg.max_side])
        divisor = int(np.prod([s[0] for s in probe.strides]))
        self.size = cfg.input_size or planned_input_size(image_shapes(self.spec), cfg.max_side, divisor)
        if any(s % divisor for s in self.size):
            raise XtlunetError(f"--input-size {self.size} is not divisible by the network's stride {divisor}",
                               fix=f"use multiples of {divisor}")
        self.desc = description_2d(cfg.arch, self.spec.num_channels, self.size)
        self.num_classes = len(self.spec.classes) if cfg.task == "classification" else len(self.spec.label_values())
        self.net = place_network(build_network(self.desc, cfg.task, self.num_classes), self.device)
        self.init_report = self._initialise()
        self.progress = Progress(cfg.output.with_name(cfg.output.stem + "_training_log.txt"),
                                 cfg.output.with_name(cfg.output.stem + "_progress.png"),
                                 "val_auc" if cfg.task == "classification" else "val_dice")

    def _initialise(self) -> str | None:
        """Load the --init (e.g. ImageNet) weights into the encoder; returns the transfer summary."""
        if self.cfg.init is None:
            return None
        from xtlunet.transfer.apply import transfer_weights

        report = transfer_weights(Path(self.cfg.init), self.net, mode="inflate", min_encoder_coverage=0.9,
                                  source_family=self.cfg.arch if self.cfg.arch != "plain" else None)
        log.info(report.summary())
        return report.summary()

    # ---- batches ----
    def _sample(self, data: ImageSet) -> np.ndarray:
        """Batch indices: class-balanced for classification, half with foreground for segmentation."""
        n, b = len(data.case_ids), self.cfg.batch_size
        if data.labels is not None:
            classes = np.unique(data.labels)
            picks = self.rng.choice(classes, b)
            return np.array([self.rng.choice(np.flatnonzero(data.labels == c)) for c in picks])
        fg = np.flatnonzero(data.masks.reshape(n, -1).max(1) > 0)
        idx = self.rng.integers(0, n, b)
        if len(fg):
            half = self.rng.random(b) < 0.5
            idx[half] = self.rng.choice(fg, half.sum())
        return idx

    def _batch(self, data: ImageSet, idx: np.ndarray, augment: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """An augmented batch as tensors on the device."""
        x = data.images[idx].astype(np.float32)
        seg = None if data.masks is None else data.masks[idx][:, None].astype(np.float32)
        out = augment(data=x, seg=seg) if seg is not None else augment(data=x)
        xt = torch.from_numpy(np.ascontiguousarray(out["data"])).float().to(self.device)
        if seg is None:
            return xt, torch.from_numpy(data.labels[idx]).long().to(self.device)
        return xt, torch.from_numpy(np.ascontiguousarray(out["seg"][:, 0])).long().to(self.device)

    def _loss(self) -> torch.nn.Module:
        """Cross-entropy (classification) or deep-supervised Dice + CE (segmentation)."""
        if self.cfg.task == "classification":
            return classification_loss()
        return DeepSupervisionLoss(DiceCELoss(), len(self.net.deep_supervision_scales()))

    def _targets(self, y: torch.Tensor) -> Any:
        """Targets per deep-supervision scale for segmentation; labels for classification."""
        if self.cfg.task == "classification":
            return y
        return downsample_targets(y, self.net.deep_supervision_scales())

    # ---- loop ----
    def run(self) -> dict[str, Any]:
        """Load data, train, validate every epoch, write the checkpoint; returns the provenance."""
        cfg = self.cfg
        sweep_partial_files(cfg.output.parent)  # temp files a killed run left beside the checkpoint
        data = load_image_set(self.spec, cfg.task, self.size, cfg.num_workers)
        tr_idx, va_idx = validation_split(data, cfg.val_fraction, cfg.seed)
        train, val = data.subset(tr_idx), data.subset(va_idx)
        self.progress.message(f"pretrain-2d {cfg.arch} ({cfg.task}) on {self.spec.name}: {len(tr_idx)} train / "
                              f"{len(va_idx)} validation images of {self.size}, device {self.device}")
        if self.init_report:
            self.progress.message(self.init_report)
        augment = build_augmentation(self.size, with_seg=cfg.task == "segmentation")
        loss_fn = self._loss().to(self.device)
        opt = self.optimizer()
        train_step = TrainStep(self.net, loss_fn, opt, self.device, grad_clip=12.0)
        best = EarlyStopping(cfg.patience)
        for epoch in range(cfg.epochs):
            t0 = time.time()
            self.net.train()
            losses = []
            lr = apply_schedule(opt, poly, epoch, cfg.epochs)   # per epoch, as fold training
            for _ in progress_bar(range(cfg.iters_per_epoch), desc=f"epoch {epoch}", unit="it", leave=False):
                x, y = self._batch(train, self._sample(train), augment)
                losses.append(train_step(x, self._targets(y)))
            val_loss, metric = self.validate(val, loss_fn, train_step.autocast)
            line = self.progress.add({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                                      "metric": metric, "lr": lr, "epoch_time": time.time() - t0})
            log.info(line)
            if best.update(epoch, metric, self.net):
                self.progress.message(f"early stop after epoch {epoch}: no better {self.progress.metric_name} in "
                                      f"{cfg.patience} epochs; keeping epoch {best.epoch}")
                break
        best.restore(self.net)
        return self.save(len(tr_idx), len(va_idx), best)

    def optimizer(self) -> torch.optim.Optimizer:
        """SGD Nesterov; from --init weights the encoder learns at ENCODER_LR_FACTOR_INIT × lr."""
        from xtlunet.networks.build import parameter_group

        factor = ENCODER_LR_FACTOR_INIT if self.cfg.init is not None else 1.0
        params = list(self.net.named_parameters())
        groups = [{"params": [p for n, p in params if parameter_group(n) == "encoder"], "lr": self.cfg.lr * factor},
                  {"params": [p for n, p in params if parameter_group(n) != "encoder"], "lr": self.cfg.lr}]
        return sgd(groups, lr=self.cfg.lr, momentum=self.cfg.momentum)

    @torch.no_grad()
    def validate(self, val: ImageSet, loss_fn: torch.nn.Module, amp: Any) -> tuple[float, float]:
        """Validation loss and AUC (classification) or foreground Dice (segmentation), no augmentation."""
        self.net.eval()
        losses, probs, counts = [], [], 0
        for start in range(0, len(val.case_ids), self.cfg.batch_size):
            sl = slice(start, start + self.cfg.batch_size)
            x = torch.from_numpy(val.images[sl]).float().to(self.device)
            with amp:
                out = self.net(x)
            if self.cfg.task == "classification":
                y = torch.from_numpy(val.labels[sl]).long().to(self.device)
                losses.append(float(loss_fn(out.float(), y)))
                probs.append(torch.softmax(out.float(), 1).cpu().numpy())
            else:
                y = torch.from_numpy(val.masks[sl]).long().to(self.device)
                losses.append(float(loss_fn(out.float(), [y])))
                pred = out.argmax(1).cpu().numpy()
                counts = counts + confusion_counts(pred, val.masks[sl], list(range(1, self.num_classes)))
        if self.cfg.task == "classification":
            return float(np.mean(losses)), auc(val.labels, np.concatenate(probs))
        return float(np.mean(losses)), float(np.nanmean(pseudo_dice(*counts)))

    def save(self, n_train: int, n_val: int, best: "EarlyStopping") -> dict[str, Any]:
        """Write the checkpoint (the best epoch's weights): architecture, normalisation, provenance, format version."""
        metric = self.progress.metric_name
        hist = [r["metric"] for r in self.progress.records]
        provenance = {
            "dataset": self.spec.name, "task": self.cfg.task, "epochs": self.cfg.epochs,
            "iters_per_epoch": self.cfg.iters_per_epoch, "batch_size": self.cfg.batch_size, "budget": self.cfg.budget,
            "epochs_run": len(self.progress.records),
            "kept_epoch": best.epoch if best.epoch >= 0 else len(self.progress.records) - 1,   # no metric: the last
            "patience": self.cfg.patience,
            "momentum": self.cfg.momentum, "input_size": list(self.size),
            "lr": {"encoder": self.cfg.lr * (ENCODER_LR_FACTOR_INIT if self.cfg.init else 1.0), "rest": self.cfg.lr},
            "train_images": n_train, "val_images": n_val, "init": str(self.cfg.init) if self.cfg.init else None,
            "init_chain": [chain_step("imagenet", self.cfg.init)] if self.cfg.init else [NO_INIT],
            "init_report": self.init_report, "metric": metric, "metric_history": hist,
            "final_metric": hist[-1] if hist else float("nan"),
            "best_metric": float(np.nanmax(hist)) if hist and not np.all(np.isnan(hist)) else float("nan"),
            "xtlunet_version": xtlunet.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.cfg).items()},
        }
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        save_checkpoint(self.cfg.output, {
            "format_version": FORMAT_VERSION, "state_dict": state, "architecture": self.desc.to_json(),
            "task": self.cfg.task, "num_classes": self.num_classes,
            "classes": dict(self.spec.classes) if self.cfg.task == "classification" else dict(self.spec.labels),
            "normalization": {"method": NORMALIZATION, "input_size": list(self.size),
                              "channels": {str(k): v for k, v in self.spec.channel_names.items()}},
            "provenance": provenance})
        self.progress.message(f"checkpoint written: {self.cfg.output}")
        return provenance
