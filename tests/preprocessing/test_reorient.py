"""--reorient: every case in its closest RAS+ frame (permutation and flips only), undone exactly at export."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from xtlunet.cli import main
from xtlunet.dataset.findings import Finding
from xtlunet.dataset.geometry import Geometry, Reorientation, closest_ras
from xtlunet.dataset.io import read_header, read_image, write_image
from xtlunet.dataset.loading import LoadedCase, load_case, reoriented
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError
from xtlunet.fingerprint import Fingerprint
from xtlunet.inference.export import export_prediction, probabilities_to_labels, revert_preprocessing
from xtlunet.plans import Plans
from xtlunet.preprocessing.case import preprocess_loaded

BRAIN = "Dataset501_BrainMS"
RAS = np.diag([-1.0, -1.0, 1.0])  # RAS+ axes in LPS world coordinates
PSL = np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])  # sagittal: index x → P, y → S, z → L
SPACING = (2.0, 1.5, 1.0)  # array order, in the RAS frame
SHAPE = (20, 24, 30)
CENTRE = np.array([10.0, -20.0, 30.0])
# how each input stores the RAS volume: its reorientation away from RAS (new axis k = old axes[k], reversed if flips[k])
STORAGE = {"RAS": Reorientation((0, 1, 2), (False, False, False)),
           "LPS": Reorientation((0, 1, 2), (False, True, True)),
           "PSL": Reorientation((2, 0, 1), (True, False, True)),
           "oblique": Reorientation((2, 0, 1), (True, False, True))}


def tilt(degrees: float = 20.0) -> np.ndarray:
    """A rotation of `degrees` about an oblique axis (mostly z)."""
    a, b = np.deg2rad(degrees), np.deg2rad(6.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def centred_grid(direction: np.ndarray, spacing: tuple[float, ...] = SPACING,
                 shape: tuple[int, ...] = SHAPE) -> Geometry:
    """A grid (array order spacing/shape) whose middle lies at CENTRE."""
    sp_xyz = np.asarray(spacing[::-1])
    mid_xyz = (np.asarray(shape[::-1]) - 1) / 2
    origin = CENTRE - (direction * sp_xyz[None, :]) @ mid_xyz
    return Geometry(spacing, tuple(float(o) for o in origin), tuple(float(v) for v in direction.ravel()), shape)


def stored(name: str) -> Geometry:
    """The RAS box stored as `name` (the oblique one is the PSL storage turned by ~20° about the box centre)."""
    geo = STORAGE[name].geometry(centred_grid(RAS))
    if name != "oblique":
        return geo
    return centred_grid(tilt() @ geo.direction_matrix(), geo.spacing, geo.shape)


def random_labels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A random label volume (0, 1) with a zero border, as int16."""
    seg = np.random.default_rng(seed).integers(0, 2, shape).astype(np.int16)
    seg[:2], seg[:, -3:], seg[..., :1] = 0, 0, 0
    return seg


def synthetic_case(name: str, seg_ras: np.ndarray) -> LoadedCase:
    """The RAS label volume stored as `name`, with two image channels that are non-zero where the labels are."""
    geo, seg = stored(name), STORAGE[name].apply(seg_ras)
    data = np.stack([np.where(seg > 0, 1.0 + seg, 0.0), np.where(seg > 0, 5.0 - seg, 0.0)]).astype(np.float32)
    return LoadedCase(f"case_{name}", data, geo, seg)


def one_hot(seg: np.ndarray, classes: int = 2) -> np.ndarray:
    """Probabilities that put all mass on the label."""
    return (seg[None] == np.arange(classes).reshape(-1, *[1] * seg.ndim)).astype(np.float32)


def unresampled(plans: Plans, lc: LoadedCase, transpose: list[int]) -> Plans:
    """Plans transposing by `transpose` whose 3d_fullres spacing is the case's own (no resampling: exact)."""
    spacing = [reoriented(lc).geometry.spacing[a] for a in transpose]
    conf = dataclasses.replace(plans.configuration("3d_fullres"), spacing=spacing)
    return dataclasses.replace(plans, transpose_forward=list(transpose), configurations={"3d_fullres": conf})


def add_sagittal_copy(root: Path, case_id: str, copy_id: str) -> None:
    """Store a copy of a case with its voxels in sagittal (PSL) order: the same world content, another voxel order."""
    to_psl = Reorientation((2, 0, 1), (False, False, False))  # from an LPS-stored case
    files = [(root / "labelsTr" / f"{case_id}.nii.gz", root / "labelsTr" / f"{copy_id}.nii.gz")]
    files += [(root / "imagesTr" / f"{case_id}_{c:04d}.nii.gz", root / "imagesTr" / f"{copy_id}_{c:04d}.nii.gz")
              for c in range(2)]
    for src, dst in files:
        arr, geo = read_image(src)
        write_image(dst, to_psl.apply(arr), to_psl.geometry(geo))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": meta["numTraining"] + 1}))


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """brain-ms (3 cases and a sagittal copy of case 1), planned and preprocessed with --reorient."""
    base = tmp_path_factory.mktemp("reorient")
    roots = {k: base / k for k in ("raw", "preprocessed")}
    mp = pytest.MonkeyPatch()
    for kind, path in roots.items():
        path.mkdir()
        mp.setenv(f"XTLUNET_{kind}", str(path))
        mp.delenv(f"nnUNet_{kind}", raising=False)
    try:
        assert main(["-q", "example", "brain-ms", "--cases", "3"]) == 0
        add_sagittal_copy(roots["raw"] / BRAIN, "brainms_0001", "brainms_0009")
        assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--gpu-memory-gb", "0.25",
                     "--reorient"]) == 0
        yield roots
    finally:
        mp.undo()


