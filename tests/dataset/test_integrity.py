"""Dataset integrity check: tiny synthetic datasets, each corruption reported with its file and issue."""
from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.integrity import Problem, check_dataset, dataset_dimension, verify_dataset
from xtlunet.dataset.io import write_image
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError

END = ".nii.gz"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIP_XY = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
SEG_GRID = Geometry((3.0, 1.0, 1.0), (10.0, -20.0, 5.0), IDENTITY, (8, 12, 12))
CLS_GRID = Geometry((3.0, 1.0, 1.0), (100.0, 80.0, 5.0), FLIP_XY, (8, 12, 12))
CLS_COARSE = Geometry((6.0, 2.0, 2.0), (100.5, 80.5, 6.5), FLIP_XY, (4, 6, 6))
CASES = ("case_0000", "case_0001", "case_0002")


# ---------------------------------------------------------------- fixture datasets

def _write_volume(path: Path, grid: Geometry, seed: int = 0, dtype: type = np.float32) -> None:
    """A random image on `grid`."""
    write_image(path, np.random.default_rng(seed).normal(size=grid.shape).astype(dtype), grid)


def _write_label(path: Path, grid: Geometry = SEG_GRID, value: float = 1, dtype: type = np.uint8) -> None:
    """A label map on `grid` with a cube of `value`."""
    arr = np.zeros(grid.shape, dtype=dtype)
    arr[2:5, 3:8, 3:8] = value
    write_image(path, arr, grid)


def _write_json(root: Path, **entries: object) -> None:
    """dataset.json with the given entries."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(entries))


def write_seg_dataset(root: Path) -> Path:
    """A valid 3D segmentation dataset: 3 cases × 2 channels of 8×12×12 voxels plus one test case."""
    _write_json(root, channel_names={"0": "T2", "1": "ADC"}, labels={"background": 0, "lesion": 1},
                numTraining=len(CASES), file_ending=END)
    for i, cid in enumerate(CASES):
        for c in range(2):
            _write_volume(root / "imagesTr" / f"{cid}_{c:04d}{END}", SEG_GRID, seed=10 * i + c)
        _write_label(root / "labelsTr" / f"{cid}{END}")
    for c in range(2):
        _write_volume(root / "imagesTs" / f"case_0100_{c:04d}{END}", SEG_GRID, seed=100 + c)
    return root


def _write_findings(path: Path, rows: list[list[str]],
                    header: tuple[str, ...] = ("case_id", "finding_id", "patient_id", "x", "y", "z", "label")) -> None:
    """A findings.csv with the given rows."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _world(grid: Geometry, index: tuple[float, ...]) -> list[str]:
    """World position (x, y, z) of a voxel index as csv strings."""
    return [f"{v:.3f}" for v in grid.index_to_world(index)]


def write_cls_dataset(root: Path) -> Path:
    """A valid 3D classification dataset: channels on different grids, a whole-image finding, a case without findings."""
    _write_json(root, channel_names={"0": "T2", "1": "ADC"}, labels={"background": 0}, numTraining=len(CASES),
                file_ending=END, task="classification", classes={"benign": 0, "malignant": 1},
                findings="findings.csv")
    for i, cid in enumerate(CASES):
        _write_volume(root / "imagesTr" / f"{cid}_0000{END}", CLS_GRID, seed=i)
        _write_volume(root / "imagesTr" / f"{cid}_0001{END}", CLS_COARSE, seed=50 + i)
    _write_findings(root / "findings.csv", [
        ["case_0000", "1", "p1", *_world(CLS_GRID, (4, 6, 6)), "malignant"],
        ["case_0001", "1", "p1", *_world(CLS_GRID, (0, 0, 11)), "benign"],
        ["case_0001", "2", "", "", "", "", "1"],
    ])
    return root


def _load(root: Path) -> DatasetSpec:
    """Parse dataset.json of a fixture dataset."""
    return DatasetSpec.load(root)


# ---------------------------------------------------------------- corruptions

def _set_json(root: Path, **changes: object) -> None:
    """Change entries of dataset.json."""
    d = json.loads((root / "dataset.json").read_text())
    d.update(changes)
    (root / "dataset.json").write_text(json.dumps(d))


