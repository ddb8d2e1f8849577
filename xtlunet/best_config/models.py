"""The trained segmentation models of a dataset and their cross-validation exports (fold_K/validation/CASE.ext and
CASE.npz), as find-best-configuration needs them; a model without every requested fold is skipped with the reason.

A fold validated with `xtlunet train --no-val-probabilities` (its summary.json says so) has label files only: the
model competes alone, never in an ensemble. A cascade stage is usable only while its lowres model, which predict
runs first, has a finished fold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from xtlunet.best_config.ensemble_folders import Member
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError, noun
from xtlunet.evaluation.summary import ValidationSummary
from xtlunet.validation import NOT_SAVED, PROBABILITIES


@dataclass
class ModelCV:
    """One model folder TRAINER__PLANS__CONFIG, the folds used and each validated case's export."""

    folder: Path
    spec: DatasetSpec
    folds: list[int]
    cases: dict[str, Member]
    probabilities: bool = True     # every fold's validation wrote CASE.npz (else: a single-model candidate only)
    previous: Path | None = None   # a cascade stage's lowres model folder, which predict runs first

    @property
    def name(self) -> str:
        """TRAINER__PLANS__CONFIG."""
        return self.folder.name

    @property
    def parts(self) -> tuple[str, str, str]:
        """(trainer, plans, configuration)."""
        trainer, plans, configuration = self.folder.name.split("__")
        return trainer, plans, configuration


class Skip(Exception):
    """A model folder left out, and why (printed, not an error)."""


def _selected(folder: Path, configurations: Sequence[str] | None, trainers: Sequence[str] | None,
              plans: Sequence[str] | None) -> bool:
    """Whether a folder is a model folder TRAINER__PLANS__CONFIG that the filters (-c, -tr, -p) let through."""
    parts = folder.name.split("__")
    if len(parts) != 3 or not folder.is_dir():
        return False
    trainer, plan, configuration = parts
    return all(values is None or value in values
               for value, values in ((trainer, trainers), (plan, plans), (configuration, configurations)))


def _fold_cases(folder: Path, fold: int, ending: str) -> tuple[dict[str, Member], bool]:
    """(case → export, whether the validation saved probabilities) of one finished fold; raises Skip when the fold or
    an export is missing."""
    vdir = folder / f"fold_{fold}" / "validation"
    summary = ValidationSummary.load(vdir / "summary.json")
    saved = summary.source.get(PROBABILITIES) != NOT_SAVED
    out = {}
    for case in (c.case_id for c in summary.cases):
        member = Member(vdir / f"{case}.npz", vdir / f"{case}{ending}")
        if not member.label_file.is_file():
            raise Skip(f"fold {fold} lacks the validation export {member.label_file.name}")
        if saved and not member.npz.is_file():
            raise Skip(f"fold {fold} has no validation probabilities ({member.npz.name}): re-run its final validation "
                       "(xtlunet train ... --continue with the fold's own options)")
        out[case] = member
    return out, saved


def previous_model(folder: Path) -> Path | None:
    """The lowres model folder a cascade model predicts after, as predict finds it (None: not a cascade stage); raises
    Skip when it has no finished fold, since predict of the cascade could not run."""
    from xtlunet.cascade.chain import previous_folder
    from xtlunet.inference.models import available_folds
    from xtlunet.plans import Plans

    if not (folder / "plans.json").is_file():
        return None
    conf = Plans.load(folder / "plans.json").configurations.get(folder.name.rsplit("__", 1)[-1])
    if conf is None or not conf.previous_stage:
        return None
    prev = previous_folder(folder, conf)
    if not (prev.is_dir() and available_folds(prev)):
        raise Skip(f"predicts after its {conf.previous_stage} model {prev.name}, which has no fold with "
                   "checkpoint_final.pth (predict runs it first): train it, or import it beside the cascade")
    return prev


def model_cv(folder: Path, folds: Sequence[int]) -> ModelCV:
    """The CV exports of a model folder over `folds`; raises Skip naming what is missing."""
    if not (folder / "dataset.json").is_file():
        raise Skip("no dataset.json (training writes it when a fold starts)")
    spec = DatasetSpec.load(folder)
    if spec.is_classification:
        raise XtlunetError(f"{folder.name} is a classification model: find-best-configuration handles segmentation "
                           "models only", path=folder, fix="compare classification arms with xtlunet compare")
    missing = [k for k in folds if not (folder / f"fold_{k}" / "validation" / "summary.json").is_file()]
    if missing:
        raise Skip(f"{noun(len(missing), 'fold')} {', '.join(map(str, missing))} not finished "
                   "(no fold_K/validation/summary.json)")
    cases: dict[str, Member] = {}
    saved = []
    for k in folds:
        fold_cases, with_probabilities = _fold_cases(folder, k, spec.file_ending)
        saved.append(with_probabilities)
        for case, member in fold_cases.items():
            if case in cases:
                raise Skip(f"case {case} is validated in two folds (not one cross-validation)")
            cases[case] = member
    return ModelCV(folder, spec, list(folds), cases, all(saved), previous_model(folder))


def find_models(dataset_dir: Path, folds: Sequence[int], configurations: Sequence[str] | None = None,
                trainers: Sequence[str] | None = None, plans: Sequence[str] | None = None
                ) -> tuple[list[ModelCV], dict[str, str]]:
    """(usable models, {skipped model folder: why}) of a results dataset folder, in name order."""
    models, skipped = [], {}
    folders = sorted(p for p in dataset_dir.iterdir() if _selected(p, configurations, trainers, plans)) \
        if dataset_dir.is_dir() else []
    for folder in folders:
        try:
            models.append(model_cv(folder, folds))
        except Skip as why:
            skipped[folder.name] = str(why)
    return models, skipped