def brain_plans(brain: dict[str, Path]) -> Plans:
    """The plans written by the fixture."""
    return Plans.load(brain["preprocessed"] / BRAIN / "xtlunetPlans.json")


def case_props(brain: dict[str, Path]) -> dict[str, dict]:
    """The preprocessed properties of every case, by id."""
    folder = brain["preprocessed"] / BRAIN / "xtlunetPlans_3d_fullres"
    return {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("brainms_*.json"))}


@pytest.mark.parametrize("name", sorted(STORAGE))
def test_round_trip_is_exact(brain, name):
    seg_ras = random_labels(SHAPE)
    lc = synthetic_case(name, seg_ras)
    r = closest_ras(lc.geometry)
    order = [2, 0, 1]
    forward = r.apply(lc.seg).transpose(order)
    assert np.array_equal(r.revert(forward.transpose(np.argsort(order))), lc.seg)
    assert np.array_equal(r.revert(r.apply(lc.data, lead=1), lead=1), lc.data)
    # the same through the real preprocessing and export path (no resampling, so every step is exact)
    plans = unresampled(brain_plans(brain), lc, order)
    _, seg, props = preprocess_loaded(lc, plans, plans.configuration("3d_fullres"), [], [1])
    assert props["reorientation"]["to"] == "RAS" and props["geometry"] == lc.geometry.to_json()
    back = probabilities_to_labels(revert_preprocessing(one_hot(seg), props, plans), plans)
    assert back.dtype == np.uint8 and np.array_equal(back, lc.seg)


def test_reoriented_axes_agree_in_anatomical_direction():
    seg_ras = random_labels(SHAPE)
    marker = centred_grid(RAS).index_to_world([15, 6, 21])  # a voxel centre superior, posterior, right of the middle
    found = {}
    for name in STORAGE:
        lc = synthetic_case(name, seg_ras)
        assert lc.geometry.axis_codes() == {"oblique": "PSL"}.get(name, name)
        lc.seg[:] = 0
        lc.seg[tuple(np.round(lc.geometry.world_to_index(marker)).astype(int))] = 9
        out = reoriented(lc)
        assert out.geometry.axis_codes() == "RAS" and out.data.shape[1:] == SHAPE
        assert out.input_geometry() == lc.geometry
        found[name] = np.argwhere(out.seg == 9)[0]
        assert np.allclose(out.geometry.index_to_world(found[name]), marker, atol=1.5)
        if name != "oblique":  # the same box in another voxel order: the same array after reorientation
            assert np.array_equal(reoriented(synthetic_case(name, seg_ras)).seg, seg_ras)
            assert out.geometry.mismatch(centred_grid(RAS), rtol=1e-9, atol=1e-9) == []
    mid = (np.asarray(SHAPE) - 1) / 2
    assert all(np.array_equal(found[n], found["RAS"]) for n in ("LPS", "PSL"))
    # turned by 20°: same side of the centre on every axis, within the turn's displacement
    assert np.array_equal(np.sign(found["oblique"] - mid), np.sign(found["RAS"] - mid))
    assert np.abs(found["oblique"] - found["RAS"]).max() <= 4


def test_oblique_direction_keeps_its_obliquity():
    out = reoriented(synthetic_case("oblique", random_labels(SHAPE)))
    assert np.allclose(out.geometry.direction_matrix(), tilt() @ RAS, atol=1e-12)
    assert out.geometry.spacing == SPACING


def test_findings_land_on_their_voxel(brain):
    plans = brain_plans(brain)
    for name in ("PSL", "oblique"):
        seg_ras = np.zeros(SHAPE, np.int16)
        seg_ras[12:15, 4:8, 20:25] = 1
        lc = synthetic_case(name, seg_ras)
        lc.data[:] = np.where(lc.data == 0, 1.0, lc.data)  # no crop
        centre = reoriented(lc).geometry.index_to_world([13, 5.5, 22])
        finding = Finding(lc.case_id, "f1", "p1", tuple(float(v) for v in centre), 1)
        _, seg, props = preprocess_loaded(lc, plans, plans.configuration("3d_fullres"), [finding], [1])
        assert props["separate_axis"] is not None or props["shape_after_resample"] != props["shape_after_crop"]
        index = np.round(props["findings"][0]["index"]).astype(int)
        assert seg[tuple(index)] == 1, (name, index)


