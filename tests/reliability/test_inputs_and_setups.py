"""Reliability, second pass: headers that lie (zero/negative spacing, more voxels than the file holds), endings that
differ in letter case, predict inputs that are not used, overlapping -i/-o, duplicate folds, a model folder without
plans.json, and folds that cannot train: each refused (or named) in one line with the file, dataset or fold and a fix.

Fast tests: tiny synthetic files and fake models; the CLI runs with networks are in test_predict_and_train_setups.py.
"""
from __future__ import annotations

import gzip
import io
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.bad_inputs_helpers import error_lines, snapshot
from xtlunet.cli import main
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.integrity import check_dataset
from xtlunet.dataset.integrity_files import Problem, inspect_header
from xtlunet.dataset.io import read_header, read_image, read_sitk, write_image
from xtlunet.dataset.spec import DatasetSpec, name_problem
from xtlunet.errors import XtlunetError
from xtlunet.fingerprint import compute_fingerprint
from xtlunet.inference.ensemble import average_predictions
from xtlunet.inference.folder import check_folders, input_cases
from xtlunet.inference.models import checkpoint_paths, load_trained_model
from xtlunet.inference.predict import predict_case
from xtlunet.training.context import check_foreground
from xtlunet.training.splits import fold_cases, fold_split

GRID = Geometry((2.0, 1.0, 1.5), (1.0, 2.0, 3.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), (4, 5, 6))
BRAIN = "Dataset501_BrainMS"
BUDGET = ["--gpu-memory-gb", "0.04"]


# ---------------------------------------------------------------- helpers

def volume(path: Path, grid: Geometry = GRID) -> Path:
    """A small float volume on `grid`, written in the format of the path's ending."""
    write_image(path, np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape), grid)
    return path


def patch_nifti(path: Path, **fields: list[float]) -> None:
    """Overwrite NIfTI-1 header fields as stored (pixdim, dim), leaving the voxel bytes as they are."""
    gz = path.name.endswith(".gz")
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for key, value in fields.items():
        header[key] = value
    raw = header.binaryblock + raw[348:]
    path.write_bytes(gzip.compress(raw) if gz else raw)


def refused(read, path: Path) -> XtlunetError:
    """The XtlunetError that reading `path` raises (the test fails if it raises nothing or something else)."""
    with pytest.raises(XtlunetError) as info:
        read(path)
    assert info.value.path == str(path) and info.value.fix
    return info.value


def brain_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: int = 3) -> Path:
    """A small brain example (2 channels, segmentation) in fresh XTLUNET roots."""
    from xtlunet.dataset.examples import make_example

    for kind in ("raw", "preprocessed", "results"):
        (tmp_path / kind).mkdir()
        monkeypatch.setenv(f"XTLUNET_{kind}", str(tmp_path / kind))
        monkeypatch.delenv(f"nnUNet_{kind}", raising=False)
    make_example("brain-ms", tmp_path / "raw", cases=cases, seed=0)
    return tmp_path / "raw" / BRAIN


def run_refused(argv: list[str], capsys: pytest.CaptureFixture, watched: list[Path]) -> str:
    """Run the CLI, assert exit 2 with one `error:` line, no traceback and no changed file; return that line plus
    the problem list printed above it."""
    before = snapshot(watched)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"xtlunet {argv[0]}: error: ") and " — fix: " in lines[0], lines[0]
    assert snapshot(watched) == before
    return "\n".join([lines[0], *(ln for ln in err.splitlines() if ln.startswith("  "))])


# ---------------------------------------------------------------- zero or negative spacing (item 6)

