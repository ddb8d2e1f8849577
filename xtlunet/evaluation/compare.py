"""Compare training arms on the same cross-validation splits: paired per-case Dice, or correlated ROC AUCs.

Each arm's fold_K/validation/summary.json files are pooled over the folds; cases (segmentation) or
findings (classification) are paired by id across arms, so every arm must have been validated on the
same splits. Pairs are reported as first arm − second arm, in the order the arms were given.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xtlunet.dataset.spec import find_dataset
from xtlunet.errors import XtlunetError, did_you_mean, look_up_option, noun, plural
from xtlunet.evaluation.classification_metrics import auc_with_ci, roc_png
from xtlunet.evaluation.segmentation_metrics import LesionCounts
from xtlunet.evaluation.statistics import (bootstrap_auc_diff_ci, bootstrap_mean_ci, bootstrap_mean_diff_ci, delong_test,
                                          paired_wilcoxon)
from xtlunet.evaluation.tables import markdown_table, write_csv
from xtlunet.evaluation.summary import CaseScores, FindingScores, ValidationSummary
from xtlunet.paths import NUM_FOLDS, model_folders, results_root
from xtlunet.plans import Plans
from xtlunet.utils.atomic import atomic_path, read_json, write_text

NAN = float("nan")
ARM_COLUMNS = {"segmentation": ("arm", "n", "mean_dice", "sd_dice", "median_dice", "lesion_f1", "chain"),
               "classification": ("arm", "n", "n_positive", "auc", "ci_low", "ci_high", "chain")}
DESIGN_FIELDS = ("architecture", "patch_size", "spacing", "batch_size", "normalization")
PAIR_COLUMNS = {"segmentation": ("arm", "vs", "n", "mean_diff", "ci_low", "ci_high", "p_wilcoxon"),
                "classification": ("arm", "vs", "n", "auc_diff", "ci_low", "ci_high", "z_delong", "p_delong")}


def few(items: Sequence[Any], n: int = 3) -> str:
    """The first n items, comma-separated, with a count of the rest."""
    return ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")


def same_keys(key_sets: Mapping[str, Any], what: str, fix: str) -> list[str]:
    """The sorted keys that every arm shares; refuses arms whose keys differ, naming the first two that do."""
    (first, ref), *rest = [(arm, set(keys)) for arm, keys in key_sets.items()]
    for arm, keys in rest:
        if keys != ref:
            raise XtlunetError(f"arms {first} and {arm} were scored on different {what} "
                               f"({few(sorted(ref ^ keys))} in only one)", fix=fix)
    return sorted(ref)


def _two_arms(arms: Sequence[str]) -> None:
    """Refuse fewer than two distinct arms."""
    if len(set(arms)) < 2 or len(set(arms)) != len(arms):
        raise XtlunetError(f"comparing needs two or more distinct arms, got {', '.join(arms) or 'none'}",
                           fix="e.g. --arms XTLTrainer TLTrainer ScratchTrainer")


def compare_segmentation(dice: Mapping[str, Mapping[str, float]], lesions: Mapping[str, LesionCounts] | None = None,
                         n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per arm n/mean/SD/median Dice and pooled lesion F1; per pair the paired mean difference (CI) and Wilcoxon p."""
    _two_arms(list(dice))
    cases = same_keys(dice, "cases", "evaluate every arm on the same cases")
    values = {arm: np.array([d[c] for c in cases], dtype=np.float64) for arm, d in dice.items()}
    arms = []
    for arm, v in values.items():
        f = v[np.isfinite(v)]
        arms.append({"arm": arm, "n": int(f.size), "mean_dice": float(np.mean(f)) if f.size else NAN,
                     "sd_dice": float(np.std(f, ddof=1)) if f.size > 1 else NAN,
                     "median_dice": float(np.median(f)) if f.size else NAN,
                     "lesion_f1": lesions[arm].f1 if lesions and arm in lesions else NAN})
    pairs = []
    for a, b in itertools.combinations(values, 2):
        w = paired_wilcoxon(values[a], values[b])
        diff, lo, hi = bootstrap_mean_diff_ci(values[a], values[b], n_boot, seed)
        pairs.append({"arm": a, "vs": b, "n": w["n"], "mean_diff": diff, "ci_low": lo, "ci_high": hi,
                      "wilcoxon_statistic": w["statistic"], "p_wilcoxon": w["p"]})
    return {"task": "segmentation", "n": len(cases), "keys": cases, "arms": arms, "pairs": pairs}


