"""The three arms of the XTL study: Scratch, TL (natural-image 2D weights) and XTL (mammogram 2D weights).

Transfer arms' defaults (chosen for fine-tuning a transferred encoder under a new decoder/head):
- the encoder is frozen for the first 10 % of the epochs while the new decoder/head settle, so that
  their large early gradients do not overwrite the transferred filters (linear-probe-then-fine-tune);
- afterwards the encoder learns at 0.1× the base learning rate (discriminative fine-tuning), the new
  layers at nnU-Net's 1e-2, with the same poly decay, SGD Nesterov momentum 0.99 and clipping at 12;
- transfer must cover ≥ 90 % of the encoder's parameters, or the run refuses to start.
"""
from __future__ import annotations

from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.transfer import transfer_weights
from xtlunet.transfer.checkpoint import load_checkpoint_state
from xtlunet.transfer.report import TransferReport
from xtlunet.trainers.base import Trainer as _Trainer


class ScratchTrainer(_Trainer):
    """Random initialisation, nnU-Net's optimiser and schedule."""


class TransferTrainer(_Trainer):
    """Loads 2D weights into the planned 3D network (transfer report, coverage check), then fine-tunes."""

    needs_pretrained = True
    encoder_lr_factor = 0.1
    freeze_fraction = 0.1
    min_encoder_coverage = 0.9

    def check_pretrained(self) -> None:
        """A transfer arm needs --pretrained; the arm checks the checkpoint's kind."""
        if self.run.pretrained is None:
            raise XtlunetError(f"{self.name} needs --pretrained", fix=self.pretrained_hint)
        _, meta = load_checkpoint_state(self.run.pretrained)
        self.check_source(meta)

    pretrained_hint = "give a 2D checkpoint with --pretrained"

    def check_source(self, meta: dict) -> None:
        """Arm-specific checks of the source checkpoint's metadata."""

    def initialise(self, net: nn.Module) -> TransferReport:
        """Transfer the 2D encoder with the run's conversion mode; refuse below the coverage threshold."""
        return transfer_weights(self.run.pretrained, net, mode=self.run.transfer_mode,
                                min_encoder_coverage=self.min_encoder_coverage)


class TLTrainer(TransferTrainer):
    """Transfer learning from natural images: a 2D (e.g. torchvision ImageNet) state dict."""

    pretrained_hint = "give a torchvision-format state dict, e.g. resnet18 ImageNet weights saved with torch.save"

    def check_source(self, meta: dict) -> None:
        """TL takes natural-image weights, not a mammogram checkpoint (that is the XTL arm)."""
        if "provenance" in meta and str(meta["provenance"].get("dataset", "")):
            raise XtlunetError(f"{self.run.pretrained} is a pretrain-2d checkpoint (XTL arm)", path=self.run.pretrained,
                               fix="use -tr XTLTrainer for mammogram weights, or give ImageNet weights to TLTrainer")


class XTLTrainer(TransferTrainer):
    """Cross-organ transfer: a `pretrain-2d` mammogram checkpoint carried into the 3D network."""

    pretrained_hint = "give a checkpoint written by 'xtlunet pretrain-2d'"

    def check_source(self, meta: dict) -> None:
        """XTL takes a pretrain-2d checkpoint (with architecture and provenance)."""
        if "architecture" not in meta or "provenance" not in meta:
            raise XtlunetError("--pretrained is not a pretrain-2d checkpoint", path=self.run.pretrained,
                               fix="run 'xtlunet pretrain-2d' first (or use -tr TLTrainer for ImageNet weights)")
