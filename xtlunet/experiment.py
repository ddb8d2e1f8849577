"""`xtlunet experiment`: the XTL study's protocol in one resumable command.

One plan for every arm (made under the 2D encoder's constraint when a transfer arm takes part), every
arm × fold trained on it with the same splits (finished folds skipped, killed ones continued), then
`compare`, and `experiment.json`: arms, weight chains, plan identity, seeds, budget, versions and the
per-fold results. TL and XTL weights of different encoder families are refused up front: they cannot
share a plan.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from xtlunet.utils.console import progress_bar

from xtlunet.errors import XtlunetError, noun
from xtlunet.paths import NUM_FOLDS, model_folder, results_root
from xtlunet.training.checkpoint import (RECIPE_BUDGET, RECIPE_START, latest_checkpoint, load_checkpoint,
                                         recipe_differences, run_recipe)
from xtlunet.training.run_spec import RunSpec
from xtlunet.utils.atomic import read_json, write_json

log = logging.getLogger("xtlunet")
FORMAT = "xtlunet.experiment"


@dataclass
class ExperimentSpec:
    """What `xtlunet experiment` is asked to do."""

    dataset: str
    configuration: str
    arms: list[str]
    tl_weights: Path | None = None
    xtl_weights: Path | None = None
    folds: list[int] = field(default_factory=lambda: list(range(NUM_FOLDS)))
    gpu_memory_gb: float = 8.0
    plans_name: str | None = None
    num_workers: int = 1
    transfer_norm: str | None = None   # the XTL planner's --transfer-norm (None: its default)
    run: RunSpec | None = None     # the per-fold budget and options (dataset/configuration/fold are filled in)


def source_family(path: Path) -> str | None:
    """The encoder family of 2D weights: a pretrain-2d checkpoint's architecture, or torchvision key names."""
    from xtlunet.transfer.checkpoint import load_checkpoint_state
    from xtlunet.transfer.keys import detect_source_format, infer_torchvision_family

    if not Path(path).is_file():
        raise XtlunetError("weights file not found", path=path, fix="give a local checkpoint (nothing is downloaded)")
    state, meta = load_checkpoint_state(path)
    if isinstance(meta.get("architecture"), dict):
        return str(meta["architecture"].get("family"))
    if detect_source_format(list(state)).startswith("torchvision"):
        return infer_torchvision_family(list(state))
    return None


def arm_weights(arm: str, spec: ExperimentSpec) -> Path | None:
    """The 2D weights an arm starts from: XTL arms the mammogram checkpoint, TL arms the natural-image weights."""
    from xtlunet.launch import trainer_class
    from xtlunet.trainers.arms import TLTrainer, XTLTrainer

    cls = trainer_class(arm)
    for kind, weights, option in ((XTLTrainer, spec.xtl_weights, "--xtl-weights"),
                                  (TLTrainer, spec.tl_weights, "--tl-weights")):
        if issubclass(cls, kind):
            if weights is None:
                raise XtlunetError(f"arm {arm} needs {option}", fix=f"pass {option} FILE, or drop the arm")
            return Path(weights)
    return None


def plan_source(spec: ExperimentSpec) -> str | None:
    """What the shared plan is constrained by: the XTL checkpoint, else the TL weights' family, else nothing.

    Refuses TL and XTL weights of different encoder families (no plan can serve both)."""
    families = {opt: source_family(p) for opt, p in (("--tl-weights", spec.tl_weights),
                                                    ("--xtl-weights", spec.xtl_weights)) if p is not None}
    known = {f for f in families.values() if f}
    if len(known) > 1:
        raise XtlunetError(f"the TL and XTL weights are of different encoder families "
                           f"({', '.join(f'{o} {f}' for o, f in families.items())}); the arms cannot share a plan",
                           fix="give TL and XTL weights of one family (e.g. ImageNet resnet18 and a resnet18 "
                               "pretrain-2d checkpoint)")
    if spec.xtl_weights is not None:
        return str(spec.xtl_weights)
    if spec.tl_weights is not None:
        if not known:
            raise XtlunetError("cannot tell the encoder family of --tl-weights", path=spec.tl_weights,
                               fix="give a torchvision ResNet/VGG state dict")
        return known.pop()
    return None


def fold_state(fold_dir: Path) -> str:
    """'done' (validated), 'continue' (a checkpoint to resume from) or 'new'."""
    if (fold_dir / "validation" / "summary.json").is_file() and (fold_dir / "checkpoint_final.pth").is_file():
        return "done"
    if latest_checkpoint(fold_dir) is not None:
        return "continue"
    return "new"


def check_fold_recipe(fold_dir: Path, run: RunSpec) -> None:
    """Refuse to reuse or continue a fold trained with other start weights, transfer mode, seed or budget: its
    result would be reported under this experiment's options."""
    path = latest_checkpoint(fold_dir)
    recorded = load_checkpoint(path).get("recipe") if path is not None else None
    if recorded is None:
        return
    diffs = recipe_differences(recorded, run_recipe(run), RECIPE_START + RECIPE_BUDGET)
    if diffs:
        raise XtlunetError(f"{fold_dir.parent.name}/{fold_dir.name} was trained with another recipe "
                           f"({'; '.join(diffs)}); reusing it would mix recipes in one comparison", path=fold_dir,
                           fix="give this variant its own --plans-name, or delete the fold folder to train it again")