def compare_classification(labels: Mapping[str, int], scores_by_arm: Mapping[str, Mapping[str, float]],
                           n_boot: int = 2000, seed: int = 0, patients: Mapping[str, str] | None = None
                           ) -> dict[str, Any]:
    """Per arm AUC with a bootstrap CI; per pair the AUC difference, its paired bootstrap CI, DeLong z and p.

    With `patients` (finding key → patient id) the bootstraps resample patients, not findings.
    """
    _two_arms(list(scores_by_arm))
    keys = same_keys(scores_by_arm, "findings", "evaluate every arm on the same findings")
    unlabelled = [k for k in keys if k not in labels]
    if unlabelled:
        raise XtlunetError(f"no label for {plural(len(unlabelled), 'finding')}: {few(unlabelled)}",
                           fix="give a 0/1 label for every scored finding")
    y = np.array([labels[k] for k in keys])
    groups = [patients.get(k, k) for k in keys] if patients else None
    s = {arm: np.array([sc[k] for k in keys], dtype=np.float64) for arm, sc in scores_by_arm.items()}
    arms = []
    for arm, v in s.items():
        auc, lo, hi = auc_with_ci(y, v, n_boot, seed, groups=groups)
        arms.append({"arm": arm, "n": int(y.size), "n_positive": int(y.sum()), "auc": auc, "ci_low": lo, "ci_high": hi})
    pairs = []
    for a, b in itertools.combinations(s, 2):
        d = delong_test(y, s[a], s[b])
        diff, lo, hi = bootstrap_auc_diff_ci(y, s[a], s[b], n_boot, seed, groups=groups)
        pairs.append({"arm": a, "vs": b, "n": int(y.size), "auc_diff": diff, "ci_low": lo, "ci_high": hi,
                      "z_delong": d["z"], "p_delong": d["p"]})
    return {"task": "classification", "n": int(y.size), "keys": keys, "arms": arms, "pairs": pairs,
            "bootstrap": "patients" if groups else "findings"}


def resolve_arm(results: Path, dataset_name: str, configuration: str, arm: str) -> Path:
    """The model folder of an arm named TRAINER or TRAINER__PLANS; a missing or ambiguous arm is an error."""
    found = [results / dataset_name / f"{arm}__{configuration}"] if "__" in arm else \
        model_folders(results, dataset_name, configuration, arm)
    found = [f for f in found if f.is_dir()]
    if len(found) == 1:
        return found[0]
    if found:
        raise XtlunetError(f"arm {arm} is ambiguous: {configuration} was trained with it under several plans "
                           f"({', '.join(f.name for f in found)})",
                           fix=f"name the arm as TRAINER__PLANS, e.g. --arms {found[0].name.rsplit('__', 1)[0]}")
    known = [f.name.rsplit("__", 1)[0] for f in model_folders(results, dataset_name, configuration, None)]
    raise XtlunetError(f"arm {arm} has no {configuration} model folder{did_you_mean(arm, known)}",
                       path=results / dataset_name,
                       fix=f"train it (xtlunet train {dataset_name} {configuration} FOLD -tr {arm.split('__')[0]})"
                           f"; trained arms: {', '.join(known) or 'none'}")


def finished_folds(folder: Path) -> list[int]:
    """Folds of a model folder that have a validation/summary.json."""
    return [k for k in range(NUM_FOLDS) if (folder / f"fold_{k}" / "validation" / "summary.json").is_file()]


