"""`xtlunet ensemble`: the mean of the folders' probabilities, voxel by voxel, with the first folder's geometry; a
case missing in one folder, or of another shape, stops it before anything is written."""
from __future__ import annotations

import numpy as np

from xtlunet.cli import main
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_image, write_image

SHAPE = (4, 6, 5)
GEOMETRY = Geometry(spacing=(3.0, 0.9, 1.1), origin=(-4.0, 2.5, 30.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0), shape=SHAPE)


def _prediction_folder(folder, seed, cases=("a", "b"), k=3, geometry=GEOMETRY):
    """CASE.nii.gz + CASE.npz as predict --save-probabilities writes them; returns case → float16 probabilities."""
    rng = np.random.default_rng(seed)
    out = {}
    for case in cases:
        probs = rng.dirichlet(np.ones(k), size=geometry.shape).transpose(3, 0, 1, 2).astype(np.float16)
        write_image(folder / f"{case}.nii.gz", np.argmax(probs, axis=0).astype(np.uint8), geometry)
        np.savez_compressed(folder / f"{case}.npz", probabilities=probs)
        out[case] = probs
    return out


def test_ensemble_is_the_voxelwise_mean(tmp_path, capsys):
    first = _prediction_folder(tmp_path / "m1", 0)
    other = Geometry(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()), shape=SHAPE)
    second = _prediction_folder(tmp_path / "m2", 1, geometry=other)
    out = tmp_path / "ens"
    assert main(["ensemble", "-i", str(tmp_path / "m1"), str(tmp_path / "m2"), "-o", str(out),
                 "--save-probabilities"]) == 0
    assert "2 cases ensembled from 2 folders" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "a.npz", "b.nii.gz", "b.npz"]
    for case in ("a", "b"):
        mean = (first[case].astype(np.float32) + second[case].astype(np.float32)) / 2
        labels, geo = read_image(out / f"{case}.nii.gz")
        assert np.array_equal(labels, np.argmax(mean, axis=0)) and labels.dtype == np.uint8
        assert geo == read_image(tmp_path / "m1" / f"{case}.nii.gz")[1]  # the first folder's geometry
        with np.load(out / f"{case}.npz") as saved:
            assert saved["probabilities"].dtype == np.float16
            assert np.array_equal(saved["probabilities"], mean.astype(np.float16))
    assert not np.array_equal(np.argmax(first["a"], 0), np.argmax(mean, 0))  # the second folder did count


def test_ensemble_refuses_a_missing_case_or_another_shape(tmp_path, capsys):
    _prediction_folder(tmp_path / "m1", 0)
    _prediction_folder(tmp_path / "m2", 1, cases=("a",))
    _prediction_folder(tmp_path / "m3", 2, k=2)
    out = tmp_path / "ens"
    for folders, needle in ((["m1", "m2"], f"{tmp_path / 'm2'} lacks the probabilities of 1 case the other folders "
                                           f"have: b [{tmp_path / 'm2' / 'b.npz'}]"),
                            (["m1", "m3"], f"a.npz has labels (channels) [2, 4, 6, 5], {tmp_path / 'm1' / 'a.npz'} "
                                           "has [3, 4, 6, 5]"),
                            (["m1", "m1"], "is given twice"), (["m1"], "two or more prediction folders")):
        assert main(["ensemble", "-i", *(str(tmp_path / f) for f in folders), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
        assert not out.exists()
