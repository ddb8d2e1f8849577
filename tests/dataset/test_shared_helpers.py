"""The shared dataset helpers: channel file names, NIfTI endings, header geometry, single-slice grids."""
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import is_nifti, read_header
from xtlunet.dataset.spec import channel_of
from xtlunet.errors import XtlunetError


@pytest.mark.parametrize("name, ending, expected", [
    ("case_0000_0000.nii.gz", ".nii.gz", ("case_0000", 0)),
    ("BRATS_001_0003.nii.gz", ".nii.gz", ("BRATS_001", 3)),
    ("m_12_0010.png", ".png", ("m_12", 10)),
    ("a_b_c_9999.mha", ".mha", ("a_b_c", 9999)),
])
def test_channel_of_parses_case_and_channel(name: str, ending: str, expected: tuple[str, int]) -> None:
    assert channel_of(name, ending) == expected


@pytest.mark.parametrize("name, ending", [
    ("case_0000.nii.gz", ".mha"),        # other ending
    ("case.nii.gz", ".nii.gz"),          # no channel suffix
    ("case_000.nii.gz", ".nii.gz"),      # three digits
    ("case_00000.nii.gz", ".nii.gz"),    # five digits
    ("_0000.nii.gz", ".nii.gz"),         # no case id
    ("case_00a0.nii.gz", ".nii.gz"),     # not digits
    ("case_0000.nii", ".nii.gz"),        # ending is a prefix of the declared one
    ("case_0000.nii.gz.bak", ".nii.gz"),
])
def test_channel_of_refuses_other_names(name: str, ending: str) -> None:
    assert channel_of(name, ending) is None


@pytest.mark.parametrize("name, expected", [
    ("a.nii", True), ("a.nii.gz", True), ("A.NII.GZ", True), ("dir.nii/a_0000.Nii", True),
    ("a.mha", False), ("a.png", False), ("a.nii.gz.bak", False), ("a.gz", False), ("nii", False),
])
def test_is_nifti(name: str, expected: bool) -> None:
    assert is_nifti(name) is expected
    assert is_nifti(Path(name)) is expected


@pytest.mark.parametrize("ending", [".nii.gz", ".mha", ".nrrd"])
def test_read_header_gives_the_written_geometry(tmp_path: Path, ending: str) -> None:
    img = sitk.Image(11, 9, 5, sitk.sitkInt16)
    img.SetSpacing((0.5, 0.7, 3.0))
    img.SetOrigin((12.5, -40.0, 7.25))
    img.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / f"img{ending}"
    sitk.WriteImage(img, str(path))
    g = read_header(path)
    assert g.shape == (5, 9, 11)
    assert np.allclose(g.spacing, (3.0, 0.7, 0.5))
    assert np.allclose(g.origin, (12.5, -40.0, 7.25))
    assert np.allclose(g.direction, (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert read_header(str(path)) == g


def test_read_header_of_a_2d_image(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    sitk.WriteImage(sitk.Image(30, 20, sitk.sitkUInt8), str(path))
    g = read_header(path)
    assert g.shape == (20, 30) and g.ndim == 2 and g.spacing == (1.0, 1.0)


@pytest.mark.parametrize("content, what", [(b"this is not an image" * 20, "cannot read image header"),
                                           (b"", "empty")])
def test_read_header_of_a_bad_file_names_it(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "broken_0000.nii.gz"
    path.write_bytes(content)
    with pytest.raises(XtlunetError) as info:
        read_header(path)
    assert what in info.value.what
    assert info.value.path == str(path)
    assert info.value.fix


def test_read_header_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(XtlunetError, match="not found") as info:
        read_header(tmp_path / "absent.mha")
    assert info.value.path == str(tmp_path / "absent.mha")


def test_single_slice_grid_drops_its_slice_axis() -> None:
    g = Geometry((4.0, 0.5, 0.25), (1.0, 2.0, 3.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0), (1, 16, 8))
    assert g.is_single_slice()
    flat = g.without_slice_axis()
    assert flat == Geometry((0.5, 0.25), (1.0, 2.0), (0.0, 1.0, 1.0, 0.0), (16, 8))
    assert not flat.is_single_slice()
    assert not Geometry((1.0, 1.0, 1.0), (0.0,) * 3, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (2, 4, 4)).is_single_slice()
