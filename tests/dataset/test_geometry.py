"""Geometry round trips (RAS vs LPS, flipped, oblique) and world→voxel mapping of findings."""
import numpy as np
import pytest

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_image, write_image


def _rotation(deg: float) -> tuple:
    """Direction matrix of a rotation about z (flattened)."""
    t = np.deg2rad(deg)
    m = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    return tuple(m.ravel())


DIRECTIONS = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "flipped_z": (1, 0, 0, 0, 1, 0, 0, 0, -1),
    "oblique": _rotation(17.0),
    "permuted": (0, 1, 0, 1, 0, 0, 0, 0, -1),
}


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
@pytest.mark.parametrize("ending", [".nii.gz", ".mha", ".nrrd"])
def test_geometry_round_trip(tmp_path, name, ending):
    g = Geometry((3.0, 0.7, 0.5), (12.5, -40.0, 7.25), tuple(float(v) for v in DIRECTIONS[name]), (5, 9, 11))
    a = np.random.default_rng(0).normal(size=g.shape).astype(np.float32)
    write_image(tmp_path / f"img{ending}", a, g)
    b, g2 = read_image(tmp_path / f"img{ending}")
    assert np.array_equal(a, b)
    assert g2.mismatch(g) == []
    assert np.allclose(g2.direction, g.direction, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_world_index_round_trip_matches_simpleitk(name):
    import SimpleITK as sitk

    g = Geometry((2.5, 0.8, 0.6), (-3.0, 20.0, 11.0), tuple(float(v) for v in DIRECTIONS[name]), (6, 10, 12))
    img = sitk.Image(12, 10, 6, sitk.sitkFloat32)
    img.SetSpacing(g.spacing[::-1])
    img.SetOrigin(g.origin)
    img.SetDirection(g.direction)
    for idx in [(0, 0, 0), (5, 9, 11), (2.5, 3.25, 7.75)]:
        world = img.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx[::-1]])
        assert np.allclose(g.index_to_world(idx), world, atol=1e-6)
        assert np.allclose(g.world_to_index(world), idx, atol=1e-6)
    assert g.contains_index([5.4, 9.4, 11.4]) and not g.contains_index([6.6, 0, 0])


def test_png_16bit_round_trip(tmp_path):
    g = Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (20, 30))
    a = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    write_image(tmp_path / "m.png", a, g)
    b, g2 = read_image(tmp_path / "m.png")
    assert b.dtype == np.uint16 and np.array_equal(a, b) and g2.shape == (20, 30)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    g = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (2, 2, 2))
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.float32), g)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ending, dtype", [(".png", np.uint8), (".dcm", np.int16)])
def test_2d_png8_and_dicom_round_trip(tmp_path, ending, dtype):
    g = Geometry((0.5, 0.5), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (24, 32))
    a = (np.arange(24 * 32).reshape(24, 32) % 200).astype(dtype)
    write_image(tmp_path / f"m{ending}", a, g)
    b, g2 = read_image(tmp_path / f"m{ending}", expected_ndim=2)
    assert np.array_equal(a, b) and g2.shape == (24, 32)
