"""The training loop: epochs of poly-scheduled SGD steps, validation, checkpoints, resume, final validation."""
from __future__ import annotations

import logging
import math
import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from xtlunet.errors import XtlunetError
from xtlunet.networks.build import unwrap
from xtlunet.training import distributed
from xtlunet.training.checkpoint import load_checkpoint, save_checkpoint
from xtlunet.utils.device import autocast, pick_device, seed_everything
from xtlunet.training.progress import Progress
from xtlunet.training.data import num_augmentation_workers
from xtlunet.utils.atomic import write_json

if TYPE_CHECKING:
    from xtlunet.trainers.base import Trainer

log = logging.getLogger("xtlunet")
CHECKPOINT_KIND = "xtlunet-train"


def rng_state() -> dict[str, Any]:
    """Torch, numpy and Python RNG states in a weights_only-loadable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of rng_state."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))


def set_learning_rates(opt: torch.optim.Optimizer, step: int, total: int, frozen: bool) -> float:
    """Poly decay of every group's initial lr; pretrained groups get 0 while frozen. Returns the base lr."""
    factor = (1 - min(step, total) / max(total, 1)) ** 0.9
    for g in opt.param_groups:
        g["lr"] = 0.0 if (frozen and g.get("pretrained")) else g["initial_lr"] * factor
    return opt.param_groups[-1]["lr"]


def reset_momentum(opt: torch.optim.Optimizer) -> None:
    """Forget momentum of the pretrained groups (accumulated while they were frozen)."""
    for g in opt.param_groups:
        if g.get("pretrained"):
            for p in g["params"]:
                opt.state.get(p, {}).pop("momentum_buffer", None)


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 autocast (CUDA without bf16) needs loss scaling; bf16 and CPU do not."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


