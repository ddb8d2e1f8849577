"""Post-processing learnt on hand-made CV results: which operation wins per label, its scores, the JSON file, and
`xtlunet apply-postprocessing` on files (geometry and dtype kept exactly)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xtlunet.cli import main
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_header, read_image, write_image
from xtlunet.errors import XtlunetError
from xtlunet.evaluation.segmentation_metrics import LesionCounts, evaluate_case, lesion_detection
from xtlunet.evaluation.summary import CaseScores, ValidationSummary
from xtlunet.postprocessing import (KEEP_LARGEST, NONE, REMOVE_SMALL, PostprocessingPlan, case_tables,
                                    learn_postprocessing, score_tables)

SHAPE = (8, 16, 16)
SPACING = (2.0, 1.0, 1.0)  # 2 mm³ voxels


def _box(arr: np.ndarray, lo: tuple[int, int, int], size: tuple[int, int, int], value: int = 1) -> None:
    """Paint a box of `size` voxels at `lo`."""
    arr[tuple(slice(a, a + s) for a, s in zip(lo, size))] = value


def _learn(pairs: list[tuple[np.ndarray, np.ndarray]]) -> PostprocessingPlan:
    """The plan learnt on (prediction, reference) cases of label 1."""
    tables = [case_tables(p, r, SPACING, [1]) for p, r in pairs]
    return learn_postprocessing({1: [t[1] for t in tables]}, {1: "lesion"})


def _largest_wins() -> list[tuple[np.ndarray, np.ndarray]]:
    """The true lesion found, plus false-positive blobs far from it."""
    cases = []
    for k in range(3):
        ref = np.zeros(SHAPE, np.uint8)
        _box(ref, (1, 1, 1), (4, 4, 4))
        pred = ref.copy()
        _box(pred, (5, 11, 11), (2, 2, 2))
        _box(pred, (0, 14, 2 + k), (1, 1, 1))
        cases.append((pred, ref))
    return cases


def _largest_loses_lesions() -> list[tuple[np.ndarray, np.ndarray]]:
    """A big lesion and two one-voxel lesions, each found by a 27-voxel blob: cleaner volume, lost lesions."""
    ref = np.zeros(SHAPE, np.uint8)
    _box(ref, (0, 0, 0), (4, 5, 5))
    ref[6, 12, 12] = ref[6, 3, 12] = 1
    pred = ref.copy()
    _box(pred, (5, 11, 11), (3, 3, 3))
    _box(pred, (5, 2, 11), (3, 3, 3))
    return [(pred, ref), (pred.copy(), ref.copy())]


def _threshold_wins() -> list[tuple[np.ndarray, np.ndarray]]:
    """Two true lesions of 64 and 27 voxels, plus one- and two-voxel false positives."""
    cases = []
    for k in range(2):
        ref = np.zeros(SHAPE, np.uint8)
        _box(ref, (0, 0, 0), (4, 4, 4))
        _box(ref, (4, 10, 10), (3, 3, 3))
        pred = ref.copy()
        pred[7, 0, 15 - k] = 1
        _box(pred, (7, 15, 0), (1, 1, 2))
        cases.append((pred, ref))
    return cases


def test_keep_largest_is_kept_when_it_raises_dice():
    plan = _learn(_largest_wins())
    rule = plan.rules[1]
    assert rule.operation == KEEP_LARGEST and rule.name == "lesion"
    assert rule.before.pooled_dice == pytest.approx(2 * 3 * 64 / (3 * 64 + 3 * 73))
    assert rule.after.pooled_dice == 1.0 and rule.after.lesion_f1 == 1.0 and rule.before.lesion_f1 == pytest.approx(0.5)
    assert "keep the largest component: pooled Dice 0.9" in rule.describe(1)


def test_keep_largest_is_dropped_when_it_loses_small_lesions():
    plan = _learn(_largest_loses_lesions())
    rule = plan.rules[1]
    largest = rule.tried[0]
    assert largest.operation == KEEP_LARGEST and not largest.passed and largest.why == "lesion F1 lowered"
    assert largest.score.pooled_dice > rule.before.pooled_dice + 0.1  # it would have raised the Dice
    assert largest.score.lesion_f1 == pytest.approx(0.5) and rule.before.lesion_f1 == 1.0
    assert rule.operation == NONE and rule.after == rule.before and plan.active() == {}
    assert rule.tried[1].operation == REMOVE_SMALL and not rule.tried[1].passed  # the 27-voxel blobs are lesions too
    assert "no operation" in rule.describe(1) and "lesion F1 lowered" in rule.describe(1)


def test_threshold_removal_is_kept_and_scores_match_the_metrics_module():
    cases = _threshold_wins()
    plan = _learn(cases)
    rule = plan.rules[1]
    assert rule.operation == REMOVE_SMALL and rule.min_volume_mm3 == 29.0  # midway between 2 and 27 voxels of 2 mm³
    assert rule.tried[0].operation == KEEP_LARGEST and rule.tried[0].why == "pooled Dice not raised"
    assert rule.after.pooled_dice == 1.0 and rule.after.lesion_f1 == 1.0
    # before: the tables agree with evaluate_case / ValidationSummary on the untouched predictions
    tables = [case_tables(p, r, SPACING, [1]) for p, r in cases]
    summary = ValidationSummary("segmentation", [1], cases=[CaseScores(str(k), evaluate_case(p, r, SPACING, [1]))
                                                            for k, (p, r) in enumerate(cases)])
    base = score_tables({1: [t[1] for t in tables]}).per_label[1]
    assert base.mean_dice == pytest.approx(summary.per_class()[1]["dice"]["mean"])
    assert base.lesion_f1 == pytest.approx(summary.lesion_pooled()[1].f1)
    # after: the plan applied to the arrays scores what the rule says
    done = [(plan.apply(p, SPACING), r) for p, r in cases]
    tp = sum(int(((p == 1) & (r == 1)).sum()) for p, r in done)
    pooled = 2 * tp / sum(int((p == 1).sum() + (r == 1).sum()) for p, r in done)
    lesions = sum((lesion_detection(p == 1, r == 1) for p, r in done), LesionCounts())
    assert pooled == rule.after.pooled_dice and lesions.f1 == rule.after.lesion_f1
    assert np.array_equal(done[0][0], done[0][1]) and cases[0][0].sum() == 91 + 3  # input untouched


def test_other_labels_are_untouched_and_the_file_round_trips(tmp_path):
    pred, ref = _largest_wins()[0]
    pred, ref = pred.copy(), ref.copy()
    pred[7, 7, 7] = 2
    ref[7, 7, 7] = 2
    plan = learn_postprocessing({k: [v] for k, v in case_tables(pred, ref, SPACING, [1, 2]).items()},
                                {1: "lesion", 2: "edema"}, {"candidate": "X"})
    out = plan.apply(pred, SPACING)
    assert out[7, 7, 7] == 2 and out.dtype == pred.dtype and int((out == 1).sum()) == 64
    path = plan.save(tmp_path / "postprocessing.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "xtlunet.postprocessing" and doc["version"] == 1 and doc["source"] == {"candidate": "X"}
    assert doc["labels"]["1"]["operation"] == KEEP_LARGEST and doc["labels"]["2"]["operation"] == NONE
    assert doc["labels"]["1"]["before"]["pooled_dice"] < doc["labels"]["1"]["after"]["pooled_dice"] == 1.0
    assert PostprocessingPlan.load(path).to_json() == plan.to_json()
    doc["labels"]["1"]["operation"] = "dilate"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(XtlunetError, match="malformed post-processing file.*dilate"):
        PostprocessingPlan.load(tmp_path / "bad.json")


GEOMETRY = Geometry(spacing=(2.0, 0.8, 0.7), origin=(10.5, -3.25, 7.0),
                    direction=(0.0, 0.0, 1.0, 0.6, 0.8, 0.0, -0.8, 0.6, 0.0), shape=SHAPE)


def _folder(tmp_path, cases):
    """A folder of label files (+ a probabilities file and a hidden file, not inputs) and a learnt plan file."""
    folder = tmp_path / "pred"
    for k, (pred, _) in enumerate(cases):
        write_image(folder / f"case{k}.nii.gz", pred, GEOMETRY)
    np.savez_compressed(folder / "case0.npz", probabilities=np.zeros((2, *SHAPE), np.float16))
    (folder / ".DS_Store").write_text("")
    tables = [case_tables(p, r, GEOMETRY.spacing, [1]) for p, r in cases]
    plan = learn_postprocessing({1: [t[1] for t in tables]}).save(tmp_path / "postprocessing.json")
    return folder, plan


def test_apply_postprocessing_keeps_geometry_and_dtype(tmp_path, capsys):
    cases = _threshold_wins()
    folder, plan_path = _folder(tmp_path, cases)
    out = tmp_path / "out"
    assert main(["apply-postprocessing", "-i", str(folder), "-o", str(out), "-pp", str(plan_path)]) == 0
    assert "2 files post-processed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["case0.nii.gz", "case1.nii.gz"]
    for k, (pred, ref) in enumerate(cases):
        arr, geo = read_image(out / f"case{k}.nii.gz")
        src, src_geo = read_image(folder / f"case{k}.nii.gz")
        assert geo == src_geo and geo.shape == SHAPE
        assert read_header(out / f"case{k}.nii.gz") == read_header(folder / f"case{k}.nii.gz")
        assert arr.dtype == src.dtype == np.uint8 and np.array_equal(arr, ref)


def test_apply_postprocessing_refuses_bad_inputs_before_writing(tmp_path, capsys):
    folder, plan_path = _folder(tmp_path, _threshold_wins())
    (tmp_path / "other.json").write_text(json.dumps({"format": "xtlunet.validation_summary", "version": 1}))
    for argv, needle in ((["-o", str(tmp_path / "out"), "-pp", str(tmp_path / "other.json")],
                          "not an xtlunet post-processing file"),
                         (["-o", str(folder / "sub"), "-pp", str(plan_path)], "lies inside the input folder"),
                         (["-o", str(tmp_path / "out"), "-pp", str(tmp_path / "none.json")], "file not found")):
        assert main(["apply-postprocessing", "-i", str(folder), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (folder / "sub").exists()
    (folder / "case1.nii.gz").write_bytes(b"")
    assert main(["apply-postprocessing", "-i", str(folder), "-o", str(tmp_path / "out"), "-pp", str(plan_path)]) == 2
    assert "case1.nii.gz" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert math.isfinite(PostprocessingPlan.load(plan_path).rules[1].after.pooled_dice)
