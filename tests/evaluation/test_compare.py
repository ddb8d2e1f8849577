"""`xtlunet compare` on fake results trees: per-arm and pairwise numbers, outputs, and refused comparisons."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon
from sklearn.metrics import roc_auc_score

from xtlunet import cli
from xtlunet.errors import XtlunetError
from xtlunet.evaluation.compare import (compare_arms, compare_classification, compare_segmentation,
                                        cross_validated_score)
from xtlunet.evaluation.segmentation_metrics import LesionCounts
from xtlunet.evaluation.statistics import delong_test
from xtlunet.evaluation.summary import CaseScores, FindingScores, ValidationSummary
from xtlunet.plans import ConfigurationPlan, Plans

ARMS = {"XTLTrainer": "xtlunetPlansXTL", "TLTrainer": "xtlunetPlansXTL", "ScratchTrainer": "xtlunetPlans"}
SHIFT = {"XTLTrainer": 0.08, "TLTrainer": 0.04, "ScratchTrainer": 0.0}
FOLDS = {0: [f"c{i:02d}" for i in range(6)], 1: [f"c{i:02d}" for i in range(6, 12)]}
SEG, CLS = "Dataset501_Fake", "Dataset502_Lesions"


def _fold_dir(results: Path, dataset: str, arm: str, fold: int, plans: str | None = None) -> Path:
    """results/DATASET/ARM__PLANS__3d_fullres/fold_K/validation."""
    return results / dataset / f"{arm}__{plans or ARMS[arm]}__3d_fullres" / f"fold_{fold}" / "validation"


def _plans(plans_name: str, patch: list[int] | None = None) -> Plans:
    """A minimal plan with a 3d_fullres configuration (what training writes into each model folder)."""
    conf = ConfigurationPlan(name="3d_fullres", task="segmentation", dim=3, spacing=[1.0, 1.0, 1.0],
                             patch_size=patch or [32, 32, 32], batch_size=2, median_shape=[64, 64, 64],
                             normalization=["zscore"], use_mask_for_norm=[False], architecture={"family": "plain"},
                             num_outputs=3, data_identifier=f"{plans_name}_3d_fullres")
    return Plans(plans_name=plans_name, dataset_name="Dataset501_Fake", planner="DefaultPlanner", task="segmentation",
                 channel_names={"0": "MR"}, labels={"background": 0, "a": 1, "b": 2}, classes={},
                 transpose_forward=[0, 1, 2], foreground_intensity_properties={}, configurations={"3d_fullres": conf})


def _write_cases(path: Path, rows: list[dict]) -> None:
    """A segmentation ValidationSummary of rows {case_id, label: metrics}, and the model folder's plans.json."""
    _plans(path.parents[2].name.split("__")[1]).save(path.parents[2] / "plans.json")
    cases = [CaseScores(r["case_id"], {int(k): v for k, v in r.items() if k != "case_id"}) for r in rows]
    ValidationSummary(task="segmentation", labels=[1, 2], cases=cases).save(path)


def _write_findings(path: Path, rows: list[dict]) -> None:
    """A classification ValidationSummary of rows {case_id, finding_id, label, p0, p1, ...}, and plans.json."""
    _plans(path.parents[2].name.split("__")[1]).save(path.parents[2] / "plans.json")
    findings = [FindingScores(r["case_id"], r["finding_id"], int(r["label"]),
                              [r[f"p{k}"] for k in range(sum(c.startswith("p") for c in r))]) for r in rows]
    ValidationSummary(task="classification", findings=findings).save(path)


def _lesions(i: int, arm: str) -> dict[str, int]:
    """Lesion counts of case i: three reference lesions, of which XTL finds all, the others two or one."""
    found = {"XTLTrainer": 3, "TLTrainer": 2, "ScratchTrainer": 1 + i % 2}[arm]
    return {"n_ref_lesions": 3, "n_ref_detected": found, "n_pred_lesions": 4, "n_pred_tp": found}