class Loop:
    """One fold's training run, assembled from a trainer's parts."""

    def __init__(self, trainer: "Trainer") -> None:
        self.t = trainer
        self.run, self.ctx = trainer.run, trainer.ctx
        self.dist = distributed.from_env()
        base = pick_device(self.run.device)
        self.device = torch.device("cuda", self.dist.local_rank) if base.type == "cuda" else base
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        distributed.init(self.dist, self.device)
        seed_everything(self.run.seed + 1000 * self.dist.rank)
        self.out = self.ctx.out_dir
        self.net = trainer.build_network().to(self.device)
        if self.run.channels_last and self.device.type == "cuda" and self.ctx.conf.dim == 3:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        self.task = trainer.make_task(self.ctx.load(self.ctx.train_ids), self.ctx.load(self.ctx.val_ids))
        self.progress = Progress(self.out / "training_log.txt", self.out / "progress.png", self.task.metric_name)
        self.start_epoch, self.best = 0, -math.inf
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(self.device))
        self.freeze_epochs = int(round(trainer.freeze_fraction * self.run.epochs))

    # ---- start / resume ----
    def prepare(self) -> torch.optim.Optimizer:
        """Initialise (fresh run) or restore (--continue) the network, optimiser and state."""
        opt = self.t.optimizer(self.net)
        if self.run.continue_training:
            self._restore(opt)
        else:
            report = self.t.initialise(self.net)
            if report is not None and self.dist.is_main:
                report.save(self.out / "transfer_report.json")
                self.progress.message(report.summary())
                log.info(report.summary())
        return opt

    def _restore(self, opt: torch.optim.Optimizer) -> None:
        """Load checkpoint_latest (or _final) and continue exactly from its epoch."""
        path, ck = resume_checkpoint(self.t)
        self.net.load_state_dict(ck["network"])
        opt.load_state_dict(ck["optimizer"])
        if ck.get("grad_scaler"):
            self.scaler.load_state_dict(ck["grad_scaler"])
        self.start_epoch, self.best = int(ck["epoch"]), float(ck["best_metric"])
        self.progress.records = list(ck["progress"])
        set_rng_state(ck["rng"])
        self.progress.message(f"continuing from {path.name} at epoch {self.start_epoch}")

    def _save(self, name: str, opt: torch.optim.Optimizer, epoch: int) -> None:
        """Write a checkpoint atomically (main process only)."""
        if not self.dist.is_main:
            return
        save_checkpoint(self.out / name, {
            "kind": CHECKPOINT_KIND, "network": unwrap(self.net).state_dict(), "optimizer": opt.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None, "epoch": epoch, "best_metric": self.best, "progress": self.progress.state(), "rng": rng_state(),
            "plans_identity": self.ctx.plans.identity(), "plans_name": self.ctx.plans.plans_name,
            "configuration": self.ctx.conf.name, "trainer": self.t.name, "fold": str(self.run.fold),
            "architecture": self.ctx.conf.architecture, "task": self.ctx.conf.task,
            "inference": {"mirror_axes": self.task.mirror_axes(), "num_outputs": self.ctx.conf.num_outputs}})

    # ---- the loop ----
    def fit(self, opt: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        """Train the remaining epochs (after `prepare`, which fit calls unless given its optimiser), then validate."""
        opt = self.prepare() if opt is None else opt
        model = self._wrap()
        loss_fn = self.task.loss(self.net).to(self.device)
        per_rank = max(1, math.ceil(self.ctx.conf.batch_size / self.dist.world))
        workers = num_augmentation_workers(self.device.type)
        batches = self.task.batches(per_rank, workers, self.run.seed + 100 * self.start_epoch + 10000 * self.dist.rank)
        total = self.run.epochs * self.run.iters_per_epoch
        amp = autocast(self.device)
        if self.dist.is_main:
            self.progress.message(f"{self.t.name} {self.ctx.spec.name} {self.ctx.conf.name} fold {self.run.fold}: "
                                  f"{len(self.ctx.train_ids)} train / {len(self.ctx.val_ids)} val cases, "
                                  f"device {self.device}, {self.dist.world} process(es), {workers} augmentation workers")
        try:
            for epoch in range(self.start_epoch, self.run.epochs):
                self._epoch(epoch, model, opt, loss_fn, batches, total, amp)
        finally:
            if hasattr(batches, "_finish"):
                batches._finish()
        self._save("checkpoint_final.pth", opt, self.run.epochs)
        result = self._final_validation() if self.run.final_validation and self.dist.is_main else {}
        distributed.barrier(self.dist)
        distributed.shutdown(self.dist)
        return result

    def _wrap(self) -> torch.nn.Module:
        """DDP and/or torch.compile around the network, as asked."""
        model = self.net
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
        if self.run.compile:
            model = torch.compile(model)
        return model

    def _epoch(self, epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: torch.nn.Module,
               batches: Any, total: int, amp: Any) -> None:
        """One epoch of training steps, validation, logging and checkpoints."""
        t0 = time.time()
        frozen = epoch < self.freeze_epochs
        if epoch == self.freeze_epochs and epoch > 0:
            reset_momentum(opt)
        model.train()
        losses = []
        bar = tqdm(range(self.run.iters_per_epoch), desc=f"epoch {epoch}", unit="it", leave=False,
                   disable=not self.dist.is_main)
        for it in bar:
            lr = set_learning_rates(opt, epoch * self.run.iters_per_epoch + it, total, frozen)
            x, y = self.task.to_device(self._next_batch(batches), self.net, self.device)
            with amp:
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.t.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_loss = distributed.mean_across(self.dist, float(np.mean(losses)))
        if not self.dist.is_main:
            distributed.barrier(self.dist)
            return
        val_loss, metric = self.task.validate(self.net, self.device, self.run.val_iters,
                                              self.ctx.conf.batch_size, epoch, amp)
        line = self.progress.add({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "metric": metric,
                                  "lr": lr, "epoch_time": time.time() - t0})
        log.info(line + ("  (encoder frozen)" if frozen else ""))
        ema = self.progress.records[-1]["metric_ema"]
        if not np.isnan(ema) and ema > self.best:
            self.best = ema
            self._save("checkpoint_best.pth", opt, epoch + 1)
        if (epoch + 1) % self.run.save_every == 0 or epoch + 1 == self.run.epochs:
            self._save("checkpoint_latest.pth", opt, epoch + 1)
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

    def _final_validation(self) -> dict[str, Any]:
        """Predict the fold's held-out cases and write validation/ + summary.json; then cv_summary.json."""
        if not self.ctx.val_ids:
            return {}
        out = self.out / "validation"
        out.mkdir(parents=True, exist_ok=True)
        self.net.eval()
        summary = self.task.final_validation([self.net], out, self.ctx.pre_dir / "gt_segmentations",
                                             self.ctx.spec.file_ending, self.device, self.run.step_size,
                                             self.run.validation_tta)
        summary.update(trainer=self.t.name, fold=str(self.run.fold), configuration=self.ctx.conf.name)
        write_json(out / "summary.json", summary)
        from xtlunet.training.cv_summary import write_cv_summary

        write_cv_summary(self.ctx.model_dir)
        self.progress.message(f"final validation: {summary_line(summary)}")
        log.info("final validation: %s", summary_line(summary))
        return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line of the final validation result."""
    if "auc" in summary:
        return f"AUC {summary['auc']:.4f} over {summary['n_findings']} findings"
    return f"mean Dice {summary.get('mean_dice_foreground', float('nan')):.4f} over {summary.get('n_cases', 0)} cases"


def resume_checkpoint(trainer: "Trainer") -> tuple[Any, dict[str, Any]]:
    """(path, checkpoint) that --continue resumes from: the fold's checkpoint_latest (or _final), checked."""
    out = trainer.ctx.out_dir
    path = next((out / n for n in ("checkpoint_latest.pth", "checkpoint_final.pth") if (out / n).is_file()), None)
    if path is None:
        raise XtlunetError("--continue: no checkpoint to continue from", path=out,
                           fix="start the fold without --continue")
    ck = load_checkpoint(path)
    check_checkpoint(ck, trainer, trainer.ctx.plans.identity(), path)
    return path, ck


def check_checkpoint(ck: dict[str, Any], trainer: "Trainer", identity: str, path: Any) -> None:
    """Refuse a checkpoint of another kind, trainer or plan."""
    if ck.get("kind") != CHECKPOINT_KIND:
        raise XtlunetError("not an xtlunet training checkpoint", path=path, fix="point at a fold's checkpoint_*.pth")
    if ck.get("plans_identity") != identity:
        raise XtlunetError("checkpoint was trained with a different plan", path=path,
                           fix="use the plans it was trained with, or start the fold again without --continue")
    if ck.get("trainer") != trainer.name:
        raise XtlunetError(f"checkpoint belongs to trainer {ck.get('trainer')}, not {trainer.name}", path=path,
                           fix=f"use -tr {ck.get('trainer')}")
