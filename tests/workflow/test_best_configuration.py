"""find-best-configuration on hand-made cross-validation outputs (tiny model folders with fold_K/validation exports,
probabilities and references): the known winner, the ensemble's exports, post-processing and the instructions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xtlunet.best_config.select import Candidate, pick_winner
from xtlunet.cli import main
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_image, write_image
from xtlunet.evaluation.summary import CaseScores, ValidationSummary
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.postprocessing import KEEP_LARGEST, NONE, case_tables

DATASET = "Dataset901_Fake"
SHAPE = (6, 10, 10)
GEOMETRY = Geometry(spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()), shape=SHAPE)
FOLDS = {0: ["c0", "c1"], 1: ["c2", "c3"]}
DATASET_JSON = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 4,
                "file_ending": ".nii.gz"}


def _reference(case: str) -> np.ndarray:
    """A 3×3×3 lesion whose place depends on the case."""
    k = int(case[1:])
    ref = np.zeros(SHAPE, np.uint8)
    ref[1:4, 1 + k:4 + k, 2:5] = 1
    return ref


def _write_references(roots: dict[str, Path]) -> None:
    """gt_segmentations of the fake dataset, as plan-and-preprocess writes them."""
    for cases in FOLDS.values():
        for case in cases:
            write_image(roots["preprocessed"] / DATASET / "gt_segmentations" / f"{case}.nii.gz", _reference(case),
                        GEOMETRY)


def _model(roots: dict[str, Path], name: str, p_lesion, folds=(0, 1), dataset_json=None,
           probabilities: bool = True) -> Path:
    """A model folder whose fold exports come from p_lesion(case, ref) → the lesion probability per voxel (CASE.npz
    too unless validated with --no-val-probabilities)."""
    folder = roots["results"] / DATASET / name
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(dataset_json or DATASET_JSON))
    for fold in folds:
        vdir = folder / f"fold_{fold}" / "validation"
        vdir.mkdir(parents=True)
        for case in FOLDS[fold]:
            p = p_lesion(case, _reference(case).astype(bool))
            probs = np.stack([1.0 - p, p]).astype(np.float16)
            if probabilities:
                np.savez_compressed(vdir / f"{case}.npz", probabilities=probs)
            write_image(vdir / f"{case}.nii.gz", np.argmax(probs, axis=0).astype(np.uint8), GEOMETRY)
        summary = ValidationSummary("segmentation", [1], cases=[CaseScores(c, {}) for c in FOLDS[fold]],
                                    source={} if probabilities else {"probabilities": "not saved"})
        summary.save(vdir / "summary.json")
    return folder


def _good(case, ref):
    """Every voxel right, at 0.8."""
    return np.where(ref, 0.8, 0.2)


def _confidently_wrong_somewhere(case, ref):
    """Right at 0.99, but a confident false-positive block."""
    p = np.where(ref, 0.99, 0.01)
    p[4:6, 7:9, 7:9] = 0.99
    return p


def _missing_part(rows: slice):
    """Right at 0.9, but unsure (0.4) on some lesion rows, and one false-positive voxel everyone predicts."""
    def p_lesion(case, ref):
        p = np.where(ref, 0.9, 0.1)
        part = np.zeros(SHAPE, bool)
        part[rows] = True
        p[ref & part] = 0.4
        p[5, 9, 9] = 0.9
        return p
    return p_lesion


@pytest.fixture
def fake_roots(roots):
    """Data roots with the references of the fake dataset."""
    _write_references(roots)
    return roots


def _instructions(roots):
    """The written inference_instructions.json and .txt."""
    base = roots["results"] / DATASET
    return (json.loads((base / "inference_instructions.json").read_text()),
            (base / "inference_instructions.txt").read_text())


def test_a_single_model_wins(fake_roots, capsys):
    good = _model(fake_roots, "Good__P__3d_fullres", _good)
    _model(fake_roots, "Bad__P__3d_fullres", _confidently_wrong_somewhere)
    _model(fake_roots, "Half__P__3d_fullres", _good, folds=(0,))
    assert main(["find-best-configuration", "-d", "901", "-f", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped Half__P__3d_fullres: fold 1 not finished" in out
    assert "| Good__P__3d_fullres | 1.0000 | 1.0000 | 1.0000 | yes |" in out
    ensemble = "ensemble___Bad__P__3d_fullres___Good__P__3d_fullres___0_1"
    assert f"| {ensemble} | " in out and "selected: Good__P__3d_fullres" in out
    assert "label 1 (lesion): no operation" in out
    doc, text = _instructions(fake_roots)
    assert doc["selected"]["name"] == "Good__P__3d_fullres" and doc["folds"] == [0, 1]
    assert doc["commands"] == ["xtlunet predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d 901 -c 3d_fullres -tr Good -p P "
                               "-f 0 1"]
    assert [c["name"] for c in doc["candidates"]] == ["Bad__P__3d_fullres", "Good__P__3d_fullres", ensemble]
    bad, _, ens = doc["candidates"]
    assert bad["pooled_dice"] == ens["pooled_dice"] < 1.0 and bad["lesion_f1"] == pytest.approx(2 / 3)
    assert doc["skipped"]["Half__P__3d_fullres"].startswith("fold 1 not finished")
    assert doc["commands"][0] in text and "selected: Good__P__3d_fullres" in text
    pp = json.loads((good / "postprocessing.json").read_text())
    assert pp["labels"]["1"]["operation"] == NONE and pp["source"]["candidate"] == "Good__P__3d_fullres"
    assert sorted(p.name for p in (fake_roots["results"] / DATASET / "ensembles" / ensemble).glob("*.nii.gz")) == \
        ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz", "c3.nii.gz"]


def test_an_ensemble_of_two_wins_with_postprocessing(fake_roots, capsys):
    _model(fake_roots, "A__P__3d_fullres", _missing_part(slice(1, 2)))
    _model(fake_roots, "B__P__2d", _missing_part(slice(3, 4)))
    assert main(["find-best-configuration", "-d", DATASET, "-f", "0", "1"]) == 0
    out = capsys.readouterr().out
    name = "ensemble___A__P__3d_fullres___B__P__2d___0_1"
    folder = fake_roots["results"] / DATASET / "ensembles" / name
    assert f"selected: {name}" in out and "label 1 (lesion): keep the largest component: pooled Dice" in out
    for cases in FOLDS.values():
        for case in cases:
            labels, geo = read_image(folder / f"{case}.nii.gz")
            expected = _reference(case)
            expected[5, 9, 9] = 1  # the shared false positive stays in the ensemble, post-processing removes it
            assert np.array_equal(labels, expected) and geo == GEOMETRY
    pp = json.loads((folder / "postprocessing.json").read_text())
    rule = pp["labels"]["1"]
    assert rule["operation"] == KEEP_LARGEST and rule["after"]["pooled_dice"] == 1.0 > rule["before"]["pooled_dice"]
    assert rule["after"]["lesion_f1"] == 1.0 > rule["before"]["lesion_f1"]
    doc, text = _instructions(fake_roots)
    assert doc["commands"] == [
        "xtlunet predict -i INPUT_FOLDER -o OUTPUT_FOLDER_MODEL_1 -d 901 -c 3d_fullres -tr A -p P -f 0 1 "
        "--save-probabilities",
        "xtlunet predict -i INPUT_FOLDER -o OUTPUT_FOLDER_MODEL_2 -d 901 -c 2d -tr B -p P -f 0 1 --save-probabilities",
        "xtlunet ensemble -i OUTPUT_FOLDER_MODEL_1 OUTPUT_FOLDER_MODEL_2 -o OUTPUT_FOLDER_RAW",
        f"xtlunet apply-postprocessing -i OUTPUT_FOLDER_RAW -o OUTPUT_FOLDER -pp {folder / 'postprocessing.json'}"]
    assert all(c in text for c in doc["commands"])
    assert [m["configuration"] for m in doc["selected"]["members"]] == ["3d_fullres", "2d"]
    assert doc["postprocessing"]["operations"] == {"1": KEEP_LARGEST}
    # the same without ensembles and post-processing: a single model, one command
    assert main(["find-best-configuration", "-d", "901", "-f", "0", "1", "--no-ensembling",
                 "--disable-postprocessing"]) == 0
    doc, _ = _instructions(fake_roots)
    assert len(doc["candidates"]) == 2 and len(doc["commands"]) == 1 and doc["postprocessing"] is None
    assert not (fake_roots["results"] / DATASET / "A__P__3d_fullres" / "postprocessing.json").exists()


def test_nothing_usable_or_a_classification_model_is_one_line(fake_roots, capsys):
    _model(fake_roots, "Half__P__3d_fullres", _good, folds=(0,))
    assert main(["find-best-configuration", "-d", "901"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no model of Dataset901_Fake has folds 0 1 2 3 4 finished" in err
    assert "Half__P__3d_fullres: folds 1, 2, 3, 4 not finished" in err and "fix: train the folds" in err
    assert main(["find-best-configuration", "-d", "901", "-f", "0", "-tr", "Other"]) == 2
    assert "no trained model folder matches" in capsys.readouterr().err
    npz = next((fake_roots["results"] / DATASET / "Half__P__3d_fullres").rglob("c0.npz"))
    npz.unlink()
    assert main(["find-best-configuration", "-d", "901", "-f", "0"]) == 2
    assert "fold 0 has no validation probabilities (c0.npz)" in capsys.readouterr().err
    classification = {**DATASET_JSON, "task": "classification", "classes": {"benign": 0, "malignant": 1},
                      "findings": "findings.csv"}
    _model(fake_roots, "Cls__P__3d_roi", _good, dataset_json=classification)
    assert main(["find-best-configuration", "-d", "901", "-f", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Cls__P__3d_roi is a classification model" in err
    assert not (fake_roots["results"] / DATASET / "inference_instructions.json").exists()


def test_a_tie_goes_to_the_simpler_candidate():
    ref = _reference("c0")
    tables = {1: [case_tables(ref, ref, GEOMETRY.spacing, [1])[1]]}
    ensemble = Candidate("ens", [None, None], Path("e"), tables)
    single = Candidate("one", [None], Path("s"), tables)
    assert pick_winner([ensemble, single]) is single


@pytest.mark.slow
def test_training_leaves_probabilities_that_find_best_configuration_uses(trained_roots, capsys):
    train = ["-q", "train", "501", "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1",
             "--device", "cpu", "--val-no-tta"]
    assert main(train) == 0
    model = trained_roots["results"] / "Dataset501_BrainMS" / "ScratchTrainer__xtlunetPlans__3d_fullres"
    vdir = model / "fold_0" / "validation"
    cases = [c.case_id for c in ValidationSummary.load(vdir / "summary.json").cases]
    assert cases
    for case in cases:
        labels, _ = read_image(vdir / f"{case}.nii.gz")
        with np.load(vdir / f"{case}.npz") as saved:
            probs = saved["probabilities"]
        assert probs.dtype == np.float16 and probs.shape == (2, *labels.shape)
        assert np.allclose(probs.astype(np.float32).sum(axis=0), 1.0, atol=1e-2)
        assert np.mean(np.argmax(probs, axis=0) == labels) > 0.99  # float16 rounding may flip near-ties only
    capsys.readouterr()
    assert main(["-q", "find-best-configuration", "-d", "501", "-f", "0"]) == 0
    assert "selected: ScratchTrainer__xtlunetPlans__3d_fullres" in capsys.readouterr().out
    doc = json.loads((model.parent / "inference_instructions.json").read_text())
    assert doc["commands"][0].startswith("xtlunet predict -i INPUT_FOLDER -o OUTPUT_FOLDER")
    assert (model / "postprocessing.json").is_file()
    # a fold validated without probabilities is skipped; --continue re-runs its final validation and writes them
    (vdir / f"{cases[0]}.npz").unlink()
    assert main(["-q", "find-best-configuration", "-d", "501", "-f", "0"]) == 2
    assert f"fold 0 has no validation probabilities ({cases[0]}.npz)" in capsys.readouterr().err
    assert main([*train, "--continue"]) == 0 and (vdir / f"{cases[0]}.npz").is_file()


def _cascade_plans(folder: Path) -> None:
    """plans.json of a model folder: 3d_lowres, then 3d_cascade_fullres after it (what find-best-configuration reads)."""
    def conf(name: str, **stage) -> ConfigurationPlan:
        """A configuration of the fake dataset."""
        return ConfigurationPlan(name, "segmentation", 3, [2.0, 1.0, 1.0], list(SHAPE), 2, list(SHAPE), ["zscore"],
                                 [False], {}, 2, "P_3d", **stage)
    Plans("P", DATASET, "DefaultPlanner", "segmentation", {"0": "T1"}, DATASET_JSON["labels"], {}, [0, 1, 2], {},
          {"3d_lowres": conf("3d_lowres", next_stage="3d_cascade_fullres"),
           "3d_cascade_fullres": conf("3d_cascade_fullres", previous_stage="3d_lowres")}).save(folder / "plans.json")


def test_a_cascade_is_a_candidate_and_its_instructions_need_the_lowres_model(fake_roots, capsys):
    lowres = _model(fake_roots, "C__P__3d_lowres", _confidently_wrong_somewhere)
    for fold in (0, 1):
        (lowres / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"weights")
    cascade = _model(fake_roots, "C__P__3d_cascade_fullres", _good)
    _cascade_plans(cascade)
    assert main(["find-best-configuration", "-d", "901", "-f", "0", "1"]) == 0
    out = capsys.readouterr().out
    note = ("C__P__3d_cascade_fullres is a cascade stage: its predict runs the lowres model C__P__3d_lowres first "
            "(folds 0 1, every finished one), so that model folder must be in $XTLUNET_results beside it")
    assert "selected: C__P__3d_cascade_fullres" in out and f"note: {note}" in out
    assert "| ensemble___C__P__3d_cascade_fullres___C__P__3d_lowres___0_1 | " in out
    doc, text = _instructions(fake_roots)
    assert doc["commands"] == ["xtlunet predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d 901 -c 3d_cascade_fullres "
                               "-tr C -p P -f 0 1"]
    assert doc["selected"]["members"][0]["previous_model"] == {"model": "C__P__3d_lowres", "folder": str(lowres),
                                                               "folds": ["0", "1"]}
    assert doc["notes"][0].startswith(note) and f"note: {note}" in text and doc["commands"][0] in text
    # without a finished lowres fold, predict of the cascade could not run: it is no candidate
    for fold in (0, 1):
        (lowres / f"fold_{fold}" / "checkpoint_final.pth").unlink()
    assert main(["find-best-configuration", "-d", "901", "-f", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert ("skipped C__P__3d_cascade_fullres: predicts after its 3d_lowres model C__P__3d_lowres, which has no fold "
            "with checkpoint_final.pth") in out and "selected: C__P__3d_lowres" in out
    doc, _ = _instructions(fake_roots)
    assert [c["name"] for c in doc["candidates"]] == ["C__P__3d_lowres"] and doc["notes"] == []
    assert doc["selected"]["members"][0]["previous_model"] is None


def test_a_model_validated_without_probabilities_competes_alone(fake_roots, capsys):
    _model(fake_roots, "A__P__3d_fullres", _missing_part(slice(1, 2)))
    _model(fake_roots, "B__P__2d", _missing_part(slice(3, 4)), probabilities=False)
    _model(fake_roots, "C__P__3d_lowres", _confidently_wrong_somewhere)
    assert main(["find-best-configuration", "-d", "901", "-f", "0", "1", "--disable-postprocessing"]) == 0
    out = capsys.readouterr().out
    assert ("skipped ensembles with B__P__2d: its final validation wrote no probabilities (xtlunet train "
            "--no-val-probabilities): it competes as a single model only") in out
    doc, _ = _instructions(fake_roots)
    assert [c["name"] for c in doc["candidates"]] == [
        "A__P__3d_fullres", "B__P__2d", "C__P__3d_lowres", "ensemble___A__P__3d_fullres___C__P__3d_lowres___0_1"]
    assert not (fake_roots["results"] / DATASET / "ensembles" / "ensemble___A__P__3d_fullres___B__P__2d___0_1").exists()
    b = doc["candidates"][1]
    assert b["pooled_dice"] == doc["candidates"][0]["pooled_dice"] < 1.0     # scored from its label files alone