@pytest.fixture
def seg_tree(roots: dict[str, Path]) -> dict[str, dict[str, float]]:
    """3 arms × 2 folds of segmentation summaries; returns each arm's expected per-case Dice."""
    rng = np.random.default_rng(3)
    base, noise = rng.uniform(0.4, 0.8, (12, 2)), rng.normal(0, 0.05, (3, 12, 2))
    expected: dict[str, dict[str, float]] = {}
    for a, arm in enumerate(ARMS):
        d = base + SHIFT[arm] + noise[a]
        d[3, 1] = np.nan  # label 2 absent from case c03: its Dice is label 1's alone
        expected[arm] = {f"c{i:02d}": float(np.nanmean(d[i])) for i in range(12)}
        for fold, cases in FOLDS.items():
            rows = [{"case_id": c, **{str(lab + 1): {"dice": d[int(c[1:]), lab], **_lesions(int(c[1:]), arm)}
                                      for lab in range(2)}} for c in cases]
            _write_cases(_fold_dir(roots["results"], SEG, arm, fold) / "summary.json", rows)
    return expected


@pytest.fixture
def cls_tree(roots: dict[str, Path]) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
    """3 arms × 2 folds of classification summaries (p0, p1); returns labels and class-1 scores by finding key."""
    rng = np.random.default_rng(5)
    y = np.tile([0, 1], 12)
    labels = {f"c{i // 2:02d}/{i % 2}": int(y[i]) for i in range(24)}
    scores: dict[str, dict[str, float]] = {}
    for arm, sep in zip(ARMS, (1.5, 1.0, 0.3)):
        p = 1 / (1 + np.exp(-(sep * (2 * y - 1) + rng.normal(0, 1, 24))))
        scores[arm] = dict(zip(labels, p.tolist()))
        for fold, cases in FOLDS.items():
            rows = [{"case_id": k.split("/")[0], "finding_id": k.split("/")[1], "label": labels[k],
                     "p0": 1 - scores[arm][k], "p1": scores[arm][k]} for k in labels if k[:3] in cases]
            _write_findings(_fold_dir(roots["results"], CLS, arm, fold) / "summary.json", rows)
    return labels, scores


def test_segmentation_numbers_and_outputs(seg_tree, roots):
    res = compare_arms(501, "3d_fullres", list(ARMS), n_boot=500)
    out = roots["results"] / SEG / "compare_3d_fullres"
    assert res["folds"] == [0, 1] and res["n"] == 12
    arm_rows = {r["arm"]: r for r in res["arms"]}
    for arm, dice in seg_tree.items():
        v = np.array([dice[c] for c in sorted(dice)])
        assert arm_rows[arm]["mean_dice"] == pytest.approx(v.mean())
        assert arm_rows[arm]["sd_dice"] == pytest.approx(v.std(ddof=1))
        assert arm_rows[arm]["median_dice"] == pytest.approx(np.median(v))
    assert arm_rows["XTLTrainer"]["lesion_f1"] == pytest.approx(2 * 0.75 * 1.0 / 1.75)  # TPR 72/72, PPV 72/96
    assert arm_rows["ScratchTrainer"]["lesion_f1"] == pytest.approx(LesionCounts(72, 36, 96, 36).f1)  # 1 or 2 found
    pairs = {(p["arm"], p["vs"]): p for p in res["pairs"]}
    assert list(pairs) == [("XTLTrainer", "TLTrainer"), ("XTLTrainer", "ScratchTrainer"),
                           ("TLTrainer", "ScratchTrainer")]
    for (a, b), pair in pairs.items():
        va, vb = (np.array([seg_tree[arm][c] for c in sorted(seg_tree[arm])]) for arm in (a, b))
        assert pair["p_wilcoxon"] == pytest.approx(wilcoxon(va, vb).pvalue)
        assert pair["mean_diff"] == pytest.approx((va - vb).mean())
        assert pair["ci_low"] <= pair["mean_diff"] <= pair["ci_high"]
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["row"], r["arm"], r["vs"]) for r in rows] == [("arm", a, "") for a in ARMS] + \
        [("pair", a, b) for a, b in pairs]
    assert float(rows[0]["mean_dice"]) == pytest.approx(arm_rows["XTLTrainer"]["mean_dice"])
    assert float(rows[3]["p_wilcoxon"]) == pytest.approx(pairs["XTLTrainer", "TLTrainer"]["p_wilcoxon"])
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "comparison.md").read_text()
    assert "2 folds (0, 1), 12 cases" in md and "XTLTrainer = `XTLTrainer__xtlunetPlansXTL__3d_fullres`" in md


