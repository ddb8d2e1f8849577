"""Trainer: a fold's run assembled from parts — network, initialiser, loss, optimiser, data, loop."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xtlunet.networks.build import build_network, parameter_group
from xtlunet.training.context import TrainingContext, load_context
from xtlunet.training.data import CaseArrays
from xtlunet.training.loop import Loop, resume_checkpoint
from xtlunet.training.optim import sgd
from xtlunet.training.run_spec import RunSpec
from xtlunet.transfer.report import TransferReport
from xtlunet.utils.atomic import read_json, write_json


class Trainer:
    """Base trainer: random initialisation and nnU-Net's optimiser. Arms override attributes or `initialise`."""

    initial_lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    encoder_lr_factor: float = 1.0    # learning-rate factor of pretrained (transferred) encoder parameters
    freeze_fraction: float = 0.0      # fraction of the epochs with the pretrained encoder frozen
    label_smoothing: float = 0.0
    needs_pretrained: bool = False

    def __init__(self, run: RunSpec) -> None:
        self.run = run
        self.ctx: TrainingContext = load_context(run, self.name)
        self.check_pretrained()
        if run.continue_training:
            resume_checkpoint(self)  # up front: a missing or foreign checkpoint is refused before anything starts

    @property
    def name(self) -> str:
        """The trainer's class name (its results folder is named after it)."""
        return type(self).__name__

    def check_pretrained(self) -> None:
        """Refuse --pretrained for an arm that ignores it."""
        from xtlunet.errors import XtlunetError

        if self.run.pretrained is not None and not self.needs_pretrained:
            raise XtlunetError(f"{self.name} trains from random initialisation and takes no --pretrained",
                               fix="drop --pretrained, or use -tr TLTrainer / XTLTrainer")

    def build_network(self) -> nn.Module:
        """The planned network for this configuration's task."""
        conf = self.ctx.conf
        return build_network(conf.network(), conf.task, conf.num_outputs)

    def initialise(self, net: nn.Module) -> TransferReport | None:
        """Initial weights beyond the network's own (none: random init)."""
        return None

    def make_task(self, train: list[CaseArrays], val: list[CaseArrays]) -> Any:
        """Segmentation or classification machinery, by the configuration's task."""
        conf, plans = self.ctx.conf, self.ctx.plans
        if conf.task == "classification":
            from xtlunet.training.tasks.classification import ClassificationTask

            return ClassificationTask(plans, conf, train, val, self.label_smoothing)
        from xtlunet.training.tasks.segmentation import SegmentationTask

        return SegmentationTask(plans, conf, train, val)

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """SGD Nesterov; encoder parameters of transfer arms in their own group at a lower lr."""
        pretrained = self.encoder_lr_factor != 1.0 or self.freeze_fraction > 0
        enc = [p for n, p in net.named_parameters() if parameter_group(n) == "encoder"]
        rest = [p for n, p in net.named_parameters() if parameter_group(n) != "encoder"]
        groups = [{"params": enc, "initial_lr": self.initial_lr * self.encoder_lr_factor, "pretrained": pretrained},
                  {"params": rest, "initial_lr": self.initial_lr, "pretrained": False}]
        for g in groups:
            g["lr"] = g["initial_lr"]
        return sgd(groups, lr=self.initial_lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def check_model_folder_plans(self) -> None:
        """Refuse to train into a model folder whose other folds were trained with different plans."""
        from xtlunet.errors import XtlunetError
        from xtlunet.plans import Plans

        path = self.ctx.model_dir / "plans.json"
        if not path.is_file() or Plans.load(path).identity() == self.ctx.plans.identity():
            return
        others = sorted(p.parent.name for p in self.ctx.model_dir.glob("fold_*/checkpoint_*.pth")
                        if p.parent.name != self.run.fold_name)
        if others:
            raise XtlunetError(f"the plans changed since {', '.join(sorted(set(others)))} of this model were trained",
                               path=self.ctx.model_dir, fix="re-plan with another --plans-name, or delete the "
                               "model folder to train every fold anew")

    def fit(self) -> dict[str, Any]:
        """Train this fold and validate it; the model folder gets the plans and dataset.json predict needs.

        The network is initialised (transfer) or restored (--continue) first, so a refused run writes no file.
        """
        self.check_model_folder_plans()
        loop = Loop(self)
        opt = loop.prepare()
        self.ctx.out_dir.mkdir(parents=True, exist_ok=True)
        self.ctx.plans.save(self.ctx.model_dir / "plans.json")
        write_json(self.ctx.model_dir / "dataset.json", read_json(self.ctx.pre_dir / "dataset.json"))
        return loop.fit(opt)
