"""Load a trained model folder (TRAINER__PLANS__CONFIG): its plans and one network per fold."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.networks.build import build_network
from xtlunet.paths import NUM_FOLDS, model_folders
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.utils.torch_io import safe_torch_load


@dataclass
class TrainedModel:
    """Plans, configuration, dataset description and the folds' networks of one model folder."""

    folder: Path
    plans: Plans
    conf: ConfigurationPlan
    spec: DatasetSpec
    nets: list[nn.Module]
    folds: list[str]
    mirror_axes: list[int]


def resolve_model_folder(results: Path, dataset_name: str, configuration: str, trainer: str,
                         plans_name: str | None) -> Path:
    """The folder of TRAINER(__PLANS)__CONFIG; a missing or ambiguous one is a clear error."""
    if plans_name:
        folder = results / dataset_name / f"{trainer}__{plans_name}__{configuration}"
        if not folder.is_dir():
            raise XtlunetError("model folder not found", path=folder,
                               fix=f"train it first: xtlunet train {dataset_name} {configuration} FOLD -tr {trainer} -p {plans_name}")
        return folder
    found = model_folders(results, dataset_name, configuration, trainer)
    if not found:
        raise XtlunetError(f"no trained {trainer} model for {dataset_name} {configuration}", path=results / dataset_name,
                           fix=f"train it first: xtlunet train {dataset_name} {configuration} FOLD -tr {trainer}")
    if len(found) > 1:
        raise XtlunetError(f"several plans trained with {trainer}: {', '.join(p.name for p in found)}",
                           fix="choose one with -p PLANS")
    return found[0]


def load_trained_model(folder: Path, folds: Sequence[str], checkpoint: str = "final",
                       device: torch.device | str = "cpu") -> TrainedModel:
    """Networks of the given folds from checkpoint_{final|best}.pth, checked against the folder's plans."""
    look_up_option(checkpoint, ("final", "best", "latest"), "checkpoint")
    plans = Plans.load(folder / "plans.json")
    spec = DatasetSpec.load(folder)
    conf_name = folder.name.rsplit("__", 1)[-1]
    conf = plans.configuration(conf_name)
    nets, mirror = [], None
    for fold in folds:
        path = folder / f"fold_{fold}" / f"checkpoint_{checkpoint}.pth"
        if not path.is_file():
            raise XtlunetError(f"fold {fold} has no checkpoint_{checkpoint}.pth", path=path.parent,
                               fix=f"train fold {fold} to the end, or choose folds with -f")
        ck = safe_torch_load(path)
        if not isinstance(ck, dict) or ck.get("plans_identity") != plans.identity():
            raise XtlunetError("checkpoint does not belong to this model folder's plans", path=path,
                               fix="re-train the fold, or restore the plans.json it was trained with")
        net = build_network(conf.network(), conf.task, conf.num_outputs)
        net.load_state_dict(ck["network"])
        nets.append(net.to(device).eval())
        axes = [int(a) for a in ck.get("inference", {}).get("mirror_axes", [])]
        if mirror is not None and axes != mirror:
            raise XtlunetError(f"fold {fold} was trained with mirror axes {axes}, other folds with {mirror}",
                               path=path, fix="ensemble folds of one trainer set-up, or choose folds with -f")
        mirror = axes
    return TrainedModel(folder, plans, conf, spec, nets, [str(f) for f in folds], mirror or [])


def available_folds(folder: Path, checkpoint: str = "final") -> list[str]:
    """Folds 0–4 with the checkpoint present (the default for -f)."""
    return [str(k) for k in range(NUM_FOLDS) if (folder / f"fold_{k}" / f"checkpoint_{checkpoint}.pth").is_file()]
