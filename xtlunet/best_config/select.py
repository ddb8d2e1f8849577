"""find-best-configuration: score every finished model and every ensemble of two on cross-validation, pick the best
by pooled Dice (a tie goes to the simpler candidate: a single model before an ensemble), learn post-processing on the
winner's CV exports, and write the inference instructions.

Every candidate is scored the same way: its CV exports (original geometry) against the references that the final
validation uses, `$XTLUNET_preprocessed/DATASET/gt_segmentations/CASE.ext` (scores: xtlunet/postprocessing/scores.py).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

from xtlunet.best_config.ensemble_folders import jobs_for, run_jobs
from xtlunet.best_config.instructions import write_instructions
from xtlunet.best_config.models import ModelCV, find_models
from xtlunet.dataset.spec import find_dataset
from xtlunet.errors import XtlunetError, plural
from xtlunet.paths import NUM_FOLDS, preprocessed_root, results_root
from xtlunet.postprocessing.learn import EPS, learn_postprocessing
from xtlunet.postprocessing.plan import PostprocessingPlan
from xtlunet.postprocessing.scores import ClassTable, CvScore, score_tables, tables_from_files
from xtlunet.utils.lock import folder_lock

ENSEMBLES = "ensembles"
POSTPROCESSING = "postprocessing.json"


@dataclass
class Candidate:
    """A single model or an ensemble, the folder of its CV exports, and its component tables."""

    name: str
    members: list[ModelCV]
    folder: Path
    tables: dict[int, list[ClassTable]]

    @cached_property
    def score(self) -> CvScore:
        """Its CV scores per label."""
        return score_tables(self.tables)


@dataclass
class Selection:
    """What find-best-configuration found and wrote."""

    dataset: str
    folds: list[int]
    candidates: list[Candidate]
    winner: Candidate
    skipped: dict[str, str] = field(default_factory=dict)
    postprocessing: PostprocessingPlan | None = None
    postprocessing_file: Path | None = None
    outputs: list[Path] = field(default_factory=list)


def ensemble_name(members: Sequence[ModelCV], folds: Sequence[int]) -> str:
    """ensemble___A___B___0_1_2_3_4 (folder names of the members, then the folds)."""
    return "___".join(["ensemble", *(m.name for m in members), "_".join(map(str, folds))])


def _references(models: Sequence[ModelCV], dataset: str) -> dict[str, Path]:
    """case → its reference in gt_segmentations, for every validated case; a missing one is refused."""
    gt = preprocessed_root() / dataset / "gt_segmentations"
    refs = {c: gt / m.cases[c].label_file.name for m in models for c in m.cases}
    missing = sorted(c for c, p in refs.items() if not p.is_file())
    if missing:
        raise XtlunetError(f"no reference segmentation for {plural(len(missing), 'validated case')} "
                           f"({', '.join(missing[:3])})", path=refs[missing[0]],
                           fix=f"run xtlunet plan-and-preprocess -d {dataset} (it copies labelsTr into "
                               "gt_segmentations)")
    return refs


def _score(cases: dict[str, Path], refs: dict[str, Path], labels: Sequence[int], workers: int,
           name: str) -> dict[int, list[ClassTable]]:
    """Component tables of {case: exported label file} against the references."""
    return tables_from_files({c: (p, refs[c]) for c, p in cases.items()}, labels, workers, desc=f"score {name}")


def _ensemble(pair: Sequence[ModelCV], folds: Sequence[int], refs: dict[str, Path], workers: int,
              ensembles: Path) -> Candidate | str:
    """The CV ensemble of two models, written to ensembles/NAME and scored; or why it cannot be made."""
    a, b = pair
    if set(a.cases) != set(b.cases):
        return f"{a.name} and {b.name} were validated on different cases"
    if (a.spec.labels, a.spec.file_ending) != (b.spec.labels, b.spec.file_ending):
        return f"{a.name} and {b.name} have different labels or file endings"
    name = ensemble_name(pair, folds)
    out = ensembles / name
    ending = a.spec.file_ending
    with folder_lock(out, "ensemble folder"):
        run_jobs(jobs_for({c: (a.cases[c], b.cases[c]) for c in a.cases}, out, ending), workers, desc="ensemble")
    tables = _score({c: out / f"{c}{ending}" for c in a.cases}, refs, a.spec.foreground_labels(), workers, name)
    return Candidate(name, list(pair), out, tables)


def ensemble_pairs(models: Sequence[ModelCV], skipped: dict[str, str]) -> list[tuple[ModelCV, ModelCV]]:
    """Every pair of models that saved validation probabilities; a model without them is noted in `skipped`."""
    for m in models:
        if not m.probabilities and len(models) > 1:
            skipped[f"ensembles with {m.name}"] = ("its final validation wrote no probabilities (xtlunet train "
                                                  "--no-val-probabilities): it competes as a single model only")
    return list(itertools.combinations([m for m in models if m.probabilities], 2))


def pick_winner(candidates: Sequence[Candidate]) -> Candidate:
    """The highest pooled Dice; among (nearly) equal ones the fewest members, then the first."""
    def pooled(c: Candidate) -> float:
        value = c.score.overall.pooled_dice
        return value if math.isfinite(value) else -1.0

    top = max(pooled(c) for c in candidates)
    return min((c for c in candidates if pooled(c) >= top - EPS), key=lambda c: len(c.members))


def _no_models(dataset: str, folds: Sequence[int], skipped: dict[str, str]) -> XtlunetError:
    """The error when no model folder is usable, naming why each was skipped."""
    why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items()) or "no trained model folder matches"
    return XtlunetError(f"no model of {dataset} has folds {' '.join(map(str, folds))} finished ({why})",
                        path=results_root() / dataset,
                        fix=f"train the folds: xtlunet train {dataset} CONFIG FOLD -tr TRAINER for each of folds "
                            f"{' '.join(map(str, folds))} (or choose finished folds with -f)")


def find_best_configuration(dataset: str, configurations: Sequence[str] | None = None,
                            trainers: Sequence[str] | None = None, plans: Sequence[str] | None = None,
                            folds: Sequence[int] | None = None, ensembling: bool = True, postprocessing: bool = True,
                            num_workers: int = 1) -> Selection:
    """Score, choose, learn post-processing and write postprocessing.json and the inference instructions."""
    ds_dir = find_dataset(dataset, results_root())
    folds = sorted(set(folds)) if folds else list(range(NUM_FOLDS))
    models, skipped = find_models(ds_dir, folds, configurations, trainers, plans)
    if not models:
        raise _no_models(ds_dir.name, folds, skipped)
    refs = _references(models, ds_dir.name)
    candidates = [Candidate(m.name, [m], m.folder, _score({c: x.label_file for c, x in m.cases.items()}, refs,
                                                          m.spec.foreground_labels(), num_workers, m.name))
                  for m in models]
    for pair in ensemble_pairs(models, skipped) if ensembling else ():
        made = _ensemble(pair, folds, refs, num_workers, ds_dir / ENSEMBLES)
        if isinstance(made, str):
            skipped[ensemble_name(pair, folds)] = made
        else:
            candidates.append(made)
    selection = Selection(ds_dir.name, folds, candidates, pick_winner(candidates), skipped)
    if postprocessing:
        winner = selection.winner
        names = {v: n for n, v in winner.members[0].spec.labels.items()}
        selection.postprocessing = learn_postprocessing(winner.tables, names, {
            "candidate": winner.name, "folds": folds, "cases": len(winner.members[0].cases)})
        selection.postprocessing_file = selection.postprocessing.save(winner.folder / POSTPROCESSING)
        selection.outputs.append(selection.postprocessing_file)
    selection.outputs += write_instructions(selection, ds_dir)
    return selection
