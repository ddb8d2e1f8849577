"""What quality.py measures, how it scores a prediction folder (one code for both tools) and how it reports:
one row per training, and with --repeats the mean ± SD per tool and Welch's t-test of the difference."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

MB = 2 ** 20
TEST_SET_NOTE = ("only {n} test cases{why}: the per-case Dice mean moves a lot with one case; the pooled Dice and the "
                 "pooled lesion F1 ({lesions} reference lesions) are the steadier numbers")
SEED_NOTE = ("xtlunet training r uses --seed {seed} + r; nnU-Net does not seed its training, so each of its runs draws "
             "its own initialisation and patches")


@dataclass
class Dataset:
    """The raw dataset both tools train on and are scored on."""

    id: int
    name: str
    raw: Path                   # raw root (nnUNet_raw / XTLUNET_raw)
    labels: dict[str, int]      # foreground labels of dataset.json, name -> value
    file_ending: str
    test_ids: list[str]
    generated: bool

    @property
    def folder(self) -> Path:
        """raw/DatasetNNN_Name."""
        return self.raw / self.name


@dataclass
class Training:
    """One training of fold 0 and the scores of its model."""

    index: int
    seed: int | None                                             # None: the tool drew its own (nnU-Net)
    commands: dict[str, list[str]] = field(default_factory=dict)  # train, predict
    seconds: dict[str, float] = field(default_factory=dict)      # train (whole command), predict
    train: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolRun:
    """Everything measured for one tool: its plan, then each training."""

    tool: str
    origin: dict[str, str]
    plan: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)  # plan
    seconds: dict[str, float] = field(default_factory=dict)      # plan
    trainings: list[Training] = field(default_factory=list)

    def pooled(self) -> list[float]:
        """Pooled foreground Dice of each training."""
        return [t.scores["pooled_dice"] for t in self.trainings]


# ---------------------------------------------------------------------------------------------------------------
# Scoring (one code for both tools)
# ---------------------------------------------------------------------------------------------------------------

def score(pred_dir: Path, data: Dataset) -> dict[str, Any]:
    """Dice per class (mean over cases), pooled Dice and pooled lesion F1 of a prediction folder vs labelsTs."""
    import numpy as np

    from xtlunet.dataset.io import read_image
    from xtlunet.errors import XtlunetError
    from xtlunet.evaluation.evaluate_folders import evaluate_segmentation_folders
    from xtlunet.evaluation.segmentation_metrics import LesionCounts

    refs = data.folder / "labelsTs"
    values = sorted(data.labels.values())
    try:
        _, summary = evaluate_segmentation_folders(refs, pred_dir, values, data.file_ending)
    except XtlunetError as exc:
        sys.exit(f"scoring {pred_dir} failed: {exc}")
    per_class = summary.per_class()
    pooled_lesions = summary.lesion_pooled()
    sums = {v: np.zeros(3, dtype=np.int64) for v in values}  # TP, predicted, reference voxels
    for case in data.test_ids:
        ref = read_image(refs / f"{case}{data.file_ending}")[0]
        pred = read_image(pred_dir / f"{case}{data.file_ending}")[0]
        for v in values:
            p, r = pred == v, ref == v
            sums[v] += [int(np.logical_and(p, r).sum()), int(p.sum()), int(r.sum())]
    classes = {}
    for name, v in sorted(data.labels.items(), key=lambda kv: kv[1]):
        tp, p, r = (int(x) for x in sums[v])
        lesions = pooled_lesions[v]
        classes[name] = {"label": v, "dice_mean": per_class[v]["dice"]["mean"], "dice_n": per_class[v]["dice"]["n"],
                         "pooled_dice": 2 * tp / (p + r) if p + r else math.nan, "tp_voxels": tp,
                         "pred_voxels": p, "ref_voxels": r, **lesions.to_json()}
    total = sum(pooled_lesions.values(), LesionCounts())
    return {"dice_mean": summary.mean_dice_foreground,
            "pooled_dice": _nanmean([c["pooled_dice"] for c in classes.values()]),
            "lesion_f1": total.f1, "lesion_tpr": total.tpr, "lesion_ppv": total.ppv,
            "ref_lesions": total.n_ref_lesions, "pred_lesions": total.n_pred_lesions, "classes": classes,
            "cases": {c.case_id: c.mean_dice() for c in summary.cases}}


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


# ---------------------------------------------------------------------------------------------------------------
# Statistics over repeated trainings
# ---------------------------------------------------------------------------------------------------------------

def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN with fewer than two values)."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, sd


def compare_tools(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Difference of means a − b and Welch's two-sided t-test (scipy.stats; p NaN with fewer than 2 runs each)."""
    from scipy import stats

    diff = mean_sd(a)[0] - mean_sd(b)[0]
    if min(len(a), len(b)) < 2:
        return {"difference": diff, "t": math.nan, "p": math.nan}
    res = stats.ttest_ind(a, b, equal_var=False)
    return {"difference": diff, "t": float(res.statistic), "p": float(res.pvalue)}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def report(runs: dict[str, ToolRun], data: Dataset, args: Any, split_note: str | None, names: Sequence[str],
           configuration: str, busy_fraction: float) -> dict[str, Any]:
    """Print the table (one row per training), the repeat statistics and what a reader must know; return the
    statistics. `names` = (xtlunet's, nnU-Net's) tool names."""
    from train_step import fmt_axes

    print(f"\n{data.name}, {configuration} fold 0, {args.epochs} epochs x {args.iters} iterations "
          f"(+ {args.val_iters} validation iterations per epoch), --device {args.device}, {args.threads} threads, "
          f"{args.da_workers} augmentation workers; scored on {len(data.test_ids)} imagesTs cases without TTA")
    head = (f"{'tool':<11} {'run':>3} {'seed':>6} {'spacing (mm)':<18} {'patch':<11} {'batch':>5} {'iters':>6} "
            f"{'train s':>8} {'s/it':>6} {'Dice mean':>9} {'pooled Dice':>11} {'lesion F1':>9}")
    print(f"{head}\n{'-' * len(head)}")
    contended = False
    for tool, r in runs.items():
        for tr in r.trainings:
            t, s = tr.train, tr.scores
            contended |= t["contended"]
            print(f"{tool:<11} {tr.index:>3} {'—' if tr.seed is None else tr.seed:>6} "
                  f"{fmt_axes(r.plan['spacing'], 3):<18} {fmt_axes(r.plan['patch_size']):<11} "
                  f"{r.plan['batch_size']:>5} {t['iterations']:>6} {t['train_s']:>8.0f} {t['s_per_iteration']:>6.2f} "
                  f"{s['dice_mean']:>9.4f} {s['pooled_dice']:>11.4f} {s['lesion_f1']:>9.4f}"
                  + ("  *" if t["contended"] else ""))
    print("(train s = sum of the epoch times the tool logged (training and per-epoch validation iterations, no "
          "start-up, no final validation); s/it = train s / iterations; Dice mean = per class the mean over test "
          "cases, then the mean over classes; pooled Dice = 2·ΣTP/(ΣP+ΣR) over all test voxels; lesion F1 = pooled "
          "over all test cases, lesions = 26-connected components, detected at any overlap"
          + (f"; * = other processes used more than {busy_fraction:g} cores during that training" if contended
             else "") + ")")
    stats = repeat_statistics(runs, names)
    for tool, r in runs.items():
        for tr in r.trainings:
            t = tr.train
            print(f"{tool} run {tr.index}: training command {t['command_wall_s']:.0f} s, CPU {t['cpu_s']:.0f} s, "
                  f"peak RSS {t['peak_rss_bytes'] / MB:.0f} MB; predict {tr.seconds['predict']:.0f} s; "
                  + ", ".join(f"{name}: Dice {c['dice_mean']:.4f}, pooled {c['pooled_dice']:.4f} "
                              f"({c['pred_voxels']} predicted / {c['ref_voxels']} reference voxels), lesions "
                              f"{c['n_ref_detected']}/{c['n_ref_lesions']} found, {c['n_pred_tp']}/"
                              f"{c['n_pred_lesions']} predicted are real" for name, c in tr.scores["classes"].items()))
        print(f"{tool}: plan {r.seconds['plan']:.0f} s, median shape {fmt_axes(r.plan['median_shape'])}, "
              f"widths {r.plan.get('widths')}")
    if split_note:
        print(f"split: {split_note}")
    if len(runs) == 2:
        a, b = runs[names[0]].plan, runs[names[1]].plan
        same = {k: a[k] == b[k] for k in ("patch_size", "batch_size", "widths")}
        same["spacing"] = all(math.isclose(x, y, rel_tol=1e-3) for x, y in zip(a["spacing"], b["spacing"]))
        print("plans: " + ", ".join(f"{k.replace('_size', '')} {'same' if v else 'DIFFERENT'}"
                                    for k, v in same.items()))
    if len(data.test_ids) < 10:
        lesions = max(tr.scores["ref_lesions"] for r in runs.values() for tr in r.trainings)
        why = " (--test-cases)" if data.generated else ""
        print("note: " + TEST_SET_NOTE.format(n=len(data.test_ids), why=why, lesions=lesions))
    if names[0] in runs:
        print("seeds: " + SEED_NOTE.format(seed=runs[names[0]].trainings[0].seed))
    return stats


def repeat_statistics(runs: dict[str, ToolRun], names: Sequence[str]) -> dict[str, Any]:
    """Per tool the pooled Dice's mean ± SD over its trainings, and (both tools, repeated) Welch's test; printed."""
    per_tool = {tool: dict(zip(("mean", "sd"), mean_sd(r.pooled())), n=len(r.trainings)) for tool, r in runs.items()}
    if not any(v["n"] > 1 for v in per_tool.values()):
        return {"pooled_dice": per_tool}
    for tool, v in per_tool.items():
        print(f"{tool}: pooled Dice {v['mean']:.4f} ± {v['sd']:.4f} (mean ± SD of {v['n']} trainings: "
              + ", ".join(f"{x:.4f}" for x in runs[tool].pooled()) + ")")
    out: dict[str, Any] = {"pooled_dice": per_tool}
    if len(runs) == 2:
        c = compare_tools(runs[names[0]].pooled(), runs[names[1]].pooled())
        out["difference"] = c
        print(f"{names[0]} − {names[1]}: {c['difference']:+.4f} pooled Dice (Welch's t-test: t = {c['t']:.2f}, "
              f"p = {c['p']:.3f})")
    return out