def _replace_grid(path: Path, **changes: object) -> None:
    """Rewrite an image with some geometry fields changed."""
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    g = Geometry(tuple(img.GetSpacing()[::-1]), img.GetOrigin(), img.GetDirection(), arr.shape)
    fields = {**g.to_json(), **changes}
    if "shape" in changes:
        arr = np.zeros(changes["shape"], dtype=arr.dtype)
    write_image(path, arr, Geometry.from_json(fields))


def _write_4d(path: Path) -> None:
    """A 4D image (two 3D volumes stacked)."""
    vol = sitk.GetImageFromArray(np.zeros(SEG_GRID.shape, np.float32))
    sitk.WriteImage(sitk.JoinSeries([vol, vol]), str(path))


def _write_rgb(path: Path) -> None:
    """A 3D image with three components per voxel."""
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((*SEG_GRID.shape, 3), np.uint8), isVector=True), str(path))


def _write_2d(path: Path) -> None:
    """A 2D image."""
    write_image(path, np.zeros((12, 12), np.float32), Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (12, 12)))


def _with_nan(path: Path) -> None:
    """An image with NaN voxels."""
    arr = np.zeros(SEG_GRID.shape, np.float32)
    arr[1, 2, 3] = np.nan
    arr[2, 2, 3] = np.inf
    write_image(path, arr, SEG_GRID)


