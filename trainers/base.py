"""Trainer: the composition root of a fold's run.

It assembles the parts — network, initialiser, loss, augmentation, optimiser, schedule, frozen
parameters — hands them to the one `Loop`, which never calls back, and validates the trained fold
afterwards (`xtlunet.validation`). An arm or a user's trainer overrides a hook or an attribute:

    class CosineTrainer(ScratchTrainer):
        def schedule(self):
            return cosine

Every hook defaults to the configuration's task (segmentation or classification).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from xtlunet.cascade.previous import PreviousStage, note_input_channels, previous_stage
from xtlunet.errors import XtlunetError
from xtlunet.networks.build import build_network, parameter_group
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.augmentation import AugmentationConfig, augmentation_config
from xtlunet.training.checkpoint import resume_checkpoint, run_recipe
from xtlunet.training.context import TrainingContext, load_context
from xtlunet.training.data import CaseArrays
from xtlunet.training.loop import Loop, end_process, start_process
from xtlunet.training.optim import Schedule, poly, sgd
from xtlunet.training.parts import BatchTask, TrainingParts
from xtlunet.training.run_spec import RunSpec
from xtlunet.transfer.report import TransferReport
from xtlunet.utils.atomic import read_json, write_json

log = logging.getLogger("xtlunet")


class Trainer:
    """Base trainer: random initialisation, the task's loss and augmentation, nnU-Net's SGD and poly schedule."""

    initial_lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    encoder_lr_factor: float = 1.0    # learning-rate factor of the encoder's parameters (transfer arms: 0.1)
    freeze_fraction: float = 0.0      # fraction of the epochs with the encoder frozen (transfer arms: 0.1)
    label_smoothing: float = 0.0
    needs_pretrained: bool = False
    previous_trainer: str | None = None   # a cascade stage follows this trainer's lowres model (None: its own)

    def __init__(self, run: RunSpec, ctx: TrainingContext | None = None, plans: Plans | None = None) -> None:
        """A fold's trainer (its context resolved from the run, or given); with `plans` only, hooks without data."""
        self.run = run
        self.ctx = None if plans is not None else (ctx if ctx is not None else load_context(run, self.name))
        self.plans: Plans = plans if plans is not None else self.ctx.plans
        self.conf: ConfigurationPlan = self.plans.configuration(run.configuration)
        self.previous: PreviousStage | None = None
        if run.previous_trainer and self.conf.previous_stage is None:
            raise XtlunetError(f"--previous-trainer is for a cascade stage; {self.conf.name} follows no previous "
                               "stage", fix="drop --previous-trainer, or train 3d_cascade_fullres")
        if self.ctx is not None:
            # a cascade stage needs every lowres prediction it reads: refused here, before any file is written
            follows = (run.previous_trainer or "").replace(":", ".").rpartition(".")[2] or self.previous_trainer
            self.previous = previous_stage(self.ctx, self.name, run.fold, follows)
            self.check_pretrained()
            if run.continue_training:  # up front: a missing or foreign checkpoint is refused before anything starts
                resume_checkpoint(self.ctx.out_dir, self.name, self.plans.identity(), run_recipe(run))

    @classmethod
    def for_plans(cls, run: RunSpec, plans: Plans) -> "Trainer":
        """A trainer whose hooks work without a preprocessed dataset (benchmarks, tests); it cannot fit()."""
        return cls(run, plans=plans)

    @property
    def name(self) -> str:
        """The trainer's class name (its results folder is named after it)."""
        return type(self).__name__

    # ---- hooks: override any of these ----
    def check_pretrained(self) -> None:
        """Refuse --pretrained for an arm that ignores it."""
        if self.run.pretrained is not None and not self.needs_pretrained:
            raise XtlunetError(f"{self.name} trains from random initialisation and takes no --pretrained",
                               fix="drop --pretrained, or use -tr TLTrainer / XTLTrainer")

    def build_network(self) -> nn.Module:
        """The planned network for this configuration's task."""
        return build_network(self.conf.network(), self.conf.task, self.conf.num_outputs)

    def initialise(self, net: nn.Module) -> TransferReport | None:
        """Initial weights beyond the network's own (none: random init)."""
        return None

    def augmentation(self) -> AugmentationConfig:
        """Training augmentation (its mirror axes are also the test-time mirroring axes)."""
        return augmentation_config(self.conf)

    def task(self, train: list[CaseArrays], val: list[CaseArrays]) -> BatchTask:
        """Segmentation or classification batches and validation, by the configuration's task."""
        if self.conf.task == "classification":
            from xtlunet.training.tasks.classification import ClassificationTask

            return ClassificationTask(self.plans, self.conf, train, val, self.augmentation())
        from xtlunet.training.tasks.segmentation import SegmentationTask

        return SegmentationTask(self.plans, self.conf, train, val, self.augmentation())

    def loss(self, net: nn.Module) -> nn.Module:
        """The task's loss (deep-supervised Dice+CE, Dice as the plan's batch_dice says, or cross-entropy); per-epoch
        validation uses it too."""
        if self.conf.task == "classification":
            from xtlunet.training.tasks.classification import ClassificationTask

            return ClassificationTask.loss(net, self.label_smoothing)
        from xtlunet.training.tasks.segmentation import SegmentationTask

        return SegmentationTask.loss(net, self.conf.batch_dice)

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """SGD Nesterov; the encoder in its own group at encoder_lr_factor × the learning rate."""
        enc = [p for n, p in net.named_parameters() if parameter_group(n) == "encoder"]
        rest = [p for n, p in net.named_parameters() if parameter_group(n) != "encoder"]
        groups = [{"params": enc, "lr": self.initial_lr * self.encoder_lr_factor}, {"params": rest}]
        return sgd(groups, lr=self.initial_lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def schedule(self) -> Schedule:
        """Learning-rate factor per step: nnU-Net's poly decay."""
        return poly

    def frozen_parameters(self, net: nn.Module) -> list[nn.Parameter]:
        """Parameters held fixed for the first freeze_fraction of the epochs (the encoder when freezing)."""
        if self.freeze_fraction <= 0:
            return []
        return [p for n, p in net.named_parameters() if parameter_group(n) == "encoder"]

    # ---- assembly ----
    def cases(self, ids: list[str]) -> list[CaseArrays]:
        """The cases' arrays (memory-mapped), with a cascade stage's previous-stage labels."""
        cases = self.ctx.load(ids)
        return cases if self.previous is None else self.previous.attach(cases)

    def _initialise(self, net: nn.Module) -> TransferReport | None:
        """The `initialise` hook; a cascade's transfer report also says which input channels are which."""
        report = self.initialise(net)
        return report if self.previous is None else note_input_channels(report, net, self.plans, self.conf)

    def parts(self, train: list[CaseArrays], val: list[CaseArrays]) -> TrainingParts:
        """Every part the Loop needs, built once from the hooks."""
        net = self.build_network()
        return TrainingParts(trainer=self.name, network=net, task=self.task(train, val), loss=self.loss(net),
                             optimizer=self.optimizer, schedule=self.schedule(), initialise=self._initialise,
                             frozen=self.frozen_parameters(net),
                             freeze_epochs=int(round(self.freeze_fraction * self.run.epochs)),
                             grad_clip=self.grad_clip)

    def check_model_folder_plans(self) -> None:
        """Refuse to train into a model folder whose other folds were trained with different plans."""
        path = self.ctx.model_dir / "plans.json"
        if not path.is_file() or Plans.load(path).identity() == self.plans.identity():
            return
        others = sorted(p.parent.name for p in self.ctx.model_dir.glob("fold_*/checkpoint_*.pth")
                        if p.parent.name != self.run.fold_name)
        if others:
            raise XtlunetError(f"the plans changed since {', '.join(sorted(set(others)))} of this model were trained",
                               path=self.ctx.model_dir, fix="re-plan with another --plans-name, or delete the "
                               "model folder to train every fold anew")

    def fit(self) -> dict[str, Any]:
        """Train this fold, then validate it; the model folder gets the plans and dataset.json predict needs.

        The network is initialised (transfer) or restored (--continue) first, so a refused run writes no file.
        """
        if self.ctx is None:
            raise XtlunetError(f"{self.name} was built without a dataset", fix="build it with Trainer(run)")
        self.check_model_folder_plans()
        proc = start_process(self.run)
        ctx = self.ctx
        loop = Loop(self.parts(self.cases(ctx.train_ids), self.cases(ctx.val_ids)), self.run, ctx, proc)
        try:
            loop.prepare()
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
            self.plans.save(ctx.model_dir / "plans.json")
            write_json(ctx.model_dir / "dataset.json", read_json(ctx.pre_dir / "dataset.json"))
            if self.previous is not None:
                self.previous.save_record(ctx.model_dir)
            net = loop.fit()
            if not (self.run.final_validation and proc.dist.is_main and ctx.val_ids):
                return {}
            return self.validate(net, proc.device, loop, loop.parts.task.mirror_axes)
        finally:
            end_process(proc)

    def validate(self, net: nn.Module, device: torch.device, loop: Loop, mirror_axes: tuple[int, ...]) -> dict[str, Any]:
        """Final validation of the held-out cases (validation/), then the model folder's cv_summary.json."""
        from xtlunet.cascade.next_stage import next_stage_writer
        from xtlunet.validation import validate_fold, write_cv_summary

        ctx = self.ctx
        net.eval()
        cases = ctx.load(ctx.val_ids) if self.previous is None else self.previous.stacked(ctx.load(ctx.val_ids))
        summary = validate_fold([net], cases, self.plans, self.conf, ctx.spec,
                                ctx.out_dir / "validation", ctx.pre_dir / "gt_segmentations", device,
                                mirror_axes if self.run.validation_tta else (), self.run.step_size,
                                {"trainer": self.name, "fold": str(self.run.fold), "configuration": self.conf.name,
                                 "plans": self.plans.plans_name}, loop.step.autocast,
                                next_stage=next_stage_writer(self.plans, self.conf, ctx.pre_dir, ctx.model_dir),
                                save_probabilities=self.run.val_probabilities)
        write_cv_summary(ctx.model_dir)
        loop.progress.message(f"final validation: {summary.one_line()}")
        log.info("final validation: %s", summary.one_line())
        return summary.to_json()
