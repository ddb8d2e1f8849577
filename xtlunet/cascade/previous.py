"""Training a cascade fold: the lowres model whose cross-validation predictions it reads, checked before it starts.

Every case of the fold (training and validation cases) needs its prediction from the lowres fold that held it
out, so no prediction comes from a network that trained on its case. A missing one stops the run, in one line
naming the lowres folds to train or finish, before anything is written.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.cascade import RECORD, next_stage_folder
from xtlunet.cascade.onehot import StackedInput
from xtlunet.errors import XtlunetError, noun, plural
from xtlunet.paths import model_folder
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.context import TrainingContext
from xtlunet.training.data import CaseArrays
from xtlunet.transfer.report import TransferReport
from xtlunet.utils.atomic import read_json, save_npy, write_json

log = logging.getLogger("xtlunet")


@dataclass
class PreviousStage:
    """The lowres model of a cascade fold, and where its predictions for the cascade lie."""

    configuration: str
    model_dir: Path
    stage: str
    labels: list[int]

    @property
    def folder(self) -> Path:
        """MODEL/predicted_next_stage/STAGE."""
        return next_stage_folder(self.model_dir, self.stage)

    def record(self) -> dict[str, Any]:
        """What previous_stage.json holds."""
        return {"configuration": self.configuration, "model": self.model_dir.name}

    def labels_of(self, case: CaseArrays) -> np.ndarray:
        """A case's previous-stage label map, memory-mapped: CASE.npz unpacked once into CASE.npy beside it."""
        npz, npy = self.folder / f"{case.case_id}.npz", self.folder / f"{case.case_id}.npy"
        if not npy.is_file() or npy.stat().st_mtime_ns < npz.stat().st_mtime_ns:
            with np.load(npz) as f:
                save_npy(npy, f["seg"])
        seg = np.load(npy, mmap_mode="r")
        if seg.shape != case.data.shape[1:]:
            raise XtlunetError(f"the {self.configuration} prediction of case {case.case_id} has shape "
                               f"{list(seg.shape)}, its preprocessed array {list(case.data.shape[1:])}", path=npz,
                               fix=f"re-run the final validation of the {self.configuration} fold holding it out "
                                   "(xtlunet train … --continue)")
        return seg

    def attach(self, cases: list[CaseArrays]) -> list[CaseArrays]:
        """The cases with their previous-stage label maps (training batches cut them with the image)."""
        return [replace(c, previous=self.labels_of(c)) for c in cases]

    def stacked(self, cases: list[CaseArrays]) -> list[CaseArrays]:
        """The cases with the one-hot channels appended to their data, read lazily (final validation)."""
        return [replace(c, data=StackedInput(c.data, self.labels_of(c), self.labels)) for c in cases]

    def save_record(self, model_dir: Path) -> None:
        """Write previous_stage.json into the cascade's model folder (prediction chains the same model)."""
        write_json(model_dir / RECORD, self.record())


def previous_stage(ctx: TrainingContext, trainer: str, fold: int | str,
                   previous_trainer: str | None = None) -> PreviousStage | None:
    """The checked previous stage of a cascade fold (None for other configurations): same trainer and plans unless
    `previous_trainer` is given."""
    conf = ctx.conf
    if conf.previous_stage is None:
        return None
    ctx.plans.configuration(conf.previous_stage)
    stage = PreviousStage(conf.previous_stage, model_folder(ctx.spec.name, previous_trainer or trainer,
                                                            ctx.plans.plans_name, conf.previous_stage),
                          conf.name, ctx.plans.foreground_labels())
    _check_record(ctx, stage)
    missing = [c for c in [*ctx.train_ids, *ctx.val_ids] if not (stage.folder / f"{c}.npz").is_file()]
    if missing:
        raise _missing_error(ctx, stage, fold, missing, previous_trainer or trainer)
    return stage


def _check_record(ctx: TrainingContext, stage: PreviousStage) -> None:
    """Refuse a previous stage other than the one the model folder's trained folds used."""
    path = ctx.model_dir / RECORD
    if not path.is_file() or read_json(path) == stage.record():
        return
    trained = sorted({p.parent.name for p in ctx.model_dir.glob("fold_*/checkpoint_*.pth")})
    if trained:
        raise XtlunetError(f"{', '.join(trained)} of this model followed {read_json(path).get('model')}, this run "
                           f"would follow {stage.model_dir.name}", path=path,
                           fix="train every fold of a cascade after one lowres model, or delete the model folder")


def _missing_error(ctx: TrainingContext, stage: PreviousStage, fold: int | str, missing: list[str],
                   trainer: str) -> XtlunetError:
    """The one-line refusal: which lowres folds to train or finish, and the command."""
    path = ctx.pre_dir / "splits_final.json"
    splits = read_json(path) if path.is_file() else []
    folds = sorted({k for k, s in enumerate(splits) for c in missing if c in s["val"]})
    which = f"{noun(len(folds), 'fold')} {', '.join(map(str, folds))}" if folds else "every fold"
    shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
    command = (f"xtlunet train {ctx.spec.name} {stage.configuration} {folds[0] if len(folds) == 1 else 'FOLD'} "
               f"-tr {trainer} -p {ctx.plans.plans_name}")
    return XtlunetError(
        f"{stage.stage} fold {fold} needs the {stage.configuration} cross-validation prediction of every case it "
        f"reads; {plural(len(missing), 'case')} lack one ({shown})", path=stage.folder,
        fix=f"train {stage.configuration} {which} to the end with final validation first: {command} (a finished "
            "fold without one: the same command with its budget options and --continue)")


def note_input_channels(report: TransferReport | None, net: Any, plans: Plans,
                        conf: ConfigurationPlan) -> TransferReport | None:
    """Say in the transfer report's first-conv row which input channels are images and which the previous stage's
    one-hot labels (the transfer adapted them like any other channel)."""
    if report is None:
        return None
    images = list(plans.channel_names.values())
    names = {v: k for k, v in plans.labels.items()}
    extra = [f"{len(images) + i}: {conf.previous_stage} '{names.get(v, v)}' (label {v})"
             for i, v in enumerate(plans.foreground_labels())]
    note = (f"input channels {', '.join(f'{i}: {n}' for i, n in enumerate(images))} (images); "
            f"{', '.join(extra)} (one-hot previous stage)")
    for row in report.rows:
        if row.name == f"{getattr(net, 'first_conv', '')}.weight":
            row.reason = f"{row.reason}; {note}" if row.reason else note
    log.info(note)
    return report
