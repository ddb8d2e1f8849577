"""The training loop: epochs of scheduled steps, per-epoch validation, checkpoints, resume.

`Loop(parts, run, ctx, process)` trains the network in `parts` (built by a trainer) and never calls back
into the trainer: what it needs is in the parts, the run spec and the fold's context.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xtlunet.errors import XtlunetError, noun, plural
from xtlunet.networks.build import unwrap
from xtlunet.training import distributed
from xtlunet.training.checkpoint import (CHECKPOINT_KIND, resume_checkpoint, rng_state, run_recipe, save_checkpoint,
                                         set_rng_state)
from xtlunet.training.context import TrainingContext
from xtlunet.training.data import num_augmentation_workers, rank_share
from xtlunet.training.optim import apply_schedule
from xtlunet.training.parts import TrainingParts
from xtlunet.training.progress import Progress
from xtlunet.training.run_spec import RunSpec
from xtlunet.training.step import TrainStep, device_batches, place_network
from xtlunet.utils.console import progress_bar
from xtlunet.utils.device import pick_device, seed_everything

log = logging.getLogger("xtlunet")


@dataclass
class Process:
    """This process's place in the run: distributed rank/world and its device."""

    dist: distributed.DistInfo
    device: torch.device


def start_process(run: RunSpec) -> Process:
    """Join the process group (when launched with several), pick the device and seed this rank."""
    dist = distributed.from_env()
    base = pick_device(run.device)
    device = torch.device("cuda", dist.local_rank) if base.type == "cuda" else base
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed.init(dist, device)
    seed_everything(run.seed + 1000 * dist.rank)
    return Process(dist, device)


def end_process(proc: Process) -> None:
    """Leave the process group. No barrier: the ranks met after the final checkpoint, and the other ranks must not
    wait (into NCCL's collective timeout) while rank 0 runs the final validation."""
    distributed.shutdown(proc.dist)