@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
@pytest.mark.parametrize("index, value", [(1, 0.0), (2, -2.0), (3, 0.0), (2, float("nan"))])
def test_non_positive_stored_spacing_is_refused_on_every_read(tmp_path: Path, ending: str, index: int,
                                                               value: float) -> None:
    path = volume(tmp_path / f"case_0000{ending}")
    pixdim = [1.0, 1.5, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    pixdim[index] = value
    patch_nifti(path, pixdim=pixdim)
    # ITK alone would read 0 as 1 mm and -2 as 2 mm, and nibabel.load "fixes" pixdim the same way
    assert sitk.ReadImage(str(path)).GetSpacing()[index - 1] in (1.0, 2.0) or np.isnan(value)
    for read in (read_header, read_image, read_sitk):
        err = refused(read, path)
        assert f"{value:g} on axis {'xyz'[index - 1]} (pixdim[{index}])" in err.what, err.what
        assert "voxel size" in err.fix and "1 mm" in err.fix
    problem = inspect_header(path)
    assert isinstance(problem, Problem) and "pixdim" in problem.what


def test_metaimage_spacing_is_checked_as_stored(tmp_path: Path) -> None:
    path = volume(tmp_path / "case_0000.mha")
    text = path.read_bytes()
    assert b"ElementSpacing = 1.5 1 2" in text
    path.write_bytes(text.replace(b"ElementSpacing = 1.5 1 2", b"ElementSpacing = 0 -1 2"))
    err = refused(read_header, path)
    assert "voxel spacing 0 on axis x and -1 on axis y" in err.what


def test_spacing_of_a_one_voxel_axis_is_not_checked(tmp_path: Path) -> None:
    """A 2D image stored as a one-slice NIfTI often carries pixdim 0 on its slice axis, which no step uses."""
    grid = Geometry((1.0, 0.5, 0.5), (0.0,) * 3, GRID.direction, (1, 8, 8))
    path = volume(tmp_path / "mammo_0000.nii.gz", grid)
    patch_nifti(path, pixdim=[1.0, 0.5, 0.5, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert read_header(path).shape == (1, 8, 8)


def test_plan_refuses_zero_spacing_naming_file_and_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    root = brain_raw(tmp_path, monkeypatch)
    bad = root / "imagesTr" / "brainms_0001_0001.nii.gz"
    patch_nifti(bad, pixdim=[1.0, 1.0, 0.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    named = run_refused(["plan-and-preprocess", "-d", "501", *BUDGET], capsys, [tmp_path])
    assert str(bad) in named and "voxel spacing 0 on axis y (pixdim[2])" in named


# ---------------------------------------------------------------- headers that claim more data than the file holds (12)

@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_header_claiming_4000_cubed_voxels_is_refused_before_any_voxel_is_read(tmp_path: Path, ending: str) -> None:
    path = volume(tmp_path / f"case_0000{ending}")
    patch_nifti(path, dim=[3, 4000, 4000, 4000, 1, 1, 1, 1])
    start = time.perf_counter()
    for read in (read_header, read_image):
        err = refused(read, path)  # not a MemoryError
        assert "4000×4000×4000 voxels" in err.what and "256.0 GB" in err.what and "truncated" in err.what
        assert "re-copy the complete file" in err.fix
    assert time.perf_counter() - start < 2.0


def test_gzip_trailer_catches_a_header_claiming_a_little_more(tmp_path: Path) -> None:
    """6×5×8 claimed, 6×5×4 stored: within deflate's ratio, so the gzip size trailer (then one stream) tells."""
    path = volume(tmp_path / "case_0000.nii.gz")
    patch_nifti(path, dim=[3, 6, 5, 8, 1, 1, 1, 1])
    err = refused(read_header, path)
    assert "decompresses to" in err.what and "6×5×8 voxels" in err.what


def test_cut_nii_gz_is_refused_from_its_header_check(tmp_path: Path) -> None:
    path = tmp_path / "case_0000.nii.gz"
    write_image(path, np.random.default_rng(0).normal(size=(20, 30, 30)).astype(np.float32),
                Geometry((1.0,) * 3, (0.0,) * 3, GRID.direction, (20, 30, 30)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    err = refused(read_header, path)
    assert "truncated" in err.what


def test_valid_multi_member_gzip_is_accepted(tmp_path: Path) -> None:
    """A .nii.gz of two gzip members (as bgzip writes) has a trailer of its last member only: not refused."""
    plain = volume(tmp_path / "case_0000.nii")
    raw = plain.read_bytes()
    path = tmp_path / "case_0001.nii.gz"
    path.write_bytes(gzip.compress(raw[:400]) + gzip.compress(raw[400:]))
    arr, geo = read_image(path)
    assert geo.shape == GRID.shape and np.array_equal(arr, read_image(plain)[0])


@pytest.mark.parametrize("ending, compress", [(".mha", False), (".nrrd", False), (".mha", True), (".nrrd", True),
                                              (".nii", False), (".nii.gz", True)])
def test_sound_files_of_every_format_pass(tmp_path: Path, ending: str, compress: bool) -> None:
    path = tmp_path / f"case_0000{ending}"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(path), useCompression=compress)
    assert read_header(path).shape == (4, 5, 6)


@pytest.mark.parametrize("ending", [".mha", ".nrrd", ".nii"])
def test_truncated_uncompressed_files_are_refused_from_their_size(tmp_path: Path, ending: str) -> None:
    path = tmp_path / f"case_0000{ending}"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32)), str(path), useCompression=False)
    path.write_bytes(path.read_bytes()[:-40])
    err = refused(read_header, path)
    assert err.what.startswith("file is truncated: its header claims 6×5×4 voxels")


def test_header_only_check_and_plan_refuse_a_lying_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    root = brain_raw(tmp_path, monkeypatch)
    bad = root / "imagesTr" / "brainms_0002_0000.nii.gz"
    patch_nifti(bad, dim=[3, 4000, 4000, 4000, 1, 1, 1, 1])
    problems = check_dataset(DatasetSpec.load(root), deep=False)
    assert [p.path for p in problems] == [str(bad)] and "4000×4000×4000" in problems[0].what
    named = run_refused(["plan-and-preprocess", "-d", "501", *BUDGET], capsys, [tmp_path])
    assert str(bad) in named and "4000×4000×4000 voxels" in named
    # the fingerprint (run without the check when fingerprint.json exists) stops as clearly, not with MemoryError
    with pytest.raises(XtlunetError, match="4000×4000×4000") as info:
        compute_fingerprint(DatasetSpec.load(root), 3)
    assert info.value.path == str(bad)


# ---------------------------------------------------------------- endings that differ in letter case

def test_mixed_case_ending_is_named_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = brain_raw(tmp_path, monkeypatch)
    image = root / "imagesTr" / "brainms_0002_0000.nii.gz"
    label = root / "labelsTr" / "brainms_0002.nii.gz"
    image.rename(image.with_name("brainms_0002_0000.NII.GZ"))
    label.rename(label.with_name("brainms_0002.Nii.Gz"))
    problems = {Path(p.path).name: p for p in check_dataset(DatasetSpec.load(root), deep=False)}
    for name, fixed in (("brainms_0002_0000.NII.GZ", "brainms_0002_0000.nii.gz"),
                        ("brainms_0002.Nii.Gz", "brainms_0002.nii.gz")):
        p = problems[name]
        assert "differs from dataset.json's file_ending .nii.gz in letter case only" in p.what, p.what
        assert f"rename it to {fixed}" in p.fix
        assert "ends in .nii.gz" not in p.what  # the old message contradicted itself


@pytest.mark.parametrize("name, channel, what", [
    ("a_0000.nii", True, "it ends in .nii, not in dataset.json's file_ending .nii.gz"),
    ("notes", True, "it has no ending"),
    ("a_T2.nii.gz", True, "(XXXX: 4-digit channel index)"),
    ("a.nii.gz", False, None),
    ("a_0000.nii.gz", True, None),
])
def test_name_problem(name: str, channel: bool, what: str | None) -> None:
    found = name_problem(name, ".nii.gz", channel)
    assert (found is None) if what is None else (what in found[0])


# ---------------------------------------------------------------- predict inputs and folders (item 5, -i/-o)

def fake_model(tmp_path: Path) -> SimpleNamespace:
    """What input_cases reads of a model: its dataset.json (2 channels, .nii.gz)."""
    spec = DatasetSpec(root=tmp_path, channel_names={0: "FLAIR", 1: "T1"}, labels={"background": 0, "lesion": 1},
                       num_training=0, file_ending=".nii.gz")
    return SimpleNamespace(spec=spec)


def test_input_files_not_used_are_named(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("good_0000.nii.gz", "good_0001.nii.gz", "other_0000.nii", "other_0001.nii", "loud_0000.NII.GZ",
                 "README.txt", ".DS_Store"):
        (inp / name).write_bytes(b"x")
    (inp / "sub").mkdir()
    cases, unused = input_cases(inp, fake_model(tmp_path))
    assert [c.case_id for c in cases] == ["good"]
    assert sorted(unused) == ["README.txt", "loud_0000.NII.GZ", "other_0000.nii", "other_0001.nii", "sub/"]
    assert "it ends in .nii," in unused["other_0000.nii"] and "letter case only" in unused["loud_0000.NII.GZ"]


def test_no_usable_input_file_is_an_error_naming_them(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("case_0000.nii", "case_0001.nii"):
        (inp / name).write_bytes(b"x")
    with pytest.raises(XtlunetError) as info:
        input_cases(inp, fake_model(tmp_path))
    assert "no images named CASE_0000.nii.gz" in info.value.what
    assert "case_0000.nii (it ends in .nii" in info.value.what and "case_0001.nii" in info.value.what


def test_missing_channel_names_the_file_with_another_ending(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "case_0000.nii.gz").write_bytes(b"x")
    (inp / "case_0001.nii").write_bytes(b"x")
    with pytest.raises(XtlunetError, match=r"lacks channel file case_0001.nii.gz \(case_0001.nii is there: it ends "
                                           r"in .nii"):
        input_cases(inp, fake_model(tmp_path))


@pytest.mark.parametrize("out, words", [("in", "is the input folder"), ("in/pred", "lies inside the input folder"),
                                        ("link", "is the input folder"), ("..", "lies inside the output folder")])
def test_output_folder_must_not_overlap_the_input_folder(tmp_path: Path, out: str, words: str) -> None:
    inp = tmp_path / "work" / "in"
    inp.mkdir(parents=True)
    (tmp_path / "work" / "link").symlink_to(inp)
    out_dir = inp if out == ".." else tmp_path / "work" / out
    in_dir = tmp_path / "work" / "in" / "cases" if out == ".." else inp
    with pytest.raises(XtlunetError, match=words) as info:
        check_folders(in_dir, out_dir)
    assert "give -o a folder outside -i" in info.value.fix
    check_folders(inp, tmp_path / "work" / "out")  # a sibling is fine


# ---------------------------------------------------------------- folds given twice, model folder without plans.json

def fold_folder(tmp_path: Path, *folds: str) -> Path:
    """A model folder with a (dummy) checkpoint_final.pth in each fold."""
    folder = tmp_path / "Dataset501_BrainMS" / "ScratchTrainer__xtlunetPlans__3d_fullres"
    for fold in folds:
        (folder / f"fold_{fold}").mkdir(parents=True)
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"weights")
    return folder


def test_a_fold_given_twice_is_refused(tmp_path: Path) -> None:
    folder = fold_folder(tmp_path, "0", "1")
    assert list(checkpoint_paths(folder, ["0", "1"], "final")) == ["0", "1"]
    with pytest.raises(XtlunetError, match=r"fold 0 is given twice in -f \(0 1 0\)") as info:
        checkpoint_paths(folder, ["0", "1", "0"], "final")
    assert info.value.fix == "name each fold once: -f 0 1"


def test_two_folds_that_are_one_file_are_refused(tmp_path: Path) -> None:
    folder = fold_folder(tmp_path, "0")
    (folder / "fold_2").symlink_to(folder / "fold_0")
    with pytest.raises(XtlunetError, match="folds 0 and 2 are one checkpoint file"):
        checkpoint_paths(folder, ["0", "2"], "final")


def test_model_folder_without_plans_says_what_is_missing(tmp_path: Path) -> None:
    folder = fold_folder(tmp_path, "0")
    (folder / "dataset.json").write_text("{}")
    with pytest.raises(XtlunetError) as info:
        load_trained_model(folder, ["0"])
    line = info.value.one_line()
    assert "model folder lacks plans.json, which training writes when a fold starts" in line
    assert "fold_0" in line and "xtlunet train Dataset501_BrainMS 3d_fullres FOLD -tr ScratchTrainer" in line
    assert "plan-and-preprocess" not in line


def test_one_network_or_prediction_twice_in_an_ensemble_is_refused() -> None:
    a = np.full((2, 3), 0.25, np.float32)
    with pytest.raises(XtlunetError, match="predictions 0 and 2 of the ensemble are one and the same object"):
        average_predictions([a, a + 1, a])
    assert np.allclose(average_predictions([a, a.copy()]), a)
    net = torch.nn.Conv3d(1, 2, 1)
    with pytest.raises(XtlunetError, match="networks 0 and 1 of the ensemble are one and the same object"):
        predict_case([net, net], np.zeros((1, 4, 4, 4), np.float32), SimpleNamespace(task="segmentation", name="c"),
                     None)


# ---------------------------------------------------------------- folds that cannot train (item 7)

def test_a_fold_without_validation_or_training_cases_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "splits_final.json"
    splits = [{"train": ["a", "b"], "val": []}, {"train": [], "val": ["a", "b"]}]
    with pytest.raises(XtlunetError, match="fold 0 of splits_final.json has no validation cases") as info:
        fold_cases(splits, 0, ["a", "b"], path)
    assert info.value.path == str(path) and "train fold 'all'" in info.value.fix
    with pytest.raises(XtlunetError, match="fold 1 of splits_final.json has no training cases"):
        fold_cases(splits, 1, ["a", "b"], path)
    assert fold_cases(splits, "all", ["b", "a"]) == (["a", "b"], [])


def test_fold_all_needs_no_split(tmp_path: Path) -> None:
    assert fold_split(tmp_path, ["c", "a", "b"], None, {}, "all") == (["a", "b", "c"], [])
    assert not (tmp_path / "splits_final.json").exists()
    with pytest.raises(XtlunetError, match="3 patients/cases cannot make 5 folds") as info:
        fold_split(tmp_path, ["c", "a", "b"], None, {}, 0)
    assert "train fold 'all'" in info.value.fix


def test_a_fold_without_foreground_is_refused(tmp_path: Path) -> None:
    data = tmp_path / BRAIN / "xtlunetPlans_3d_fullres"
    data.mkdir(parents=True)
    for cid, locations in (("a", []), ("b", []), ("c", [[1, 2, 3]])):
        (data / f"{cid}.json").write_text(json.dumps({"class_locations": {"1": locations, "2": []}}))
    spec = DatasetSpec(root=tmp_path / BRAIN, channel_names={0: "T2"}, labels={"background": 0, "lesion": 1,
                       "edema": 2}, num_training=3, file_ending=".nii.gz")
    check_foreground(spec, data, 0, ["a", "c"], ["b"])
    with pytest.raises(XtlunetError, match="no training case of fold 0 of Dataset501_BrainMS has a foreground voxel "
                                           r"\(only its validation cases do: c\)"):
        check_foreground(spec, data, 0, ["a", "b"], ["c"])
    shutil.copy(data / "a.json", data / "c.json")
    with pytest.raises(XtlunetError, match="every label map of Dataset501_BrainMS is background only") as info:
        check_foreground(spec, data, "all", ["a", "b", "c"], [])
    assert "lesion=1, edema=2" in info.value.fix and "plan-and-preprocess" in info.value.fix
