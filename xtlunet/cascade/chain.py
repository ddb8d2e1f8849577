"""Prediction of a cascade: the lowres model's fold ensemble first, its labels one-hot as extra input channels.

The lowres model is the one the cascade's folds were trained after (previous_stage.json in its model folder),
else the model folder of the same trainer and plans.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xtlunet.cascade import RECORD
from xtlunet.cascade.next_stage import labels_on_grid
from xtlunet.cascade.onehot import one_hot
from xtlunet.dataset.loading import load_case
from xtlunet.dataset.spec import Case
from xtlunet.errors import XtlunetError, noun
from xtlunet.inference.models import TrainedModel, available_folds, load_trained_model
from xtlunet.inference.predict import inference_choices, predict_case
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.preprocessing.case import preprocess_loaded
from xtlunet.utils.atomic import read_json

if TYPE_CHECKING:
    from xtlunet.inference.folder import PredictOptions

log = logging.getLogger("xtlunet")


def previous_folder(folder: Path, conf: ConfigurationPlan, previous_trainer: str | None = None) -> Path:
    """The lowres model folder of a cascade model folder (TRAINER__PLANS__3d_cascade_fullres)."""
    trainer, plans_name = folder.name.split("__")[:2]
    if previous_trainer is None and (folder / RECORD).is_file():
        return folder.parent / str(read_json(folder / RECORD)["model"])
    return folder.parent / f"{previous_trainer or trainer}__{plans_name}__{conf.previous_stage}"


def load_previous_model(folder: Path, plans: Plans, conf: ConfigurationPlan, checkpoint: str,
                        device: torch.device | str, previous_trainer: str | None = None) -> TrainedModel:
    """Every finished fold of the cascade's lowres model; a missing one is refused in one line."""
    prev = previous_folder(folder, conf, previous_trainer)
    folds = available_folds(prev, checkpoint) if prev.is_dir() else []
    if not folds:
        trainer, plans_name = prev.name.split("__")[:2]
        raise XtlunetError(f"{conf.name} predicts after its {conf.previous_stage} model {prev.name}, which has no "
                           f"fold with checkpoint_{checkpoint}.pth", path=prev,
                           fix=f"train it first: xtlunet train {folder.parent.name} {conf.previous_stage} FOLD -tr "
                               f"{trainer} -p {plans_name}")
    model = load_trained_model(prev, folds, checkpoint, device)
    log.info("%s predicts after %s (%s %s)", folder.name, prev.name, noun(len(folds), "fold"), ", ".join(folds))
    for what, mine, theirs in (("transpose", plans.transpose_forward, model.plans.transpose_forward),
                               ("reorientation", plans.reorient, model.plans.reorient),
                               ("labels", plans.labels, model.plans.labels)):
        if mine != theirs:
            raise XtlunetError(f"the {conf.previous_stage} model {prev.name} was planned with another {what} "
                               f"({theirs}) than {folder.name} ({mine})", path=prev / "plans.json",
                               fix="train both stages with one plans file")
    return model


def with_previous_stage(model: TrainedModel, case: Case, data: np.ndarray, props: dict[str, Any],
                        opts: "PredictOptions") -> np.ndarray:
    """data (C, *grid) of a cascade model with the lowres model's labels, one-hot, appended; other models' as is."""
    prev = model.previous
    if prev is None:
        return data
    loaded = load_case(case, prev.spec, len(prev.plans.transpose_forward), with_label=False)
    low, _, low_props = preprocess_loaded(loaded, prev.plans, prev.conf, [], [])
    axes, precision = inference_choices(prev, opts)   # the run's TTA, precision and empty-window choices
    logits = predict_case(prev.nets, low, prev.conf, prev.plans, opts.step, opts.batch_windows, axes, opts.device,
                          precision=precision, empty_windows=opts.empty_windows)
    seg = labels_on_grid(logits, low_props, props, prev.plans)
    return np.concatenate([data, one_hot(seg, model.plans.foreground_labels(), data.dtype)])