def load_fold_summaries(folders: Mapping[str, Path], folds: Sequence[int] | None = None,
                        ) -> tuple[list[int], dict[str, dict[int, ValidationSummary]]]:
    """(folds used, {arm: {fold: summary}}); default folds: those every arm has finished."""
    done = {arm: finished_folds(f) for arm, f in folders.items()}
    if folds is not None:
        folds = sorted(set(folds))
    else:
        folds = sorted(set.intersection(*(set(v) for v in done.values())))
        if not folds:
            raise XtlunetError("no fold has a final validation in every arm ("
                               + "; ".join(f"{a}: {few(v) or 'none'}" for a, v in done.items()) + ")",
                               fix="train the same folds of every arm to the end (without --no-final-validation)")
    for arm, have in done.items():
        missing = sorted(set(folds) - set(have))
        if missing:
            raise XtlunetError(f"arm {arm} has no validation/summary.json for {noun(len(missing), 'fold')} {few(missing)}",
                               path=folders[arm], fix=f"finish those folds, or pass --folds from {have or 'none'}")
    return list(folds), {arm: {k: ValidationSummary.load(f / f"fold_{k}" / "validation" / "summary.json")
                               for k in folds} for arm, f in folders.items()}


def _task_of(summaries: Mapping[str, Mapping[int, ValidationSummary]]) -> str:
    """'segmentation' or 'classification', the same for every arm and fold."""
    tasks = {s.task for by_fold in summaries.values() for s in by_fold.values()}
    if len(tasks) != 1:
        raise XtlunetError(f"the arms' validation summaries are of different kinds ({few(sorted(tasks))})",
                           fix="compare arms of one dataset and configuration, with finished final validations")
    return tasks.pop()


def _items(task: str, arm: str, by_fold: Mapping[int, ValidationSummary]) -> dict[str, Any]:
    """An arm's validation cases (by case_id) or findings (by case_id/finding_id); refuses one in two folds."""
    out: dict[str, Any] = {}
    for s in by_fold.values():
        for item in (s.cases if task == "segmentation" else s.findings):
            key = item.case_id if task == "segmentation" else item.key
            if key in out:
                raise XtlunetError(f"arm {arm} validated '{key}' in two folds", fix="use folds of one cross-validation")
            out[key] = item
    return out


def _check_splits(task: str, folds: Sequence[int], summaries: Mapping[str, Mapping[int, ValidationSummary]]) -> None:
    """Refuse arms whose validation cases differ in a fold: they must be on the same splits."""
    fix = "train every arm with the same splits (the dataset's splits_final.json) and compare those folds"
    for k in folds:
        same_keys({arm: _items(task, arm, {k: s[k]}) for arm, s in summaries.items()}, f"cases in fold {k}", fix)


def _positive_index(positive: str | None, findings: Mapping[str, FindingScores], classes: Mapping[str, int]) -> int:
    """The class scored as positive: class 1 of a binary task, else the --positive-class value or name."""
    n_classes = len(next(iter(findings.values())).probabilities) if findings else 0
    if positive is None:
        if n_classes == 2:
            return 1
        raise XtlunetError(f"the findings have {n_classes} classes; an AUC comparison needs one positive class",
                           fix="pass --positive-class CLASS to compare one-vs-rest AUCs of that class")
    if positive.isdigit() and int(positive) < n_classes:
        return int(positive)
    return classes[look_up_option(positive, list(classes) or [str(k) for k in range(n_classes)], "class")] \
        if classes else int(look_up_option(positive, [str(k) for k in range(n_classes)], "class"))


