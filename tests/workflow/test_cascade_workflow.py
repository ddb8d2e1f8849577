"""The cascade in the workflow around training: --previous-trainer, --no-val-probabilities, export-model carrying the
lowres model and import-model placing both (or neither), byte-identical prediction after the round trip, and the
plans table with the cascade's long name."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xtlunet.cascade.next_stage import save_labels
from xtlunet.cli import main
from xtlunet.evaluation.summary import ValidationSummary
from xtlunet.plan_and_preprocess import plans_summary
from xtlunet.plans import Plans
from xtlunet.trainers.arms import ScratchTrainer
from tests.conftest import use_roots

DATASET = "Dataset501_BrainMS"
SPLIT = [{"train": ["brainms_0001", "brainms_0002"], "val": ["brainms_0003"]},
         {"train": ["brainms_0003"], "val": ["brainms_0001", "brainms_0002"]}]   # cases 4 and 5 sit out
LOWRES_TR = f"{__name__}:LowresArm"   # a trainer given as module:Class (its model folder takes the class name)
LOWRES, CASCADE = "LowresArm__xtlunetPlans__3d_lowres", "ScratchTrainer__xtlunetPlans__3d_cascade_fullres"
FAST = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu"]
PREDICT = ["-d", "501", "-c", "3d_cascade_fullres", "--no-tta", "--step-size", "1", "--device", "cpu"]


class LowresArm(ScratchTrainer):
    """Another arm, whose 3d_lowres model the ScratchTrainer cascade follows."""


def _sha(path: Path) -> str:
    """sha256 hex of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, example_cache: Path) -> dict[str, Path]:
    """Roots with brain-ms planned with the cascade, LowresArm's 3d_lowres fold 0 (validated without probabilities)
    and ScratchTrainer's cascade fold 0 trained after it, the predictions of fold 1's cases written by hand."""
    base = tmp_path_factory.mktemp("cascade_workflow")
    roots = {k: base / k for k in ("raw", "preprocessed", "results")}
    shutil.copytree(example_cache / DATASET, roots["raw"] / DATASET)
    with pytest.MonkeyPatch.context() as mp:
        use_roots(mp, roots)
        assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "3d_lowres",
                     "--gpu-memory-gb", "0.02"]) == 0
        pre = roots["preprocessed"] / DATASET
        (pre / "splits_final.json").write_text(json.dumps(SPLIT))
        stale = roots["results"] / DATASET / LOWRES / "fold_0" / "validation" / "brainms_0003.npz"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"an earlier validation's probabilities")
        assert main(["-q", "train", "501", "3d_lowres", "0", "-tr", LOWRES_TR, *FAST, "--val-no-tta",
                     "--no-val-probabilities"]) == 0
        full = pre / Plans.load(pre / "xtlunetPlans.json").configuration("3d_fullres").data_identifier
        exported = roots["results"] / DATASET / LOWRES / "predicted_next_stage" / "3d_cascade_fullres"
        for case in ("brainms_0001", "brainms_0002"):   # as lowres fold 1's final validation would write them
            seg = np.zeros(np.load(full / f"{case}.npy", mmap_mode="r").shape[1:], np.uint8)
            seg[tuple(slice(s // 3, 2 * s // 3) for s in seg.shape)] = 1
            save_labels(exported / f"{case}.npz", seg)
        assert main(["-q", "train", "501", "3d_cascade_fullres", "0", "--previous-trainer", LOWRES_TR, *FAST,
                     "--no-final-validation"]) == 0
    return roots


@pytest.fixture
def inputs(pair: dict[str, Path], tmp_path: Path) -> Path:
    """One test case's images."""
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted((pair["raw"] / DATASET / "imagesTs").glob("*_000[01].nii.gz"))[:2]:
        shutil.copy(f, folder / f.name)
    return folder


def _predict(inputs: Path, out: Path) -> dict[str, bytes]:
    """Predict with the cascade of $XTLUNET_results; file name → bytes."""
    assert main(["-q", "predict", "-i", str(inputs), "-o", str(out), *PREDICT]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.nii.gz"))}


def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A results root alone (no raw or preprocessed data), as on another machine."""
    fresh = tmp_path / "fresh_results"
    for var in ("XTLUNET_raw", "XTLUNET_preprocessed", "nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XTLUNET_results", str(fresh))
    return fresh


def _error(capsys: pytest.CaptureFixture) -> str:
    """The one error line of a refused command (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def cascade_zip(pair: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cascade exported (with its lowres model)."""
    out = tmp_path_factory.mktemp("zip") / "cascade.zip"
    with pytest.MonkeyPatch.context() as mp:
        use_roots(mp, pair)
        assert main(["-q", "export-model", "-d", "501", "-c", "3d_cascade_fullres", "-o", str(out)]) == 0
    return out


def test_validation_without_probabilities_and_a_cascade_after_another_trainer(pair, monkeypatch, capsys):
    use_roots(monkeypatch, pair)
    lowres, cascade = (pair["results"] / DATASET / name for name in (LOWRES, CASCADE))
    vdir = lowres / "fold_0" / "validation"
    summary = ValidationSummary.load(vdir / "summary.json")
    assert [c.case_id for c in summary.cases] == ["brainms_0003"] and summary.source["probabilities"] == "not saved"
    assert (vdir / "brainms_0003.nii.gz").is_file() and not list(vdir.glob("*.npz"))   # the stale one removed too
    assert (lowres / "predicted_next_stage" / "3d_cascade_fullres" / "brainms_0003.npz").is_file()
    assert json.loads((cascade / "previous_stage.json").read_text()) == {"configuration": "3d_lowres",
                                                                          "model": LOWRES}
    assert sorted(p.name for p in (pair["results"] / DATASET).iterdir()) == [LOWRES, CASCADE]
    capsys.readouterr()
    for config in ("3d_fullres", "3d_lowres"):
        assert main(["train", "501", config, "0", "--previous-trainer", "LowresArm", *FAST]) == 2
        line = _error(capsys)
        assert f"--previous-trainer is for a cascade stage; {config} follows no previous stage" in line
        assert "fix: drop --previous-trainer" in line
    assert main(["train", "501", "3d_cascade_fullres", "0", "--previous-trainer", "Other", *FAST]) == 2
    assert f"fold_0 of this model followed {LOWRES}, this run would follow Other__xtlunetPlans__3d_lowres" \
        in _error(capsys)
    assert sorted(p.name for p in (pair["results"] / DATASET).iterdir()) == [LOWRES, CASCADE]   # nothing new


def test_cascade_export_carries_its_lowres_model_and_predicts_the_same_bytes(pair, cascade_zip, inputs, tmp_path,
                                                                            monkeypatch, capsys):
    lowres, cascade = (pair["results"] / DATASET / name for name in (LOWRES, CASCADE))
    with zipfile.ZipFile(cascade_zip) as zf:
        card = json.loads(zf.read("model_card.json"))
        names = set(zf.namelist())
        carried = {n: zf.read(n) for n in names if n.startswith("previous_stage/")}
    assert card["format_version"] == 2 and card["previous_stage"] == "3d_lowres"
    prev = card["previous_model"]
    assert (prev["model"], prev["trainer"], prev["configuration"], prev["folds"]) == \
        (LOWRES, "LowresArm", "3d_lowres", ["0"])
    assert prev["fold_details"]["0"]["epoch"] == 1 and prev["cv"]["folds"] == ["fold_0"]
    assert {"previous_stage.json", "fold_0/checkpoint_final.pth", "previous_stage/plans.json",
            "previous_stage/dataset.json", "previous_stage/fold_0/checkpoint_final.pth",
            "previous_stage/cv_summary.json"} <= set(card["files"]) and names == set(card["files"]) | {"model_card.json"}
    assert not any("predicted_next_stage" in n for n in names)
    for name, data in carried.items():       # the lowres model's own files, listed with their hashes
        assert data == (lowres / name[len("previous_stage/"):]).read_bytes(), name
        assert card["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert card["files"]["fold_0/checkpoint_final.pth"]["sha256"] == _sha(cascade / "fold_0" / "checkpoint_final.pth")
    with zipfile.ZipFile(cascade_zip) as zf:
        text = zf.read("MODEL_CARD.md").decode()
    assert f"predicts after the 3d_lowres model {LOWRES} (folds 0), carried in previous_stage/" in text

    use_roots(monkeypatch, pair)
    original = _predict(inputs, tmp_path / "pred_original")
    fresh = _fresh(monkeypatch, tmp_path)
    capsys.readouterr()
    assert main(["import-model", str(cascade_zip)]) == 0
    out = capsys.readouterr().out
    assert f"imported {fresh / DATASET / CASCADE}" in out and f"with its 3d_lowres model {LOWRES} (folds 0)" in out
    assert sorted(p.name for p in (fresh / DATASET).iterdir()) == [LOWRES, CASCADE]     # no temp folder left
    imported_low = fresh / DATASET / LOWRES
    assert sorted(str(p.relative_to(imported_low)) for p in imported_low.rglob("*") if p.is_file()) == \
        sorted(n[len("previous_stage/"):] for n in carried)
    again = _predict(inputs, tmp_path / "pred_imported")
    assert len(original) == 1 and again == original                       # byte-identical label files
    shutil.rmtree(imported_low)                                           # the cascade alone cannot predict
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "pred_alone"), *PREDICT]) == 2
    assert f"predicts after its 3d_lowres model {LOWRES}" in _error(capsys)


def test_import_places_both_folders_or_neither(cascade_zip, tmp_path, monkeypatch, capsys):
    fresh = _fresh(monkeypatch, tmp_path)
    low_marker = fresh / DATASET / LOWRES / "mine.txt"
    low_marker.parent.mkdir(parents=True)
    low_marker.write_text("the receiver's own lowres model\n")
    assert main(["import-model", str(cascade_zip)]) == 2             # its lowres folder exists: nothing written
    line = _error(capsys)
    assert "the model folder already exists" in line and str(fresh / DATASET / LOWRES) in line
    assert sorted(p.name for p in (fresh / DATASET).iterdir()) == [LOWRES]
    cascade_marker = fresh / DATASET / CASCADE / "mine.txt"
    cascade_marker.parent.mkdir(parents=True)
    cascade_marker.write_text("the receiver's own cascade\n")
    real_rename = os.rename

    def full_disk_on_lowres(src, dst):
        """The rename that places the lowres folder fails (after the cascade's was placed)."""
        if Path(dst) == fresh / DATASET / LOWRES and ".importing" in Path(src).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", full_disk_on_lowres)
    assert main(["import-model", str(cascade_zip), "--overwrite"]) == 2
    assert "no space left on the disk" in _error(capsys)
    assert sorted(p.name for p in (fresh / DATASET).iterdir()) == [LOWRES, CASCADE]   # no temp or replaced folder
    assert [p.name for p in (fresh / DATASET / LOWRES).iterdir()] == ["mine.txt"]
    assert [p.name for p in (fresh / DATASET / CASCADE).iterdir()] == ["mine.txt"]   # the old cascade is back
    monkeypatch.setattr(os, "rename", real_rename)
    assert main(["-q", "import-model", str(cascade_zip), "--overwrite"]) == 0
    assert not low_marker.exists() and not cascade_marker.exists()
    assert (fresh / DATASET / LOWRES / "fold_0" / "checkpoint_final.pth").is_file()


def _edited(src: Path, dst: Path, edit, drop: str | None = None) -> Path:
    """A copy of an archive with its card edited by `edit(card)` and, if named, one member dropped (from the zip
    and the card)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == drop:
                continue
            if info.filename == "model_card.json":
                card = json.loads(data)
                edit(card)
                card["files"].pop(drop, None)
                data = json.dumps(card).encode()
            zout.writestr(info, data)
    return dst


CARRIED_CKPT = "previous_stage/fold_0/checkpoint_final.pth"
BAD_CARDS = {
    "other_stage": (lambda c: c["previous_model"].update(configuration="3d_fullres",
                                                         model="LowresArm__xtlunetPlans__3d_fullres"), None,
                    "names previous-stage model 'LowresArm__xtlunetPlans__3d_fullres', not a 3d_lowres model"),
    "escaping": (lambda c: c["previous_model"].update(model="../../evil"), None,
                 "names no valid previous-stage model folder ('../../evil'"),
    "no_folds": (lambda c: c["previous_model"].update(folds=[]), None,
                 "lists no valid folds of the previous-stage model"),
    "no_checkpoint": (lambda c: None, CARRIED_CKPT,
                      f"member '{CARRIED_CKPT}' is not listed in the model card, and predict needs it"),
}


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_a_bad_carried_model_is_refused_before_anything_is_written(cascade_zip, tmp_path, monkeypatch, capsys,
                                                                   case):
    edit, drop, needle = BAD_CARDS[case]
    bad = _edited(cascade_zip, tmp_path / f"{case}.zip", edit, drop)
    fresh = _fresh(monkeypatch, tmp_path)
    fresh.mkdir()
    assert main(["import-model", str(bad)]) == 2
    line = _error(capsys)
    assert needle in line and str(bad) in line, line
    assert list(fresh.iterdir()) == []


def test_export_refuses_a_cascade_without_its_lowres_model(pair, tmp_path, monkeypatch, capsys):
    use_roots(monkeypatch, pair)
    lowres = pair["results"] / DATASET / LOWRES
    out = tmp_path / "cascade.zip"
    shutil.move(lowres, tmp_path / "elsewhere")
    try:
        assert main(["export-model", "-d", "501", "-c", "3d_cascade_fullres", "-o", str(out)]) == 2
    finally:
        shutil.move(tmp_path / "elsewhere", lowres)
    line = _error(capsys)
    assert f"3d_cascade_fullres predicts after its 3d_lowres model {LOWRES}, which has no fold with " \
           "checkpoint_final.pth" in line
    assert f"xtlunet train {DATASET} 3d_lowres FOLD -tr LowresArm -p xtlunetPlans" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_plans_table_fits_the_cascade_name(pair):
    plans = Plans.load(pair["preprocessed"] / DATASET / "xtlunetPlans.json")
    assert "3d_cascade_fullres" in plans.configurations
    lines = plans_summary(plans).splitlines()
    head = lines[1]
    column = head.index("spacing")
    rows = [line for line in lines if line.split(" ")[0] in plans.configurations]
    assert [r.split(" ")[0] for r in rows] == list(plans.configurations)
    for row in rows:            # every value starts under its header
        conf = plans.configuration(row.split(" ")[0])
        spacing = "x".join(f"{s:.3g}" for s in conf.spacing)
        assert row.index(spacing, len(conf.name)) == column and row[column - 1] == " "
        assert len(row) == len(head)
