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
    previous: "TrainedModel | None" = None   # a cascade's lowres model, predicted first (xtlunet.cascade.chain)


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
                       device: torch.device | str = "cpu", previous_trainer: str | None = None) -> TrainedModel:
    """Networks of the given folds from checkpoint_{final|best}.pth, checked against the folder's plans; a cascade
    model brings its lowres model (every finished fold; `previous_trainer` names another than its own)."""
    look_up_option(checkpoint, ("final", "best", "latest"), "checkpoint")
    check_model_files(folder)
    plans = Plans.load(folder / "plans.json")
    spec = DatasetSpec.load(folder)
    conf_name = folder.name.rsplit("__", 1)[-1]
    conf = plans.configuration(conf_name)
    nets, mirror = [], None
    for fold, path in checkpoint_paths(folder, folds, checkpoint).items():
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
    previous = None
    if conf.previous_stage:
        from xtlunet.cascade.chain import load_previous_model

        previous = load_previous_model(folder, plans, conf, checkpoint, device, previous_trainer)
    return TrainedModel(folder, plans, conf, spec, nets, [str(f) for f in folds], mirror or [], previous)


def check_model_files(folder: Path) -> None:
    """Refuse a model folder without the plans.json and dataset.json that training writes into it."""
    missing = [name for name in ("plans.json", "dataset.json") if not (folder / name).is_file()]
    if not missing:
        return
    trained = sorted({p.parent.name for p in folder.glob("fold_*/checkpoint_*.pth")})
    state = f"its folds ({', '.join(trained)}) cannot be used without it" if trained else "no fold has a checkpoint"
    trainer, plans, conf = (folder.name.split("__") + ["TRAINER", "PLANS", "CONFIG"])[:3]
    raise XtlunetError(f"model folder lacks {' and '.join(missing)}, which training writes when a fold starts; {state}",
                       path=folder, fix=f"train a fold of it (xtlunet train {folder.parent.name} {conf} FOLD -tr "
                       f"{trainer} -p {plans}), or copy back the {plans}.json (as plans.json) and dataset.json of "
                       f"$XTLUNET_preprocessed/{folder.parent.name} that the folds were trained with")


def checkpoint_paths(folder: Path, folds: Sequence[str], checkpoint: str) -> dict[str, Path]:
    """fold → checkpoint file, each fold once: a fold named twice (-f 0 0), or two folds that are one file (a
    symlinked fold folder), would weigh one network double in the ensemble."""
    paths: dict[str, Path] = {}
    for fold in map(str, folds):
        path = folder / f"fold_{fold}" / f"checkpoint_{checkpoint}.pth"
        if fold in paths:
            given, once = " ".join(map(str, folds)), " ".join(dict.fromkeys(map(str, folds)))
            raise XtlunetError(f"fold {fold} is given twice in -f ({given}): it would weigh double in the ensemble",
                               fix=f"name each fold once: -f {once}")
        if not path.is_file():
            raise XtlunetError(f"fold {fold} has no checkpoint_{checkpoint}.pth", path=path.parent,
                               fix=f"train fold {fold} to the end, or choose folds with -f")
        same = next((k for k, p in paths.items() if p.samefile(path)), None)
        if same is not None:
            raise XtlunetError(f"folds {same} and {fold} are one checkpoint file (a symbolic or hard link): it "
                               "would weigh double in the ensemble", path=path,
                               fix=f"restore fold {fold}'s own checkpoint, or leave it out of -f")
        paths[fold] = path
    return paths


def available_folds(folder: Path, checkpoint: str = "final") -> list[str]:
    """Folds 0–4 with the checkpoint present (the default for -f)."""
    return [str(k) for k in range(NUM_FOLDS) if (folder / f"fold_{k}" / f"checkpoint_{checkpoint}.pth").is_file()]