def dice_boxplot(dice: Mapping[str, Mapping[str, float]], path: str | Path, title: str) -> Path:
    """Box plots of per-case Dice per arm, each case drawn as a point, to a PNG file (atomically)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    data = [np.array([v for v in d.values() if math.isfinite(v)]) for d in dice.values()]
    fig = Figure(figsize=(2.0 + 1.5 * len(data), 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.boxplot(data, showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for i, v in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, v.size), v, s=12, alpha=0.6, zorder=3)
    ax.set_xticks(range(1, len(data) + 1), list(dice))
    ax.set(ylabel="Dice per case (mean over foreground classes)", title=title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def comparison_markdown(result: Mapping[str, Any]) -> str:
    """The report: what was compared on how many folds and cases, the per-arm table and the pairwise table."""
    task, folds = result["task"], result["folds"]
    unit = "cases" if task == "segmentation" else "findings"
    counts = f"{plural(len(folds), 'fold')} ({', '.join(map(str, folds))}), {result['n']} {unit} paired across the arms"
    if task == "classification":
        counts += f", {result['arms'][0]['n_positive']} of them positive (class {result['positive_class']})"
    metric = ("Dice per case (mean over foreground classes; lesion F1 pooled over cases and classes)"
              if task == "segmentation" else "ROC AUC")
    return "\n".join([
        f"# {result['dataset']} {result['configuration']}: {' vs '.join(a['arm'] for a in result['arms'])}", "",
        f"Cross-validation {metric}: {counts}.", "",
        "Model folders: " + ", ".join(f"{a} = `{f}`" for a, f in result["arm_folders"].items()) + ".", "",
        *[f"**Note: {n}.**\n" for n in result.get("notes", [])],
        "## Per arm", "", markdown_table(result["arms"], ARM_COLUMNS[task]),
        f"## Pairs (arm − vs, 95 % bootstrap CI over {result.get('bootstrap', 'cases')})", "",
        markdown_table(result["pairs"], PAIR_COLUMNS[task])])


def comparison_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per arm, then one per pair of arms (columns: row, arm, vs, then the statistics)."""
    rows = [{"row": "arm", **a} for a in result["arms"]] + [{"row": "pair", **p} for p in result["pairs"]]
    return [{"row": r["row"], "arm": r["arm"], "vs": r.get("vs", ""), **r} for r in rows]


def _segmentation_arms(items: Mapping[str, Mapping[str, CaseScores]], n_boot: int, seed: int, png: Path,
                       title: str) -> dict[str, Any]:
    """compare_segmentation on the arms' validation cases, and the Dice box plots."""
    dice = {arm: {k: c.mean_dice() for k, c in it.items()} for arm, it in items.items()}
    lesions = {arm: sum((c.lesions() for c in it.values()), LesionCounts()) for arm, it in items.items()}
    result = compare_segmentation(dice, lesions, n_boot, seed)
    dice_boxplot(dice, png, title)
    return result


def _classification_arms(items: Mapping[str, Mapping[str, FindingScores]], pos: int, n_boot: int, seed: int,
                         png: Path, title: str) -> dict[str, Any]:
    """compare_classification of class `pos` against the rest on the arms' validation findings, and the ROC curves."""
    labels = {arm: {k: int(f.label == pos) for k, f in it.items()} for arm, it in items.items()}
    (first, ref), *rest = labels.items()
    for arm, lab in rest:
        differ = sorted(k for k in ref if lab.get(k) != ref[k])
        if differ:
            raise XtlunetError(f"arms {first} and {arm} disagree on the label of {few(differ)}",
                               fix="compare arms trained on the same findings.csv")
    scores = {arm: {k: float(f.probabilities[pos]) for k, f in it.items()} for arm, it in items.items()}
    patients = {k: f.patient_id or f.case_id for k, f in next(iter(items.values())).items()}
    result = compare_classification(ref, scores, n_boot, seed, patients)
    keys = result["keys"]
    roc_png([ref[k] for k in keys], {a: [s[k] for k in keys] for a, s in scores.items()}, png,
            f"{title} (class {pos} vs rest)")
    return {**result, "positive_class": pos}


def cross_validated_score(folder: Path, folds: Sequence[int] | None = None, n_boot: int = 2000, seed: int = 0,
                          positive_class: str | None = None) -> dict[str, Any]:
    """One arm's result over its folds' validations with a 95 % bootstrap CI: the mean per-case Dice (cases
    resampled), or the AUC of the positive class (patients resampled)."""
    used, summaries = load_fold_summaries({folder.name: folder}, folds)
    task = _task_of(summaries)
    items = _items(task, folder.name, summaries[folder.name])
    if task == "segmentation":
        value, lo, hi = bootstrap_mean_ci([c.mean_dice() for c in items.values()], n_boot, seed)
        return {"task": task, "metric": "dice", "value": value, "ci_low": lo, "ci_high": hi, "n": len(items),
                "folds": used}
    classes = next(iter(summaries[folder.name].values())).classes
    pos = _positive_index(positive_class, items, classes)
    found = list(items.values())
    value, lo, hi = auc_with_ci([int(f.label == pos) for f in found], [f.probabilities[pos] for f in found], n_boot,
                                seed, groups=[f.patient_id or f.case_id for f in found])
    return {"task": task, "metric": "auc", "value": value, "ci_low": lo, "ci_high": hi, "n": len(found),
            "folds": used, "positive_class": pos}