def run_experiment(spec: ExperimentSpec) -> dict[str, Any]:
    """Plan once, train every arm × fold on that plan (resuming), compare, write experiment.json; returns it."""
    from xtlunet.evaluation.compare import compare_arms
    from xtlunet.launch import train_fold
    from xtlunet.plan_and_preprocess import plan_and_preprocess

    if len(set(spec.arms)) != len(spec.arms) or not spec.arms:
        raise XtlunetError(f"arms must be distinct, got {', '.join(spec.arms) or 'none'}",
                           fix="e.g. --arms ScratchTrainer TLTrainer XTLTrainer")
    weights = {arm: arm_weights(arm, spec) for arm in spec.arms}
    source = plan_source(spec)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    plans = plan_and_preprocess(spec.dataset, [spec.configuration], pretrained=source,
                                gpu_memory_gb=spec.gpu_memory_gb, num_workers=spec.num_workers,
                                plans_name=spec.plans_name, transfer_norm=spec.transfer_norm)
    base = spec.run or RunSpec(spec.dataset, spec.configuration, 0)
    jobs = []
    for fold in spec.folds:
        for arm in spec.arms:
            fold_dir = model_folder(plans.dataset_name, arm, plans.plans_name, spec.configuration) / f"fold_{fold}"
            state = fold_state(fold_dir)
            run = dataclasses.replace(base, dataset=spec.dataset, configuration=spec.configuration, fold=fold,
                                      plans_name=plans.plans_name, pretrained=weights[arm],
                                      continue_training=state == "continue", final_validation=True)
            check_fold_recipe(fold_dir, run)      # every fold up front, before anything trains
            jobs.append((arm, fold, state, run))
    bar = progress_bar(jobs, desc="experiment", unit="fold")
    for arm, fold, state, run in bar:
        bar.set_postfix_str(f"{arm} fold {fold}: {state}")
        if state != "done":
            train_fold(arm, run)
    comparison = None
    out = results_root() / plans.dataset_name
    stem = spec.configuration if spec.plans_name is None else f"{plans.plans_name}_{spec.configuration}"
    if len(spec.arms) > 1:
        comparison = compare_arms(spec.dataset, spec.configuration,
                                  [f"{a}__{plans.plans_name}" for a in spec.arms], spec.folds,
                                  out_dir=out / f"compare_{stem}")
    doc = experiment_record(spec, plans, weights, base, comparison, started)
    write_json(out / f"experiment_{stem}.json", doc)
    return doc


def experiment_record(spec: ExperimentSpec, plans: Any, weights: dict[str, Path | None], run: RunSpec,
                      comparison: dict[str, Any] | None, started: str) -> dict[str, Any]:
    """experiment.json: arms with chains and per-fold results, the plan's identities, budget, seeds, versions."""
    import torch

    import xtlunet
    from xtlunet.evaluation.compare import arm_chain
    from xtlunet.evaluation.summary import ValidationSummary

    arms = []
    for arm in spec.arms:
        folder = model_folder(plans.dataset_name, arm, plans.plans_name, spec.configuration)
        folds = {}
        for k in spec.folds:
            summary = ValidationSummary.load(folder / f"fold_{k}" / "validation" / "summary.json")
            folds[str(k)] = {"line": summary.one_line(), "auc": summary.auc,
                             "mean_dice": summary.mean_dice_foreground}
        arms.append({"trainer": arm, "model_folder": str(folder), "weights": str(weights[arm] or ""),
                     "chain": arm_chain(folder, spec.folds), "folds": folds})
    return {"format": FORMAT, "version": 1, "dataset": plans.dataset_name, "configuration": spec.configuration,
            "plans": plans.plans_name, "plan_identity": plans.identity(),
            "design_identity": plans.design_identity(spec.configuration), "folds": list(spec.folds),
            "norm": plans.configurations[spec.configuration].architecture.get("norm", "instance"),
            "arms": arms, "seed": run.seed, "transfer_mode": run.transfer_mode,
            "budget": {"epochs": run.epochs, "iters_per_epoch": run.iters_per_epoch, "val_iters": run.val_iters,
                       "validation_tta": run.validation_tta},
            "versions": {"xtlunet": xtlunet.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "comparison": (comparison or {}).get("outputs", []), "started": started,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def load_experiment(path: Path) -> dict[str, Any]:
    """Read an experiment.json written by run_experiment."""
    doc = read_json(path)
    if doc.get("format") != FORMAT:
        raise XtlunetError("not an xtlunet experiment record", path=path, fix="give an experiment_[PLANS_]CONFIG.json")
    return doc


def parse_folds(values: Sequence[str] | None) -> list[int]:
    """--folds: indices below NUM_FOLDS (default all), each once (a fold named twice is run once)."""
    if not values:
        return list(range(NUM_FOLDS))
    bad = [v for v in values if not (v.isdigit() and int(v) < NUM_FOLDS)]
    if bad:
        raise XtlunetError(f"{noun(len(bad), 'fold')} {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not valid",
                           fix=f"use folds 0–{NUM_FOLDS - 1}")
    return sorted({int(v) for v in values})
