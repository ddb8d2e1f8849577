"""nnU-Net v2's postprocessing.pkl in `xtlunet apply-postprocessing`: files written by nnU-Net itself
(tests/workflow/data, made by make_nnunet_postprocessing.py) give nnU-Net's own outputs voxel for voxel, and a
pickle that is not nnU-Net's post-processing is refused in one line without running anything."""
from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from xtlunet.cli import main
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_header, read_image, write_image
from xtlunet.errors import XtlunetError
from xtlunet.postprocessing.nnunet_pkl import KEEP_LARGEST_FN, KeepLargestStep, NnunetPostprocessing

DATA = Path(__file__).resolve().parent / "data"
NAMES = ("foreground", "per_label", "none")
GEOMETRY = Geometry(spacing=(1.5, 0.8, 0.9), origin=(3.0, -2.0, 1.0), direction=tuple(np.eye(3).ravel()),
                    shape=(20, 24, 22))


@pytest.fixture(scope="module")
def cases() -> dict[str, np.ndarray]:
    """Label maps (caseK) and nnU-Net's post-processed versions (caseK_NAME)."""
    with np.load(DATA / "nnunet_postprocessing_cases.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.mark.parametrize("name", NAMES)
def test_each_nnunet_file_gives_nnunets_output(cases, name):
    pp = NnunetPostprocessing.load(DATA / f"nnunet_postprocessing_{name}.pkl")
    for k in range(3):
        seg = cases[f"case{k}"]
        out = pp.apply(seg, GEOMETRY.spacing)
        assert out.dtype == seg.dtype and np.array_equal(out, cases[f"case{k}_{name}"])
        assert name == "none" or not np.array_equal(out, seg)   # each file changes every case


def test_the_steps_are_read_as_nnunet_wrote_them():
    assert NnunetPostprocessing.load(DATA / "nnunet_postprocessing_foreground.pkl").steps == (
        KeepLargestStep((1, 2, 3)),)
    per_label = NnunetPostprocessing.load(DATA / "nnunet_postprocessing_per_label.pkl")
    assert per_label.steps == (KeepLargestStep((2,)), KeepLargestStep((1, 3)))
    assert per_label.describe() == ["keep the largest component of label 2",
                                    "keep the largest component of labels 1+3"]
    assert NnunetPostprocessing.load(DATA / "nnunet_postprocessing_none.pkl").describe() == ["no operation"]


def test_a_region_is_one_mask_and_other_labels_stay():
    seg = np.zeros((1, 3, 9), np.uint8)
    seg[0, 1, 0:2] = 1      # a 1-2 component of 4 voxels: the largest of the region
    seg[0, 1, 2:4] = 2
    seg[0, 1, 6] = 1        # a lone voxel of label 1: removed
    seg[0, 1, 8] = 3        # another label: untouched
    out = KeepLargestStep((1, 2), background=0).apply(seg)
    assert out[0, 1].tolist() == [1, 1, 2, 2, 0, 0, 0, 0, 3]
    assert KeepLargestStep((1,)).apply(seg)[0, 1].tolist() == [1, 1, 2, 2, 0, 0, 0, 0, 3]   # 2 voxels beat 1
    seg[0, 1, 6] = 3
    assert KeepLargestStep((3,)).apply(seg)[0, 1].tolist() == [1, 1, 2, 2, 0, 0, 3, 0, 3]   # a tie keeps both


def test_apply_postprocessing_takes_nnunets_pkl(cases, tmp_path, capsys):
    folder, out = tmp_path / "pred", tmp_path / "out"
    for k in range(3):
        write_image(folder / f"case{k}.nii.gz", cases[f"case{k}"], GEOMETRY)
    pkl = DATA / "nnunet_postprocessing_per_label.pkl"
    assert main(["apply-postprocessing", "-i", str(folder), "-o", str(out), "-pp", str(pkl)]) == 0
    assert "3 files post-processed" in capsys.readouterr().out
    for k in range(3):
        arr, geo = read_image(out / f"case{k}.nii.gz")
        assert np.array_equal(arr, cases[f"case{k}_per_label"]) and arr.dtype == np.uint8
        assert read_header(out / f"case{k}.nii.gz") == read_header(folder / f"case{k}.nii.gz")


class _Runs:
    """A pickle that would create a file if it were unpickled with pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _pickle(path: Path, content) -> Path:
    """Write content as a pickle; return the path."""
    path.write_bytes(pickle.dumps(content))
    return path


def _nnunet_fn(monkeypatch):
    """A stand-in for nnU-Net's keep-largest function that pickles under nnU-Net's name (nnunetv2 is not needed)."""
    module_name, name = KEEP_LARGEST_FN

    def fn(segmentation, labels_or_regions, background_label=0):
        return segmentation

    fn.__module__, fn.__qualname__, fn.__name__ = module_name, name, name
    parts = module_name.split(".")
    for k in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:k]), types.ModuleType(".".join(parts[:k])))
    setattr(sys.modules[module_name], name, fn)
    return fn


def test_other_pickles_are_refused_in_one_line_before_writing(cases, tmp_path, capsys, monkeypatch):
    fn = _nnunet_fn(monkeypatch)
    folder = tmp_path / "pred"
    write_image(folder / "case0.nii.gz", cases["case0"], GEOMETRY)
    marker = tmp_path / "ran"
    bad = {
        "code": (_pickle(tmp_path / "code.pkl", ([_Runs(marker)], [{}])), "the pickle calls posix.mkdir"),
        "garbage": (tmp_path / "garbage.pkl", "not a readable pickle"),
        "json": (tmp_path / "json.pkl", "not a readable pickle"),
        "dict": (_pickle(tmp_path / "dict.pkl", {"labels": 1}), "expected a pair"),
        "lengths": (_pickle(tmp_path / "lengths.pkl", ([], [{"labels_or_regions": 1}])),
                    "0 functions but 1 sets of keyword arguments"),
        "label": (_pickle(tmp_path / "label.pkl", ([fn], [{"labels_or_regions": [1, (2, "a")]}])),
                  "label value 'a' that is not an integer"),
        "kwargs": (_pickle(tmp_path / "kwargs.pkl", ([fn], [{"labels_or_regions": 1, "connectivity": 1}])),
                   "step 0 has keyword arguments"),
        "empty": (_pickle(tmp_path / "empty.pkl", ([fn], [{"labels_or_regions": []}])), "step 0 names no label"),
        "missing": (tmp_path / "missing.pkl", "file not found"),
    }
    bad["garbage"][0].write_bytes(b"\x80\x05not a pickle at all")
    bad["json"][0].write_text('{"format": "xtlunet.postprocessing"}')
    good = _pickle(tmp_path / "good.pkl", ([fn], [{"labels_or_regions": [1, (2, np.int64(3))], "background_label": 0}]))
    assert NnunetPostprocessing.load(good).steps == (KeepLargestStep((1, 2, 3)),)
    for name, (path, needle) in bad.items():
        out = tmp_path / f"out_{name}"
        assert main(["apply-postprocessing", "-i", str(folder), "-o", str(out), "-pp", str(path)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert needle in err and str(path) in err and len(err.splitlines()) == 1, (name, err)
        assert not out.exists()
    assert not marker.exists()
    with pytest.raises(XtlunetError, match="keep-largest"):
        NnunetPostprocessing.load(_pickle(tmp_path / "other_fn.pkl", ([np.zeros], [{"labels_or_regions": 1}])))
