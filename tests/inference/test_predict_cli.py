"""`xtlunet predict` on new folders: outputs in the input geometry, skip/overwrite, classification, bad inputs."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from xtlunet.cli import main
from xtlunet.dataset.io import read_image
from tests.conftest import use_roots

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "--device", "cpu", "--no-final-validation"]


def _error_lines(err: str) -> list[str]:
    """Lines of stderr that carry an error message."""
    return [line for line in err.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def brain_results(prepared_roots, tmp_path_factory):
    """A one-fold ScratchTrainer model of the brain example, trained once for this module."""
    results = tmp_path_factory.mktemp("predict_results")
    with pytest.MonkeyPatch.context() as mp:
        use_roots(mp, {**prepared_roots, "results": results})
        assert main(["train", "501", "3d_fullres", "0", *TRAIN]) == 0
    return results


@pytest.fixture
def brain_model(prepared_roots, brain_results, monkeypatch):
    """The roots of the trained brain model, set in the environment."""
    roots = {**prepared_roots, "results": brain_results}
    use_roots(monkeypatch, roots)
    return roots


def test_predict_writes_labels_in_input_geometry(brain_model, tmp_path, capsys):
    src = brain_model["raw"] / "Dataset501_BrainMS" / "imagesTs"
    out = tmp_path / "pred"
    assert main(["predict", "-i", str(src), "-o", str(out), "-d", "501", "-c", "3d_fullres", "--no-tta",
                 "--save-probabilities", "--device", "cpu"]) == 0
    cases = sorted({p.name[:-12] for p in src.glob("*_0000.nii.gz")})
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]
    directions = set()
    for c in cases:
        pred, pgeo = read_image(out / f"{c}.nii.gz")
        _, igeo = read_image(src / f"{c}_0000.nii.gz")
        assert pgeo.mismatch(igeo) == [] and pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
        probs = np.load(out / f"{c}.npz")["probabilities"]
        assert probs.shape == (2, *pred.shape) and np.allclose(probs.sum(0), 1, atol=1e-2)
        directions.add(tuple(np.round(igeo.direction, 3)))
    assert len(directions) >= 2                          # the test cases come in several orientations
    assert "3 cases predicted with fold 0 " in capsys.readouterr().out
    stamp = (out / f"{cases[0]}.nii.gz").stat().st_mtime_ns
    assert main(["predict", "-i", str(src), "-o", str(out), "-d", "501", "-c", "3d_fullres", "--no-tta"]) == 0
    assert "3 already there" in capsys.readouterr().out and (out / f"{cases[0]}.nii.gz").stat().st_mtime_ns == stamp
    assert main(["predict", "-i", str(src), "-o", str(out), "-d", "501", "-c", "3d_fullres", "--no-tta",
                 "-f", "0", "--overwrite"]) == 0
    assert (out / f"{cases[0]}.nii.gz").stat().st_mtime_ns > stamp
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def _case_folder(brain_model: dict, tmp_path: Path) -> Path:
    """A folder with one brain test case (both channels)."""
    src = brain_model["raw"] / "Dataset501_BrainMS" / "imagesTs"
    one = tmp_path / "one"
    one.mkdir()
    for f in sorted(src.glob("*_000[01].nii.gz"))[:2]:
        shutil.copy(f, one / f.name)
    return one


@pytest.mark.parametrize("problem, needle", [
    ("extra_channel", "the model takes 2 channels"),
    ("missing_channel", "lacks channel file"),
    ("empty_input", "no images named CASE_0000.nii.gz"),
    ("output_is_file", "output path is a file"),
    ("missing_model", "no trained XTLTrainer model"),
    ("missing_fold", "fold 3 has no checkpoint_final.pth"),
])
def test_bad_predict_inputs(brain_model, tmp_path, capsys, problem, needle):
    one = _case_folder(brain_model, tmp_path)
    out = tmp_path / "out"
    extra: list[str] = []
    if problem == "extra_channel":
        first = sorted(one.iterdir())[0]
        shutil.copy(first, one / first.name.replace("_0000", "_0002"))
    elif problem == "missing_channel":
        sorted(one.glob("*_0001.nii.gz"))[0].unlink()
    elif problem == "empty_input":
        for f in one.iterdir():
            f.unlink()
    elif problem == "output_is_file":
        out.write_text("not a folder")
    elif problem == "missing_model":
        extra = ["-tr", "XTLTrainer"]
    elif problem == "missing_fold":
        extra = ["-f", "3"]
    code = main(["predict", "-i", str(one), "-o", str(out), "-d", "501", "-c", "3d_fullres", "--no-tta", *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(_error_lines(err)) == 1 and "Traceback" not in err
    assert not out.is_dir() or not list(out.iterdir())


def test_predict_findings_of_a_classification_model(trained_roots, tmp_path, capsys):
    assert main(["train", "502", "3d_roi", "0", *TRAIN]) == 0
    raw = trained_roots["raw"] / "Dataset502_Prostate"
    rows = list(csv.DictReader(open(raw / "findings.csv")))
    cases = sorted({r["case_id"] for r in rows})[:2]
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for c in cases:
        for f in (raw / "imagesTr").glob(f"{c}_*.nii.gz"):
            shutil.copy(f, imgs / f.name)
    findings = tmp_path / "findings.csv"
    with open(findings, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "finding_id", "patient_id", "x", "y", "z"])
        w.writeheader()
        w.writerows({k: r[k] for k in w.fieldnames} for r in rows if r["case_id"] in cases)
    out = tmp_path / "out"
    assert main(["predict", "-i", str(imgs), "-o", str(out), "-d", "502", "-c", "3d_roi", "--findings", str(findings),
                 "--device", "cpu"]) == 0
    pred = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(pred) == sum(r["case_id"] in cases for r in rows)
    for r in pred:
        assert abs(float(r["p_benign"]) + float(r["p_significant"]) - 1) < 1e-4
        assert r["predicted"] in ("benign", "significant")
    code = main(["predict", "-i", str(imgs), "-o", str(tmp_path / "o2"), "-d", "502", "-c", "3d_roi"])
    assert code == 2 and "needs the findings" in capsys.readouterr().err