def test_classification_numbers_and_outputs(cls_tree, tmp_path):
    labels, scores = cls_tree
    res = compare_arms(CLS, "3d_fullres", list(ARMS), out_dir=tmp_path / "cmp", n_boot=500)
    keys = sorted(labels)
    y = [labels[k] for k in keys]
    assert res["n"] == 24 and res["positive_class"] == 1
    for row in res["arms"]:
        assert row["auc"] == pytest.approx(roc_auc_score(y, [scores[row["arm"]][k] for k in keys]))
        assert row["ci_low"] <= row["auc"] <= row["ci_high"] and row["n_positive"] == 12
    for pair in res["pairs"]:
        ref = delong_test(y, [scores[pair["arm"]][k] for k in keys], [scores[pair["vs"]][k] for k in keys])
        assert (pair["z_delong"], pair["p_delong"]) == pytest.approx((ref["z"], ref["p"]))
        assert pair["auc_diff"] == pytest.approx(ref["diff"])
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "24 findings paired across the arms, 12 of them positive (class 1)" in md


def test_cli_prints_the_report_and_errors_in_one_line(seg_tree, monkeypatch, capsys):
    assert cli.main(["compare", "-d", "501", "-c", "3d_fullres", "--arms", "XTLTrainer", "ScratchTrainer",
                     "--folds", "1", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "1 fold (1), 6 cases" in out and "| XTLTrainer | ScratchTrainer | 6 |" in out and "wrote " in out
    assert cli.main(["compare", "-d", "501", "-c", "3d_fullres", "--arms", "XTLTrainer", "FooTrainer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "arm FooTrainer has no 3d_fullres model folder" in err[0]


def test_mismatched_splits_are_refused(seg_tree, roots):
    path = _fold_dir(roots["results"], SEG, "TLTrainer", 1) / "summary.json"
    path.write_text(path.read_text().replace('"c11"', '"c99"'))
    with pytest.raises(XtlunetError, match=r"XTLTrainer and TLTrainer were scored on different cases in fold 1 "
                                           r"\(c11, c99 in only one\).*same splits"):
        compare_arms(501, "3d_fullres", list(ARMS), n_boot=10)


def test_missing_and_ambiguous_arms_are_refused(seg_tree, roots):
    with pytest.raises(XtlunetError, match=r"arm XTLTrainr has no 3d_fullres model folder \(did you mean "
                                           r"'XTLTrainer__xtlunetPlansXTL'\?\).*xtlunet train Dataset501_Fake"):
        compare_arms(501, "3d_fullres", ["XTLTrainr", "TLTrainer"], n_boot=10)
    src = _fold_dir(roots["results"], SEG, "XTLTrainer", 0).parents[1]
    shutil.copytree(src, src.with_name("XTLTrainer__xtlunetPlans__3d_fullres"))
    with pytest.raises(XtlunetError, match=r"arm XTLTrainer is ambiguous.*XTLTrainer__xtlunetPlansXTL__3d_fullres.*"
                                           r"name the arm as TRAINER__PLANS"):
        compare_arms(501, "3d_fullres", ["XTLTrainer", "TLTrainer"], n_boot=10)
    res = compare_arms(501, "3d_fullres", ["XTLTrainer__xtlunetPlans", "XTLTrainer__xtlunetPlansXTL"], n_boot=10)
    assert res["pairs"][0]["mean_diff"] == 0.0 and res["pairs"][0]["p_wilcoxon"] == 1.0


def test_folds_default_to_those_every_arm_finished(seg_tree, roots):
    extra = _fold_dir(roots["results"], SEG, "ScratchTrainer", 2)
    shutil.copytree(_fold_dir(roots["results"], SEG, "ScratchTrainer", 1), extra)
    assert compare_arms(501, "3d_fullres", list(ARMS), n_boot=10)["folds"] == [0, 1]
    with pytest.raises(XtlunetError, match=r"arm XTLTrainer has no validation/summary.json for fold 2.*"
                                           r"--folds from \[0, 1\]"):
        compare_arms(501, "3d_fullres", list(ARMS), folds=[1, 2], n_boot=10)


def test_multiclass_needs_a_positive_class(roots):
    rows = [{"case_id": f"c{i}", "finding_id": "0", "label": i % 3, "p0": 0.2, "p1": 0.3 + 0.01 * (i % 3 == 1),
             "p2": 0.5 - 0.01 * (i % 5)} for i in range(12)]
    for arm in ("XTLTrainer", "ScratchTrainer"):
        _write_findings(_fold_dir(roots["results"], CLS, arm, 0) / "summary.json", rows)
    with pytest.raises(XtlunetError, match="3 classes.*--positive-class"):
        compare_arms(502, "3d_fullres", ["XTLTrainer", "ScratchTrainer"], n_boot=10)
    res = compare_arms(502, "3d_fullres", ["XTLTrainer", "ScratchTrainer"], n_boot=10, positive_class="2")
    y = [int(r["label"] == 2) for r in sorted(rows, key=lambda r: r["case_id"])]
    assert res["positive_class"] == 2 and res["arms"][0]["n_positive"] == sum(y) == 4


def test_pure_functions_pair_by_key():
    dice = {"a": {"x": 0.9, "y": 0.8, "z": 0.7}, "b": {"z": 0.6, "y": 0.75, "x": 0.85}}
    res = compare_segmentation(dice, n_boot=50)
    assert res["keys"] == ["x", "y", "z"] and res["pairs"][0]["mean_diff"] == pytest.approx(0.2 / 3)
    with pytest.raises(XtlunetError, match=r"arms a and b were scored on different cases \(w in only one\)"):
        compare_segmentation({"a": dice["a"], "b": {**dice["b"], "w": 0.5}})
    labels = {"k1": 0, "k2": 1, "k3": 0, "k4": 1}
    res = compare_classification(labels, {"a": {"k1": 0.1, "k2": 0.9, "k3": 0.2, "k4": 0.8},
                                          "b": {"k1": 0.3, "k2": 0.2, "k3": 0.1, "k4": 0.9}}, n_boot=50)
    assert [r["auc"] for r in res["arms"]] == [1.0, 0.75] and res["pairs"][0]["auc_diff"] == pytest.approx(0.25)
    with pytest.raises(XtlunetError, match="two or more distinct arms"):
        compare_classification(labels, {"a": {}})


def test_arms_on_different_plans_are_refused_or_noted(seg_tree, roots, tmp_path):
    scratch = _fold_dir(roots["results"], SEG, "ScratchTrainer", 0).parents[1]
    _plans("xtlunetPlans", patch=[48, 48, 48]).save(scratch / "plans.json")
    with pytest.raises(XtlunetError, match=r"arms XTLTrainer and ScratchTrainer were trained on different plans "
                                           r"\(xtlunetPlansXTL vs xtlunetPlans: patch_size differ\).*one plan"):
        compare_arms(501, "3d_fullres", list(ARMS), n_boot=10)
    res = compare_arms(501, "3d_fullres", list(ARMS), n_boot=10, out_dir=tmp_path / "c", allow_different_plans=True)
    assert len(res["notes"]) == 1 and "patch_size differ" in (tmp_path / "c" / "comparison.md").read_text()
    assert [a["chain"] for a in res["arms"]] == ["random"] * 3     # no transfer reports in this tree


def test_patients_are_the_bootstrap_unit_of_a_classification_comparison(cls_tree):
    res = compare_arms(502, "3d_fullres", list(ARMS), n_boot=50)
    assert res["bootstrap"] == "patients"


def test_cross_validated_score_of_one_arm(seg_tree, cls_tree, roots):
    folder = _fold_dir(roots["results"], SEG, "XTLTrainer", 0).parents[1]
    dice = np.array(list(seg_tree["XTLTrainer"].values()))
    res = cross_validated_score(folder, n_boot=500)
    assert (res["metric"], res["n"], res["folds"]) == ("dice", 12, [0, 1])
    assert res["value"] == pytest.approx(dice.mean()) and res["ci_low"] < res["value"] < res["ci_high"]
    assert res["ci_high"] - res["ci_low"] < 4 * dice.std(ddof=1) / np.sqrt(12)     # a CI of the mean, not of cases
    assert cross_validated_score(folder, folds=[1], n_boot=200)["n"] == 6
    labels, scores = cls_tree
    keys = sorted(labels)
    res = cross_validated_score(_fold_dir(roots["results"], CLS, "ScratchTrainer", 0).parents[1], n_boot=500)
    assert res["metric"] == "auc" and res["n"] == 24 and res["positive_class"] == 1
    assert res["value"] == pytest.approx(roc_auc_score([labels[k] for k in keys],
                                                       [scores["ScratchTrainer"][k] for k in keys]))
    assert res["ci_low"] <= res["value"] <= res["ci_high"]