def _truncate(path: Path) -> None:
    """Cut a file to half its size."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@dataclass(frozen=True)
class Corruption:
    """One bad input: how to make it, and which file and words its Problem must name."""

    name: str
    kind: str
    apply: Callable[[Path], None]
    file: str
    word: str


def _img(cid: str, c: int, split: str = "Tr") -> str:
    """Relative path of a channel file."""
    return f"images{split}/{cid}_{c:04d}{END}"


def _lab(cid: str) -> str:
    """Relative path of a label file."""
    return f"labelsTr/{cid}{END}"


def _rows(*rows: list[str]) -> Callable[[Path], None]:
    """Replace findings.csv with the given rows."""
    return lambda r: _write_findings(r / "findings.csv", list(rows))


CORRUPTIONS = [
    Corruption("imagesTr missing", "seg", lambda r: shutil.rmtree(r / "imagesTr"), "imagesTr", "missing"),
    Corruption("imagesTr empty", "seg", lambda r: [f.unlink() for f in (r / "imagesTr").iterdir()], "imagesTr",
               "no CASE_XXXX"),
    Corruption("channel file missing", "seg", lambda r: (r / _img("case_0002", 1)).unlink(), _img("case_0002", 1),
               "missing"),
    Corruption("unknown extra channel", "seg", lambda r: _write_volume(r / _img("case_0001", 2), SEG_GRID),
               _img("case_0001", 2), "unknown channel 0002"),
    Corruption("file with a channel name", "seg", lambda r: _write_volume(r / f"imagesTr/case_0001_T2{END}", SEG_GRID),
               f"imagesTr/case_0001_T2{END}", "does not match"),
    Corruption("file without channel suffix", "seg", lambda r: _write_volume(r / f"imagesTr/case_0001{END}", SEG_GRID),
               f"imagesTr/case_0000{END}", f"of case 'case' is missing (the case has 1 of the 2 channels declared in "
                                           f"dataset.json: case_0001{END})"),
    Corruption("wrong file ending", "seg", lambda r: _write_volume(r / "imagesTr/case_0003_0000.nii", SEG_GRID),
               "imagesTr/case_0003_0000.nii", "file_ending"),
    Corruption("numTraining wrong", "seg", lambda r: _set_json(r, numTraining=5), "dataset.json", "numTraining is 5"),
    Corruption("labelsTr missing", "seg", lambda r: shutil.rmtree(r / "labelsTr"), "labelsTr", "missing"),
    Corruption("label file missing", "seg", lambda r: (r / _lab("case_0001")).unlink(), _lab("case_0001"), "missing"),
    Corruption("orphan label", "seg", lambda r: _write_label(r / _lab("case_0009")), _lab("case_0009"), "orphan"),
    Corruption("undeclared label value", "seg", lambda r: _write_label(r / _lab("case_0001"), value=3),
               _lab("case_0001"), "label values 3 are not declared"),
    Corruption("float label with fractions", "seg",
               lambda r: _write_label(r / _lab("case_0002"), value=0.5, dtype=np.float32), _lab("case_0002"),
               "non-integer"),
    Corruption("label shape mismatch", "seg", lambda r: _replace_grid(r / _lab("case_0000"), shape=[8, 12, 10]),
               _lab("case_0000"), "shape"),
    Corruption("label spacing mismatch", "seg", lambda r: _replace_grid(r / _lab("case_0000"), spacing=[3.0, 1.0, 1.1]),
               _lab("case_0000"), "spacing"),
    Corruption("label origin mismatch", "seg", lambda r: _replace_grid(r / _lab("case_0000"), origin=[10.0, -20.0, 5.5]),
               _lab("case_0000"), "origin"),
    Corruption("label direction mismatch", "seg", lambda r: _replace_grid(r / _lab("case_0000"), direction=list(FLIP_XY)),
               _lab("case_0000"), "direction"),
    Corruption("channels on different grids (segmentation)", "seg",
               lambda r: _replace_grid(r / _img("case_0001", 1), spacing=[2.0, 1.0, 1.0]), _img("case_0001", 1),
               "channel grid differs"),
    Corruption("4D image", "seg", lambda r: _write_4d(r / _img("case_0001", 0)), _img("case_0001", 0), "is 4D"),
    Corruption("2D image in a 3D dataset", "seg", lambda r: _write_2d(r / _img("case_0002", 1)), _img("case_0002", 1),
               "is 2D"),
    Corruption("RGB image in a 3D dataset", "seg", lambda r: _write_rgb(r / _img("case_0001", 1)), _img("case_0001", 1),
               "3 components"),
    Corruption("NaN/Inf voxels", "seg", lambda r: _with_nan(r / _img("case_0001", 0)), _img("case_0001", 0),
               "2 NaN/Inf"),
    Corruption("zero-byte file", "seg", lambda r: (r / _img("case_0000", 1)).write_bytes(b""), _img("case_0000", 1),
               "empty"),
    Corruption("truncated .nii.gz", "seg", lambda r: _truncate(r / _img("case_0002", 0)), _img("case_0002", 0),
               "truncated"),
    Corruption("garbage file", "seg", lambda r: (r / _lab("case_0000")).write_text("not an image"), _lab("case_0000"),
               "cannot read"),
    Corruption("test case lacks a channel", "seg", lambda r: (r / _img("case_0100", 1, "Ts")).unlink(),
               _img("case_0100", 1, "Ts"), "1 of the 2 channels"),
    Corruption("test case has an extra channel", "seg", lambda r: _write_volume(r / _img("case_0100", 2, "Ts"), SEG_GRID),
               _img("case_0100", 2, "Ts"), "unknown channel"),
    Corruption("findings.csv missing", "cls", lambda r: (r / "findings.csv").unlink(), "findings.csv", "missing"),
    Corruption("findings.csv malformed", "cls",
               lambda r: _write_findings(r / "findings.csv", [["case_0000", "1"]], header=("case_id", "finding_id")),
               "findings.csv", "lacks columns label"),
    Corruption("findings.csv not UTF-8 text", "cls", lambda r: (r / "findings.csv").write_bytes(b"case_id\n\xff\xfe\n"),
               "findings.csv", "not a readable UTF-8 CSV"),
    Corruption("finding of an unknown case", "cls", _rows(["case_0007", "1", "", "", "", "", "0"]), "findings.csv",
               "case 'case_0007'"),
    Corruption("finding outside its image", "cls", _rows(["case_0000", "3", "", "0", "0", "900", "0"]),
               "findings.csv", "finding case_0000/3 at (0.0, 0.0, 900.0) mm LPS lies outside"),
    Corruption("finding in RAS coordinates", "cls",
               _rows(["case_0002", "1", "", *[str(-float(v)) if i < 2 else v for i, v in
                                              enumerate(_world(CLS_GRID, (4, 6, 6)))], "1"]),
               "findings.csv", "look like RAS"),
    Corruption("channels of different dimension (classification)", "cls", lambda r: _write_2d(r / _img("case_0001", 1)),
               _img("case_0001", 1), "is 2D"),
]


def _make(tmp_path: Path, kind: str) -> Path:
    """A fresh valid dataset of the given kind."""
    return (write_seg_dataset if kind == "seg" else write_cls_dataset)(tmp_path / f"Dataset001_{kind}")


def _hits(problems: list[Problem], root: Path, file: str, word: str) -> list[Problem]:
    """Problems naming `root/file` whose `what` mentions `word`."""
    target = (root / file).as_posix()
    return [p for p in problems if Path(p.path).as_posix() == target and word.lower() in p.what.lower()]


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("kind", ["seg", "cls"])
@pytest.mark.parametrize("deep", [True, False])
def test_valid_dataset_has_no_problems(tmp_path: Path, kind: str, deep: bool) -> None:
    """Fixture datasets (incl. classification channels on different grids, whole-image findings) pass."""
    root = _make(tmp_path, kind)
    assert check_dataset(_load(root), deep=deep) == []
    verify_dataset(_load(root), deep=deep)


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=[c.name for c in CORRUPTIONS])
def test_each_corruption_is_reported(tmp_path: Path, corruption: Corruption) -> None:
    """Every bad input yields a Problem that names the file and the issue, with a fix."""
    root = _make(tmp_path, corruption.kind)
    corruption.apply(root)
    problems = check_dataset(_load(root), deep=True)
    hits = _hits(problems, root, corruption.file, corruption.word)
    assert hits, "\n".join(p.line() for p in problems) or "no problems"
    assert all(p.fix and "\n" not in p.line() for p in problems)


def test_several_corruptions_are_reported_together(tmp_path: Path) -> None:
    """The check does not stop at the first problem."""
    chosen = [c for c in CORRUPTIONS if c.name in ("channel file missing", "orphan label", "NaN/Inf voxels",
                                                   "label shape mismatch", "numTraining wrong", "truncated .nii.gz")]
    root = _make(tmp_path, "seg")
    for c in chosen:
        c.apply(root)
    problems = check_dataset(_load(root), deep=True)
    for c in chosen:
        assert _hits(problems, root, c.file, c.word), c.name


def test_verify_dataset_raises_one_line_error_with_all_details(tmp_path: Path) -> None:
    """verify_dataset: a one-line XtlunetError whose details are the problem lines."""
    root = _make(tmp_path, "seg")
    (root / _img("case_0002", 1)).unlink()
    _write_label(root / _lab("case_0009"))
    spec = _load(root)
    problems = check_dataset(spec)
    with pytest.raises(XtlunetError) as info:
        verify_dataset(spec)
    err = info.value
    assert "\n" not in str(err)
    assert f"dataset check found {len(problems)} problems in {spec.name}" in str(err)
    assert err.details == [p.line() for p in problems] and len(err.details) >= 2
    assert err.path == str(root)


def test_problem_line_format() -> None:
    """Problem.line renders 'PATH: WHAT — fix: FIX'."""
    assert Problem("a/b.nii.gz", "is bad", "replace it").line() == "a/b.nii.gz: is bad — fix: replace it"


def test_shallow_check_reads_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """deep=False reads no voxels: NaN goes unnoticed, a label shape mismatch does not."""
    root = _make(tmp_path, "seg")
    _with_nan(root / _img("case_0001", 0))
    _replace_grid(root / _lab("case_0000"), shape=[8, 12, 10])

    def no_pixels(*args: object, **kwargs: object) -> None:
        """Fail the test: a header-only check must not get here."""
        raise AssertionError("voxel data read in a header-only check")

    monkeypatch.setattr(sitk, "ReadImage", no_pixels)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", no_pixels)
    start = time.perf_counter()
    problems = check_dataset(_load(root), deep=False)
    assert time.perf_counter() - start < 3.0
    assert _hits(problems, root, _lab("case_0000"), "shape")
    assert not [p for p in problems if "NaN" in p.what]


def _convert(root: Path, ending: str) -> None:
    """Re-save every image of a dataset in another format."""
    _set_json(root, file_ending=ending)
    for f in sorted(root.rglob(f"*{END}")):
        sitk.WriteImage(sitk.ReadImage(str(f)), str(f)[: -len(END)] + ending)
        f.unlink()


def test_shallow_check_sees_truncated_uncompressed_nifti(tmp_path: Path) -> None:
    """An uncompressed .nii cut short is caught from its size, without reading voxels."""
    root = _make(tmp_path, "seg")
    _convert(root, ".nii")
    assert check_dataset(_load(root), deep=False) == []
    _truncate(root / "imagesTr/case_0001_0001.nii")
    problems = check_dataset(_load(root), deep=False)
    assert _hits(problems, root, "imagesTr/case_0001_0001.nii", "truncated")


def test_other_formats_nan_and_truncation(tmp_path: Path) -> None:
    """In .mha datasets NaN/Inf are found in the voxel array and a truncated file is caught from its size."""
    root = _make(tmp_path, "seg")
    _convert(root, ".mha")
    assert check_dataset(_load(root)) == []
    arr = np.zeros(SEG_GRID.shape, np.float32)
    arr[0, 0, :3] = np.nan
    write_image(root / "imagesTr/case_0000_0000.mha", arr, SEG_GRID)
    _truncate(root / "labelsTr/case_0001.mha")
    problems = check_dataset(_load(root))
    assert _hits(problems, root, "imagesTr/case_0000_0000.mha", "3 NaN/Inf")
    assert _hits(problems, root, "labelsTr/case_0001.mha", "file is truncated")  # from its header, no voxel read


def test_parallel_check_reports_the_same(tmp_path: Path) -> None:
    """num_workers > 1 gives the same problems in the same order."""
    root = _make(tmp_path, "seg")
    _with_nan(root / _img("case_0001", 0))
    (root / _img("case_0002", 1)).unlink()
    spec = _load(root)
    serial = check_dataset(spec, num_workers=1)
    assert len(serial) == 2
    assert check_dataset(spec, num_workers=2) == serial


def _write_2d_dataset(root: Path, single_slice_files: bool) -> Path:
    """A 2D segmentation dataset (optionally stored as one-slice 3D files)."""
    _write_json(root, channel_names={"0": "mammo"}, labels={"background": 0, "mass": 1}, numTraining=2, file_ending=END)
    grid = (Geometry((1.0, 0.5, 0.5), (0.0, 0.0, 0.0), IDENTITY, (1, 16, 16)) if single_slice_files
            else Geometry((0.5, 0.5), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (16, 16)))
    for cid in ("m_0000", "m_0001"):
        _write_volume(root / "imagesTr" / f"{cid}_0000{END}", grid)
        write_image(root / "labelsTr" / f"{cid}{END}", (np.arange(256) % 2).astype(np.uint8).reshape(grid.shape), grid)
    return root


@pytest.mark.parametrize("single_slice_files", [False, True])
def test_2d_dataset(tmp_path: Path, single_slice_files: bool) -> None:
    """2D datasets (2D files or one-slice 3D files) pass; a 3D volume among them is a Problem."""
    root = _write_2d_dataset(tmp_path / "Dataset002_Mammo", single_slice_files)
    spec = _load(root)
    assert dataset_dimension(spec) == 2
    assert check_dataset(spec) == []
    _write_volume(root / "imagesTr" / f"m_0001_0000{END}", SEG_GRID)
    assert _hits(check_dataset(spec), root, f"imagesTr/m_0001_0000{END}", "is 3D")


def test_dataset_dimension(tmp_path: Path) -> None:
    """dataset_dimension is 3 for a volume dataset and raises a clear error without images."""
    root = _make(tmp_path, "seg")
    assert dataset_dimension(_load(root)) == 3
    shutil.rmtree(root / "imagesTr")
    (root / "imagesTr").mkdir()
    with pytest.raises(XtlunetError, match="2D or 3D"):
        dataset_dimension(_load(root))
