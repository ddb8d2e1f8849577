"""Reliability, second pass, through the CLI with a real (tiny) network: fold 'all' trains on a dataset too small
for five folds; folds that cannot train stop before the first epoch; predict names the input files it does not use,
refuses overlapping -i/-o, a fold given twice and a model folder without plans.json — each in one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.bad_inputs_helpers import error_lines, rewrite_image, set_roots, snapshot
from xtlunet.cli import main

pytestmark = pytest.mark.slow

BRAIN = "Dataset501_BrainMS"
MODEL = "ScratchTrainer__xtlunetPlans__3d_fullres"
TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu", "--no-final-validation"]
PREDICT = ["predict", "-d", "501", "-c", "3d_fullres", "--no-tta", "--device", "cpu"]


def make_roots(base: Path, mp: pytest.MonkeyPatch, cases: int = 3) -> dict[str, Path]:
    """Fresh XTLUNET roots under `base` holding a small brain example (3 training, 3 test cases), planned."""
    from xtlunet.dataset.examples import make_example

    roots = {k: base / k for k in ("raw", "preprocessed", "results")}
    for p in roots.values():
        p.mkdir(parents=True)
    set_roots(mp, roots["raw"], roots["preprocessed"], roots["results"])
    make_example("brain-ms", roots["raw"], cases=cases, seed=0)
    return roots


def plan() -> None:
    """plan-and-preprocess 3d_fullres of the brain example at a tiny budget."""
    assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--gpu-memory-gb", "0.04"]) == 0


@pytest.fixture(scope="module")
def model_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three brain cases, planned, with fold 'all' trained (five folds cannot be made of three cases)."""
    with pytest.MonkeyPatch.context() as mp:
        roots = make_roots(tmp_path_factory.mktemp("tiny_brain"), mp)
        plan()
        assert main(["-q", "train", "501", "3d_fullres", "all", *TRAIN]) == 0
    return roots


@pytest.fixture
def roots(model_roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The trained roots, set in the environment for one test."""
    set_roots(monkeypatch, model_roots["raw"], model_roots["preprocessed"], model_roots["results"])
    return model_roots


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one CLI run."""
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def refused(argv: list[str], capsys: pytest.CaptureFixture, watched: list[Path]) -> str:
    """Run the CLI; assert exit 2, one `error:` line with a fix and no file changed; return that line."""
    before = snapshot(watched)
    code, _, err = run(argv, capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"xtlunet {argv[0]}: error: ") and " — fix: " in lines[0]
    assert snapshot(watched) == before
    return lines[0]


def test_fold_all_trains_on_a_dataset_too_small_for_five_folds(roots: dict[str, Path],
                                                               capsys: pytest.CaptureFixture) -> None:
    pre = roots["preprocessed"] / BRAIN
    assert (roots["results"] / BRAIN / MODEL / "fold_all" / "checkpoint_final.pth").is_file()
    assert not (pre / "splits_final.json").exists()  # fold 'all' made no split
    line = refused(["train", "501", "3d_fullres", "0", *TRAIN], capsys, [roots["results"], pre])
    assert "3 patients/cases cannot make 5 folds" in line and "train fold 'all'" in line


def test_a_fold_without_validation_cases_stops_before_training(roots: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    pre = tmp_path / "preprocessed"
    shutil.copytree(roots["preprocessed"], pre)
    set_roots(monkeypatch, roots["raw"], pre, tmp_path / "results")
    ids = ["brainms_0001", "brainms_0002", "brainms_0003"]
    (pre / BRAIN / "splits_final.json").write_text(json.dumps([{"train": ids, "val": []}]))
    line = refused(["train", "501", "3d_fullres", "0", *TRAIN], capsys, [tmp_path])
    assert "fold 0 of splits_final.json has no validation cases" in line and f"{BRAIN}/splits_final.json" in line
    assert not (tmp_path / "results").exists()


def test_every_label_map_empty_stops_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    roots = make_roots(tmp_path, monkeypatch)
    for label in (roots["raw"] / BRAIN / "labelsTr").iterdir():
        rewrite_image(label, lambda a, g: (np.zeros_like(a), g))
    capsys.readouterr()
    plan()
    assert "every label map of Dataset501_BrainMS is background only" in capsys.readouterr().err  # told at planning
    line = refused(["train", "501", "3d_fullres", "all", *TRAIN], capsys, [tmp_path])
    assert "every label map of Dataset501_BrainMS is background only" in line and "Dice 0" in line
    assert "annotate the structures in labelsTr" in line
    assert not (roots["results"] / BRAIN).exists()


def test_predict_names_the_input_files_it_does_not_use(roots: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    test_images = sorted((roots["raw"] / BRAIN / "imagesTs").iterdir())
    for f in test_images[:2]:  # one case, both channels
        shutil.copy(f, inp / f.name)
    for f in test_images[2:4]:  # another case, saved with another ending
        shutil.copy(f, inp / f.name.replace(".nii.gz", ".nii.GZ"))
    (inp / "notes.txt").write_text("scanner B")
    code, stdout, err = run([*PREDICT, "-f", "all", "-i", str(inp), "-o", str(out)], capsys)
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "not used" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(f"3 files of {inp} not used: ")
    for name in ("notes.txt", test_images[2].name.replace(".nii.gz", ".nii.GZ"), "letter case only"):
        assert name in warnings[0]
    case = test_images[0].name[: -len("_0000.nii.gz")]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [f"{case}.nii.gz"]
    assert stdout.startswith("1 case predicted")


def test_predict_refuses_overlapping_input_and_output(roots: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    for f in sorted((roots["raw"] / BRAIN / "imagesTs").iterdir())[:2]:
        shutil.copy(f, inp / f.name)
    for out, words in ((inp, "is the input folder"), (inp / "pred", "lies inside the input folder")):
        line = refused([*PREDICT, "-f", "all", "-i", str(inp), "-o", str(out)], capsys, [tmp_path, roots["results"]])
        assert words in line and "give -o a folder outside -i" in line
    assert not (inp / "pred").exists()


def test_predict_refuses_a_fold_given_twice(roots: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    line = refused([*PREDICT, "-f", "all", "all", "-i", str(inp), "-o", str(tmp_path / "out")], capsys,
                   [tmp_path, roots["results"]])
    assert "fold all is given twice in -f (all all)" in line and "name each fold once: -f all" in line


def test_predict_with_a_model_folder_without_plans(roots: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    shutil.copytree(roots["results"], results)
    (results / BRAIN / MODEL / "plans.json").unlink()
    set_roots(monkeypatch, roots["raw"], roots["preprocessed"], results)
    line = refused([*PREDICT, "-f", "all", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")], capsys,
                   [tmp_path])
    assert "model folder lacks plans.json, which training writes when a fold starts" in line
    assert "plan-and-preprocess" not in line and "xtlunet train Dataset501_BrainMS 3d_fullres FOLD" in line