def test_plan_records_reorient_and_all_cases_share_one_orientation(brain):
    plans = brain_plans(brain)
    assert plans.reorient and "reoriented to RAS+" in _summary(plans)
    fp = Fingerprint.load(brain["preprocessed"] / BRAIN / "fingerprint.json")
    assert fp.reoriented and {c.orientation for c in fp.cases} >= {"LPS", "RAS", "PSL"}
    props = case_props(brain)
    assert sorted(props) == ["brainms_0001", "brainms_0002", "brainms_0003", "brainms_0009"]
    for case_id, p in props.items():
        d = Geometry.from_json(p["reorientation"]["geometry"]).direction_matrix()
        assert np.argmax(np.abs(d), axis=0).tolist() == [0, 1, 2], case_id  # index x, y, z along world x, y, z
        assert np.sign(d[[0, 1, 2], [0, 1, 2]]).tolist() == [-1, -1, 1], case_id  # pointing R, A, S
        assert p["reorientation"]["to"] == "RAS" and p["preprocessing_key"] == \
            plans.configuration("3d_fullres").preprocessing_key(True)
    assert props["brainms_0009"]["reorientation"]["from"] == "PSL"
    # the sagittal copy of case 1 gives the very same arrays
    folder = brain["preprocessed"] / BRAIN / "xtlunetPlans_3d_fullres"
    for suffix in (".npy", "_seg.npy"):
        assert np.array_equal(np.load(folder / f"brainms_0001{suffix}"), np.load(folder / f"brainms_0009{suffix}"))


def test_export_gives_the_input_geometry_exactly(brain, tmp_path):
    plans, raw = brain_plans(brain), brain["raw"] / BRAIN
    folder = brain["preprocessed"] / BRAIN / "xtlunetPlans_3d_fullres"
    spec = DatasetSpec.load(raw)
    for case in spec.cases("Tr"):
        props = case_props(brain)[case.case_id]
        truth, truth_geo = read_image(case.label_file)
        out = tmp_path / f"{case.case_id}.nii.gz"
        labels = export_prediction(one_hot(np.load(folder / f"{case.case_id}_seg.npy")), props, plans, out)
        assert read_header(out) == read_header(case.label_file) and labels.shape == truth.shape
        overlap = 2 * ((labels == 1) & (truth == 1)).sum() / ((labels == 1).sum() + (truth == 1).sum())
        assert overlap > 0.75, (case.case_id, overlap)  # 2–5 mm lesions resampled to ~3.3 mm slices and back
        # without resampling, the whole way there and back is exact
        lc = load_case(case, spec, 3)
        exact = unresampled(plans, lc, plans.transpose_forward)
        _, seg, props = preprocess_loaded(lc, exact, exact.configuration("3d_fullres"), [], [1])
        labels = export_prediction(one_hot(seg), props, exact, out)
        assert np.array_equal(labels, truth) and np.array_equal(read_image(out)[0], truth)


def test_mismatched_reorientation_is_refused(brain):
    plans = brain_plans(brain)
    props = case_props(brain)["brainms_0001"]
    shape = props["shape_after_resample"]
    with pytest.raises(XtlunetError, match="with reorientation"):
        revert_preprocessing(np.ones((2, *shape), np.float32), props, dataclasses.replace(plans, reorient=False))
    with pytest.raises(XtlunetError, match="without reorientation"):
        revert_preprocessing(np.ones((2, *shape), np.float32), {**props, "reorientation": None}, plans)


def test_reorient_is_part_of_identity_key_and_fingerprint(brain):
    plans = brain_plans(brain)
    off = dataclasses.replace(plans, reorient=False)
    conf = plans.configuration("3d_fullres")
    assert plans.identity() != off.identity() and conf.preprocessing_key(True) != conf.preprocessing_key()
    legacy = off.to_json()
    del legacy["reorient"]  # plans written before the option existed load as reorient=False, same identity
    assert Plans.from_json(legacy).identity() == off.identity() and not Plans.from_json(legacy).reorient
    assert Plans.from_json(plans.to_json()).reorient
    fp = Fingerprint.load(brain["preprocessed"] / BRAIN / "fingerprint.json")
    spec = DatasetSpec.load(brain["raw"] / BRAIN)
    assert fp.is_current(spec, reorient=True) and not fp.is_current(spec, reorient=False)


def test_2d_dataset_refuses_reorient(examples, capsys):
    assert main(["plan-and-preprocess", "-d", "503", "--reorient", "--gpu-memory-gb", "0.05"]) == 2
    assert "--reorient applies to 3D datasets" in capsys.readouterr().err
    assert not (examples["preprocessed"] / "Dataset503_Mammo" / "xtlunetPlans.json").exists()


def _summary(plans: Plans) -> str:
    """The printed plans table."""
    from xtlunet.plan_and_preprocess import plans_summary

    return plans_summary(plans)
