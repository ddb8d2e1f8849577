"""The three arms of the XTL study: Scratch, TL (natural-image 2D weights) and XTL (mammogram 2D weights).

Transfer arms' defaults (chosen for fine-tuning a transferred encoder under a new decoder/head):
- the encoder is frozen for the first 10 % of the epochs while the new decoder/head settle, so that
  their large early gradients do not overwrite the transferred filters (linear-probe-then-fine-tune);
- afterwards the encoder learns at 0.1× the base learning rate (discriminative fine-tuning), the new
  layers at nnU-Net's 1e-2, with the same poly decay, SGD Nesterov momentum 0.99 and clipping at 12;
- transfer must cover ≥ 90 % of the encoder's parameters, or the run refuses to start.

The source checkpoint is read once. An XTL plan records the checkpoint it was planned for (path and
sha256): XTLTrainer takes it from there when --pretrained is not given, and refuses a --pretrained whose
content differs from it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.trainers.base import Trainer as _Trainer
from xtlunet.transfer import transfer_weights
from xtlunet.transfer.checkpoint import NO_INIT, chain_step, file_digest, init_chain, split_checkpoint
from xtlunet.transfer.report import TransferReport
from xtlunet.utils.torch_io import safe_torch_load

log = logging.getLogger("xtlunet")


class ScratchTrainer(_Trainer):
    """Random initialisation, nnU-Net's optimiser and schedule."""


class TransferTrainer(_Trainer):
    """Loads 2D weights into the planned 3D network (transfer report, coverage check), then fine-tunes."""

    needs_pretrained = True
    encoder_lr_factor = 0.1
    freeze_fraction = 0.1
    min_encoder_coverage = 0.9
    takes_plan_source = False   # whether the plan's recorded source checkpoint is this arm's default
    pretrained_hint = "give a 2D checkpoint with --pretrained"

    def check_pretrained(self) -> None:
        """Resolve --pretrained (or the plan's source), check it against the plan, read it once, check its kind."""
        path = self.pretrained_path()
        self.source: dict[str, Any] = safe_torch_load(path)
        _, meta = split_checkpoint(self.source, path)
        self.check_source(meta)

    def pretrained_path(self) -> Path:
        """--pretrained, else the plan's recorded source for arms that take it; a content mismatch is refused."""
        recorded = (self.conf.pretrained_constraint or {}) if self.takes_plan_source else {}
        given = self.run.pretrained
        if given is None:
            if recorded.get("sha256") and Path(recorded.get("source", "")).is_file():
                self.run.pretrained = given = Path(recorded["source"])
            else:
                raise XtlunetError(f"{self.name} needs --pretrained", fix=self.pretrained_hint)
        if not Path(given).is_file():
            raise XtlunetError("--pretrained checkpoint not found", path=given, fix=self.pretrained_hint)
        if recorded.get("sha256") and file_digest(given) != recorded["sha256"]:
            raise XtlunetError(f"--pretrained differs from the checkpoint plan {self.plans.plans_name} was made for "
                               f"(sha256 {file_digest(given)} vs {recorded['sha256']}, {recorded.get('source')})",
                               path=given, fix="give the checkpoint the plan names (or leave out --pretrained), or "
                               "re-plan with this one: xtlunet plan-and-preprocess --pretrained CKPT")
        return Path(given)

    def check_source(self, meta: dict) -> None:
        """Arm-specific checks of the source checkpoint's metadata."""

    def chain(self) -> list[str]:
        """The history of the weights this arm starts from (recorded in the transfer report)."""
        return [chain_step("weights", self.run.pretrained)]

    def initialise(self, net: nn.Module) -> TransferReport:
        """Transfer the 2D encoder with the run's conversion mode; refuse below the coverage threshold."""
        report = transfer_weights(self.source, net, mode=self.run.transfer_mode,
                                  min_encoder_coverage=self.min_encoder_coverage, source_path=self.run.pretrained)
        report.chain = self.chain()
        return report


class TLTrainer(TransferTrainer):
    """Transfer learning from natural images: a 2D (e.g. torchvision ImageNet) state dict."""

    pretrained_hint = "give a torchvision-format state dict, e.g. resnet18 ImageNet weights saved with torch.save"

    def check_source(self, meta: dict) -> None:
        """TL takes natural-image weights, not a mammogram checkpoint (that is the XTL arm)."""
        if "provenance" in meta and str(meta["provenance"].get("dataset", "")):
            raise XtlunetError(f"{self.run.pretrained} is a pretrain-2d checkpoint (XTL arm)", path=self.run.pretrained,
                               fix="use -tr XTLTrainer for mammogram weights, or give ImageNet weights to TLTrainer")

    def chain(self) -> list[str]:
        """Natural-image (ImageNet) weights straight into the 3D network."""
        return [chain_step("imagenet", self.run.pretrained)]


class XTLTrainer(TransferTrainer):
    """Cross-organ transfer: a `pretrain-2d` mammogram checkpoint carried into the 3D network."""

    takes_plan_source = True
    pretrained_hint = "give a checkpoint written by 'xtlunet pretrain-2d' (or plan with --pretrained CKPT)"

    def check_source(self, meta: dict) -> None:
        """XTL takes a pretrain-2d checkpoint (with architecture and provenance)."""
        if "architecture" not in meta or "provenance" not in meta:
            raise XtlunetError("--pretrained is not a pretrain-2d checkpoint", path=self.run.pretrained,
                               fix="run 'xtlunet pretrain-2d' first (or use -tr TLTrainer for ImageNet weights)")
        self.source_chain = init_chain(meta)
        if self.source_chain[0] == NO_INIT:
            log.warning("warning: %s was pretrained from random weights (init chain 'none'); the XTL protocol starts "
                        "from natural-image weights: pretrain-2d --init IMAGENET.pth", self.run.pretrained)

    def chain(self) -> list[str]:
        """The mammogram checkpoint's own history, then the checkpoint."""
        return [*self.source_chain, chain_step("mammograms", self.run.pretrained)]