def arm_design(folder: Path, configuration: str) -> tuple[str, Plans]:
    """(design identity, plans) of a model folder's configuration, from the plans.json training wrote there."""
    plans = Plans.load(folder / "plans.json")
    return plans.design_identity(configuration), plans


def check_same_design(folders: Mapping[str, Path], configuration: str, allow: bool = False) -> list[str]:
    """Refuse arms trained on different plans (network, patch, spacing, …): their difference would confound the
    comparison. With `allow`, the differences come back as notes for the report instead."""
    designs = {arm: arm_design(f, configuration) for arm, f in folders.items()}
    (first, (ref_id, ref)), *rest = designs.items()
    notes = []
    for arm, (ident, plans) in rest:
        if ident == ref_id:
            continue
        a, b = ref.configuration(configuration), plans.configuration(configuration)
        what = [k for k in DESIGN_FIELDS if getattr(a, k) != getattr(b, k)] or ["preprocessing or labels"]
        text = (f"arms {first} and {arm} were trained on different plans ({ref.plans_name} vs {plans.plans_name}: "
                f"{', '.join(what)} differ)")
        if not allow:
            raise XtlunetError(text, fix="train every arm on one plan (-p PLANS for each, e.g. the XTL plan), or pass "
                                         "--allow-different-plans to compare anyway with a note in the report")
        notes.append(text + "; the comparison measures the plans' difference too")
    return notes


def arm_chain(folder: Path, folds: Sequence[int]) -> str:
    """The weights' history of an arm, from its first fold's transfer report ('random' without one)."""
    report = folder / f"fold_{folds[0]}" / "transfer_report.json" if folds else None
    if report is None or not report.is_file():
        return "random"
    return " → ".join(read_json(report).get("chain", [])) or "unrecorded"


def compare_arms(dataset: str | int, configuration: str, arms: Sequence[str], folds: Sequence[int] | None = None,
                 out_dir: str | Path | None = None, n_boot: int = 2000, seed: int = 0,
                 positive_class: str | None = None, allow_different_plans: bool = False) -> dict[str, Any]:
    """Compare arms on their cross-validation results; write comparison.md/.csv/.png and return the result."""
    _two_arms(arms)
    results = results_root()
    name = find_dataset(dataset, results).name
    folders = {arm: resolve_arm(results, name, configuration, arm) for arm in arms}
    notes = check_same_design(folders, configuration, allow_different_plans)
    used, summaries = load_fold_summaries(folders, folds)
    task = _task_of(summaries)
    _check_splits(task, used, summaries)
    items = {arm: _items(task, arm, s) for arm, s in summaries.items()}
    out = Path(out_dir) if out_dir else results / name / f"compare_{configuration}"
    outputs = [out / "comparison.md", out / "comparison.csv", out / "comparison.png"]
    if task == "segmentation":
        result = _segmentation_arms(items, n_boot, seed, outputs[2], f"{name} {configuration}")
    else:
        classes = next(iter(summaries[arms[0]].values())).classes
        pos = _positive_index(positive_class, items[arms[0]], classes)
        result = _classification_arms(items, pos, n_boot, seed, outputs[2], f"{name} {configuration}")
    for row in result["arms"]:
        row["chain"] = arm_chain(folders[row["arm"]], used)
    result.update(dataset=name, configuration=configuration, folds=used, notes=notes,
                  arm_folders={a: f.name for a, f in folders.items()})
    write_text(outputs[0], comparison_markdown(result))
    write_csv(comparison_rows(result), outputs[1])
    result["outputs"] = [str(p) for p in outputs]
    return result