class Loop:
    """One fold's training run from its parts."""

    def __init__(self, parts: TrainingParts, run: RunSpec, ctx: TrainingContext, proc: Process) -> None:
        self.parts, self.run, self.ctx = parts, run, ctx
        self.dist, self.device = proc.dist, proc.device
        self.out = ctx.out_dir
        self.net = place_network(parts.network, self.device, run.channels_last)
        self.loss_fn = parts.loss.to(self.device)
        self.optimizer = parts.optimizer(self.net)
        self.step = TrainStep(self._wrap(), self.loss_fn, self.optimizer, self.device, parts.grad_clip, parts.frozen)
        self.progress = Progress(self.out / "training_log.txt", self.out / "progress.png", parts.task.metric_name)
        self.start_epoch, self.best = 0, -math.inf
        self.recipe = run_recipe(run)

    # ---- start / resume ----
    def prepare(self) -> None:
        """Initialise (fresh run) or restore (--continue) the network, optimiser and state."""
        if self.run.continue_training:
            self._restore()
            return
        report = self.parts.initialise(self.net)
        if report is not None and self.dist.is_main:
            report.save(self.out / "transfer_report.json")
            self.progress.message(report.summary())
            log.info(report.summary())

    def _restore(self) -> None:
        """Load checkpoint_latest (or _final) and continue exactly from its epoch."""
        path, ck = resume_checkpoint(self.out, self.parts.trainer, self.ctx.plans.identity(), self.recipe)
        self.net.load_state_dict(ck["network"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.step.load_state_dict(ck.get("grad_scaler"))
        self.start_epoch, self.best = int(ck["epoch"]), float(ck["best_metric"])
        self.progress.records = list(ck["progress"])
        set_rng_state(ck["rng"])
        self.progress.message(f"continuing from {path.name} at epoch {self.start_epoch}")

    def _save(self, name: str, epoch: int) -> None:
        """Write a checkpoint atomically (main process only)."""
        if not self.dist.is_main:
            return
        conf = self.ctx.conf
        save_checkpoint(self.out / name, {
            "kind": CHECKPOINT_KIND, "network": unwrap(self.net).state_dict(), "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.step.state_dict(), "epoch": epoch, "best_metric": self.best,
            "progress": self.progress.state(), "rng": rng_state(), "plans_identity": self.ctx.plans.identity(),
            "plans_name": self.ctx.plans.plans_name, "configuration": conf.name, "trainer": self.parts.trainer,
            "fold": str(self.run.fold), "recipe": self.recipe, "architecture": conf.architecture, "task": conf.task,
            "inference": {"mirror_axes": list(self.parts.task.mirror_axes), "num_outputs": conf.num_outputs}})

    # ---- the loop ----
    def fit(self) -> torch.nn.Module:
        """Train the remaining epochs (after `prepare`); returns the trained network (unwrapped)."""
        per_rank, forced = rank_share(self.ctx.conf.batch_size, self.dist.world, self.dist.rank)
        workers = num_augmentation_workers(self.device.type)
        batches = self.parts.task.batches(per_rank, workers,
                                          self.run.seed + 100 * self.start_epoch + 10000 * self.dist.rank, forced)
        if self.dist.is_main:
            self.progress.message(f"{self.parts.trainer} {self.ctx.spec.name} {self.ctx.conf.name} fold "
                                  f"{self.run.fold}: {len(self.ctx.train_ids)} train / {len(self.ctx.val_ids)} val "
                                  f"{noun(len(self.ctx.val_ids), 'case')}, device {self.device}, "
                                  f"{plural(self.dist.world, 'process', 'processes')}, "
                                  f"{plural(workers, 'augmentation worker')}")
        stream = device_batches(batches, self.device, workers)
        try:
            for epoch in range(self.start_epoch, self.run.epochs):
                self._epoch(epoch, stream)
        finally:
            if stream is not batches:   # the reading-ahead thread first ends its fetch in flight
                stream.close()
            if hasattr(batches, "_finish"):
                batches._finish()
        if self.start_epoch < self.run.epochs or not (self.out / "checkpoint_final.pth").is_file():
            self._save("checkpoint_final.pth", self.run.epochs)   # not rewritten when resumed from a finished run
        if self.dist.is_main:   # the final checkpoint supersedes it (as nnU-Net): one full copy less per fold
            (self.out / "checkpoint_latest.pth").unlink(missing_ok=True)
        distributed.barrier(self.dist)   # the last collective: rank 0 alone validates afterwards, nobody waits on it
        return self.net

    def _wrap(self) -> torch.nn.Module:
        """DDP and/or torch.compile around the network, as asked."""
        model = self.net
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            if self.device.type == "cuda":  # batch norm (--transfer-norm batch) over the global batch; in place
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
        if self.run.compile:
            model = torch.compile(model)
        return model

    def _epoch(self, epoch: int, batches: Any) -> None:
        """One epoch of training steps, validation, logging and checkpoints."""
        t0 = time.time()
        frozen = epoch < self.parts.freeze_epochs
        lr = apply_schedule(self.optimizer, self.parts.schedule, epoch, self.run.epochs)   # per epoch, as nnU-Net
        self.step.model.train()
        losses = []
        with progress_bar(range(self.run.iters_per_epoch), desc=f"epoch {epoch}", unit="it", leave=False,
                          disable=not self.dist.is_main) as bar:
            for _ in bar:
                x, y = self.parts.task.to_device(self._next_batch(batches), self.net, self.device)
                losses.append(self.step(x, y, freeze=frozen))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_loss = distributed.mean_across(self.dist, float(np.mean(losses)))
        if not self.dist.is_main:
            distributed.barrier(self.dist)
            return
        val_loss, metric = self.parts.task.validate(self.net, self.loss_fn, self.device, self.run.val_iters,
                                                    self.ctx.conf.batch_size, epoch, self.step.autocast)
        line = self.progress.add({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "metric": metric,
                                  "lr": lr, "epoch_time": time.time() - t0})
        log.info(line + ("  (encoder frozen)" if frozen else ""))
        ema = self.progress.records[-1]["metric_ema"]
        if not np.isnan(ema) and ema > self.best:
            self.best = ema
            self._save("checkpoint_best.pth", epoch + 1)
        if (epoch + 1) % self.run.save_every == 0 or epoch + 1 == self.run.epochs:
            self._save("checkpoint_latest.pth", epoch + 1)
        distributed.barrier(self.dist)

    def _next_batch(self, batches: Any) -> dict[str, Any]:
        """The next augmented batch; a loader or worker failure becomes an error naming the case."""
        try:
            return next(batches)
        except RuntimeError as exc:
            # batchgenerators reports only "background workers are no longer alive" (the worker printed the
            # loader's "while loading case X: ..." above it): re-open the training cases here to name the broken one
            self.ctx.load(self.ctx.train_ids)
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            if "while loading case" in first:
                raise XtlunetError(first, path=self.ctx.data_dir,
                                   fix="re-run xtlunet plan-and-preprocess for this configuration") from None
            raise XtlunetError(f"data augmentation stopped: {first}", path=self.ctx.data_dir,
                               fix="read the worker's message above; set XTLUNET_n_proc_DA=0 to load in this "
                                   "process and see the case; re-run xtlunet plan-and-preprocess if a case is "
                                   "damaged") from None
