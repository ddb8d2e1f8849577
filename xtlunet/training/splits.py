"""Five-fold splits (splits_final.json, nnU-Net's format): seeded, grouped by patient, stratified for classification."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold

from xtlunet.dataset.findings import case_patients, read_findings
from xtlunet.errors import XtlunetError
from xtlunet.paths import NUM_FOLDS
from xtlunet.utils.atomic import read_json, write_json

log = logging.getLogger("xtlunet")
SEED = 12345


def make_splits(case_ids: list[str], groups: dict[str, str] | None = None, labels: dict[str, int] | None = None,
                n_folds: int = NUM_FOLDS, seed: int = SEED) -> list[dict[str, list[str]]]:
    """KFold over sorted case ids; GroupKFold by patient; StratifiedGroupKFold when labels are given."""
    ids = sorted(case_ids)
    idx = np.arange(len(ids))
    g = [groups.get(c, c) for c in ids] if groups else None
    n_groups = len(set(g)) if g else len(ids)
    if n_groups < n_folds:
        raise XtlunetError(f"{n_groups} patients/cases cannot make {n_folds} folds",
                           fix=f"add cases (at least {n_folds} patients), supply your own splits_final.json, or train "
                               "fold 'all' (every case, no validation: it needs no split)")
    if labels is not None and g is not None:
        y = [labels[c] for c in ids]
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(idx, y, g)
    elif g is not None:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(idx, groups=g)
    else:
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(idx)
    return [{"train": [ids[i] for i in tr], "val": [ids[i] for i in va]} for tr, va in splitter]


def case_groups_and_labels(findings_csv: Path | None, classes: dict[str, int]) -> tuple[dict[str, str] | None, dict[str, int] | None]:
    """Patient of each case and the case's label for stratification (its highest finding label)."""
    if findings_csv is None or not findings_csv.is_file():
        return None, None
    findings = read_findings(findings_csv, classes)
    groups, conflicts = case_patients(findings)
    if conflicts:
        cid, ids = next(iter(conflicts.items()))
        raise XtlunetError(f"case {cid} has findings with different patient ids ({', '.join(ids)})",
                           path=findings_csv, fix="give every finding of a case the same patient_id")
    labels: dict[str, int] = {}
    for f in findings:
        labels[f.case_id] = max(labels.get(f.case_id, 0), f.label)
    return groups, labels


def load_or_create_splits(pre_dir: Path, case_ids: list[str], findings_csv: Path | None,
                          classes: dict[str, int]) -> list[dict[str, list[str]]]:
    """splits_final.json of the preprocessed folder: honoured if present (validated), else created."""
    path = pre_dir / "splits_final.json"
    if path.is_file():
        splits = read_json(path)
        _validate(splits, set(case_ids), path)
        return splits
    groups, labels = case_groups_and_labels(findings_csv, classes)
    splits = make_splits(case_ids, groups, labels)
    write_json(path, splits)
    log.info("created %s (%d folds, seed %d%s)", path, len(splits), SEED, ", grouped by patient" if groups else "")
    return splits


def _validate(splits: object, known: set[str], path: Path) -> None:
    """A user-supplied split must be a list of {train, val} over known case ids, without overlap."""
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
        raise XtlunetError("splits_final.json must be a list of {\"train\": [...], \"val\": [...]}", path=path,
                           fix="fix the file or delete it to have the default 5-fold split made")
    for k, s in enumerate(splits):
        for part in ("train", "val"):
            if not isinstance(s[part], list) or not all(isinstance(c, str) and c for c in s[part]):
                raise XtlunetError(f"fold {k}'s \"{part}\" must be a list of case ids (strings), got "
                                   f"{json.dumps(s[part])[:80]}", path=path,
                                   fix="write each fold as {\"train\": [\"CASE\", ...], \"val\": [...]}, or delete "
                                       "the file to have the default 5-fold split made")
        unknown = sorted((set(s["train"]) | set(s["val"])) - known)
        if unknown:
            raise XtlunetError(f"fold {k} names unknown cases ({', '.join(unknown[:3])})", path=path,
                               fix="use case ids of the preprocessed dataset, or delete the file")
        if set(s["train"]) & set(s["val"]):
            raise XtlunetError(f"fold {k} has cases in both train and val", path=path, fix="separate them")


def fold_split(pre_dir: Path, case_ids: list[str], findings_csv: Path | None, classes: dict[str, int],
               fold: int | str) -> tuple[list[str], list[str]]:
    """(train, val) case ids of a fold; fold 'all' needs no split (every case trains, none validates), so a dataset
    too small for five folds can still train it."""
    if fold == "all":
        return sorted(case_ids), []
    splits = load_or_create_splits(pre_dir, case_ids, findings_csv, classes)
    return fold_cases(splits, fold, case_ids, pre_dir / "splits_final.json")


def fold_cases(splits: list[dict[str, list[str]]], fold: int | str, case_ids: list[str],
               path: Path | None = None) -> tuple[list[str], list[str]]:
    """(train, val) case ids of a fold; fold 'all' trains on every case with no validation. A numbered fold without
    training or validation cases cannot train (NaN validation loss, no best checkpoint) and is refused."""
    if fold == "all":
        return sorted(case_ids), []
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise XtlunetError(f"fold {fold} does not exist (the splits have {len(splits)} folds)",
                           fix=f"use a fold 0–{len(splits) - 1} or 'all'")
    train, val = list(splits[fold]["train"]), list(splits[fold]["val"])
    if not train:
        raise XtlunetError(f"fold {fold} of splits_final.json has no training cases: nothing to learn from", path=path,
                           fix=f"give fold {fold} \"train\" cases in splits_final.json, or delete the file for the "
                               "default split")
    if not val:
        raise XtlunetError(f"fold {fold} of splits_final.json has no validation cases: its validation loss would be "
                           "NaN and no best checkpoint written", path=path,
                           fix=f"give fold {fold} at least one \"val\" case in splits_final.json (or delete the file "
                               "for the default split), or train fold 'all' (every case, no validation)")
    return train, val
