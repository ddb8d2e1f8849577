"""Built-in example datasets: format, geometry, content signals, determinism and clean re-runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from xtlunet.dataset.examples import EXAMPLES, Example, make_example, mammo, prostate
from xtlunet.dataset.findings import read_findings
from xtlunet.dataset.io import read_image
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError

NAMES = ("brain-ms", "prostate", "mammo")


@pytest.fixture
def raw(example_cache: Path) -> Path:
    """The session's raw root with small versions of the three examples (seed 0, see conftest.py)."""
    return example_cache


def load(raw: Path, name: str) -> DatasetSpec:
    """The parsed spec of an example written into `raw`."""
    return DatasetSpec.load(raw / EXAMPLES[name].folder)


def arrays(folder: Path) -> dict[str, np.ndarray]:
    """Every image array under a dataset folder, keyed by relative path."""
    return {str(p.relative_to(folder)): read_image(p)[0] for p in sorted(folder.rglob("*"))
            if p.name.endswith((".nii.gz", ".png"))}


@pytest.mark.parametrize("name", NAMES)
def test_every_example_loads_with_all_channels(raw: Path, name: str) -> None:
    spec = load(raw, name)
    assert spec.name == EXAMPLES[name].folder
    assert spec.raw["reference"] == "synthetic" and "synthetic" in spec.raw["description"].lower()
    cases = spec.cases("Tr")
    assert spec.num_training == len(cases) >= 3
    ndim = 2 if name == "mammo" else 3
    for case in cases:
        for f in case.image_files:
            arr, geom = read_image(f, expected_ndim=ndim)
            assert arr.shape == geom.shape and arr.max() > 0
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "temporary folders were left behind"


def test_registry_names_and_folders() -> None:
    assert {n: e.folder for n, e in EXAMPLES.items()} == {
        "brain-ms": "Dataset501_BrainMS", "prostate": "Dataset502_Prostate", "mammo": "Dataset503_Mammo"}


def test_default_sizes() -> None:
    """Defaults without writing: 10 + 3 brains, 24 prostate studies of 12 patients with ≥ 60 findings, 48 mammograms."""
    assert [EXAMPLES[n].default_cases for n in NAMES] == [10, 24, 48]
    plan = prostate.case_plan(24)
    assert len({p for p, _ in plan}) == 12 and sum(prostate.LESIONS[p % 4] for p, _ in plan) >= 60
    assert sum(mammo.patient_traits(0, p).mass for p in range(24)) == 12


def test_brain_labels_share_geometry_and_mark_lesions(raw: Path) -> None:
    spec = load(raw, "brain-ms")
    assert spec.channel_names == {0: "FLAIR", 1: "T1"} and spec.labels == {"background": 0, "lesion": 1}
    test_cases = spec.cases("Ts")
    assert len(test_cases) == 3
    for case in spec.cases("Tr") + test_cases:
        label_file = case.label_file or spec.root / "labelsTs" / f"{case.case_id}.nii.gz"
        label, lgeom = read_image(label_file)
        (flair, g0), (t1, g1) = (read_image(f) for f in case.image_files)
        assert g0 == g1 == lgeom, case.case_id
        assert set(np.unique(label)) <= set(spec.label_values()) and label.sum() > 0, case.case_id
        head = flair > 0
        assert 0.15 < head.mean() < 0.9 and np.all(flair[~head] == 0)
        lesion = label > 0
        assert flair[lesion].mean() > 1.5 * np.median(flair[head & ~lesion])
        assert t1[lesion].mean() < np.percentile(t1[head], 75)


def test_brain_orientation_origin_and_spacing_vary(raw: Path) -> None:
    spec = load(raw, "brain-ms")
    geoms = [read_image(c.image_files[0])[1] for c in spec.cases("Tr") + spec.cases("Ts")]
    dirs = [np.asarray(g.direction).reshape(3, 3) for g in geoms]
    assert any(np.abs(d - d * np.eye(3)).max() > 0.02 for d in dirs), "no oblique case"
    assert any(np.allclose(d, np.diag([-1, -1, 1]), atol=1e-6) for d in dirs), "no RAS-stored case"
    assert any(np.allclose(d, np.eye(3), atol=1e-6) for d in dirs)
    assert len({tuple(np.round(g.origin, 1)) for g in geoms}) == len(geoms)
    train = geoms[:spec.num_training]
    ratios = [g.spacing[0] / min(g.spacing[1:]) for g in train]
    assert np.median([g.spacing[0] for g in train]) > 3 * np.median([g.spacing[1] for g in train])
    assert max(ratios) > 3 and min(ratios) < 1.6


def test_brain_heads_agree_in_world_space(raw: Path) -> None:
    """Flipped and oblique cases store the same anatomy: in world space every head is longer front-to-back (y)."""
    spec = load(raw, "brain-ms")
    for case in spec.cases("Tr") + spec.cases("Ts"):
        flair, geom = read_image(case.image_files[0])
        world = np.array([geom.index_to_world(i) for i in np.argwhere(flair > 0)[::7]])
        spread = world.std(axis=0)
        assert spread[1] > 1.04 * spread[0], (case.case_id, spread)
        lesion_file = case.label_file or spec.root / "labelsTs" / f"{case.case_id}.nii.gz"
        centre = geom.index_to_world(np.argwhere(read_image(lesion_file)[0] > 0).mean(axis=0))
        assert np.linalg.norm((centre - world.mean(axis=0))[:2]) < 1.2 * spread[0]


def findings(raw: Path) -> tuple[DatasetSpec, list]:
    """The prostate spec and its parsed findings."""
    spec = load(raw, "prostate")
    return spec, read_findings(spec.findings_path, spec.classes)


def test_prostate_spec_grids_and_grouping(raw: Path) -> None:
    spec, rows = findings(raw)
    assert spec.is_classification and spec.classes == {"benign": 0, "significant": 1}
    assert spec.channel_names == {0: "T2", 1: "ADC", 2: "DWI"} and not (spec.root / "labelsTr").exists()
    for case in spec.cases("Tr"):
        (_, t2), (_, adc), (_, dwi) = (read_image(f) for f in case.image_files)
        assert adc == dwi and not t2.same_grid(adc)
        assert adc.spacing[1] > 2 * t2.spacing[1] and t2.spacing[0] > 3 * t2.spacing[1]
    per_case: dict[str, int] = {}
    patients: dict[str, set[str]] = {}
    for f in rows:
        per_case[f.case_id] = per_case.get(f.case_id, 0) + 1
        patients.setdefault(f.patient_id, set()).add(f.case_id)
    assert sorted(per_case) == [c.case_id for c in spec.cases("Tr")]
    assert all(2 <= n <= 4 for n in per_case.values())
    assert any(len(c) >= 2 for c in patients.values()) and len(patients) < len(per_case)
    assert 0.35 <= np.mean([f.label for f in rows]) <= 0.65


def test_prostate_findings_lie_on_lesions_and_adc_separates_classes(raw: Path) -> None:
    spec, rows = findings(raw)
    images = {c.case_id: [read_image(f) for f in c.image_files] for c in spec.cases("Tr")}
    adc_at = {0: [], 1: []}
    for f in rows:
        (t2, g_t2), (adc, g_adc), _ = images[f.case_id]
        i_t2, i_adc = g_t2.world_to_index(f.position), g_adc.world_to_index(f.position)
        assert g_t2.contains_index(i_t2, margin=-1.0) and g_adc.contains_index(i_adc, margin=-1.0), f.key
        z, y, x = np.round(i_t2).astype(int)
        zz, yy, xx = np.indices(t2.shape)
        dist = np.sqrt(sum(((a - b) * s) ** 2 for a, b, s in zip((zz, yy, xx), (z, y, x), g_t2.spacing)))
        surroundings = np.percentile(t2[dist < 8.0], 75)
        assert t2[z, y - 1:y + 2, x - 1:x + 2].mean() < 0.8 * surroundings, f"{f.key} is not on a dark T2 lesion"
        adc_at[f.label].append(adc[tuple(np.round(i_adc).astype(int))])
    assert np.mean(adc_at[1]) < np.mean(adc_at[0])


def test_mammo_png_16bit_masks_and_labels(raw: Path) -> None:
    spec = load(raw, "mammo")
    assert spec.file_ending == ".png" and spec.is_classification
    rows = {f.case_id: f for f in read_findings(spec.findings_path, spec.classes)}
    assert all(f.position is None for f in rows.values())
    views: dict[str, int] = {}
    for case in spec.cases("Tr"):
        img_file = case.image_files[0]
        assert sitk.ReadImage(str(img_file)).GetPixelID() == sitk.sitkUInt16
        img, geom = read_image(img_file, expected_ndim=2)
        mask, mgeom = read_image(spec.root / "labelsTr" / f"{case.case_id}.png", expected_ndim=2)
        assert img.dtype == np.uint16 and img.max() > 255 and mask.shape == img.shape
        assert set(np.unique(mask)) <= {0, 1} and (img == 0).mean() > 0.05
        if rows[case.case_id].label == 1:
            breast = (img > 0) & (mask == 0)
            assert mask.sum() > 10 and img[mask > 0].mean() > np.median(img[breast])
        else:
            assert mask.sum() == 0
        views[rows[case.case_id].patient_id] = views.get(rows[case.case_id].patient_id, 0) + 1
    assert set(list(views.values())[:-1]) == {2}
    assert 0.25 <= np.mean([f.label for f in rows.values()]) <= 0.75


@pytest.mark.parametrize("name,n", [("brain-ms", 1), ("prostate", 1), ("mammo", 2)])
def test_deterministic_per_seed(tmp_path: Path, name: str, n: int) -> None:
    a = arrays(make_example(name, tmp_path / "a", cases=n, seed=3))
    b = arrays(make_example(name, tmp_path / "b", cases=n, seed=3))
    c = arrays(make_example(name, tmp_path / "c", cases=n, seed=4))
    assert a.keys() == b.keys() == c.keys()
    assert all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a if "images" in k)
    folder = EXAMPLES[name].folder
    if name == "prostate":
        csv_a, csv_b = (tmp_path / run / folder / "findings.csv" for run in ("a", "b"))
        assert csv_a.read_bytes() == csv_b.read_bytes()


def test_fewer_cases_are_a_prefix_of_more(raw: Path, tmp_path: Path) -> None:
    small = make_example("prostate", tmp_path, cases=2)
    for f in sorted((small / "imagesTr").iterdir()):
        assert np.array_equal(read_image(f)[0], read_image(raw / small.name / "imagesTr" / f.name)[0])


def test_rerun_replaces_cleanly_and_failure_keeps_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_example("mammo", tmp_path, cases=2)
    (first / "stray.txt").write_text("old")
    again = make_example("mammo", tmp_path, cases=3)
    assert again == first and not (again / "stray.txt").exists()
    assert json.loads((again / "dataset.json").read_text())["numTraining"] == 3
    assert len(list((again / "imagesTr").iterdir())) == 3

    def broken(root: Path, cases: int, seed: int) -> None:
        (root / "imagesTr").mkdir()
        (root / "imagesTr" / "half.png").write_bytes(b"")
        raise RuntimeError("interrupted")

    monkeypatch.setitem(EXAMPLES, "mammo", Example("mammo", first.name, 1, "broken", broken))
    with pytest.raises(RuntimeError):
        make_example("mammo", tmp_path)
    assert len(list((first / "imagesTr").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(XtlunetError, match="did you mean 'prostate'"):
        make_example("prostat", Path("/nonexistent"))
    with pytest.raises(XtlunetError, match="cases"):
        make_example("mammo", Path("/nonexistent"), cases=0)
    with pytest.raises(XtlunetError, match="seed"):
        make_example("mammo", Path("/nonexistent"), seed=-1)
    with pytest.raises(XtlunetError, match="the prostate example has no test set"):
        make_example("prostate", Path("/nonexistent"), test_cases=3)
    with pytest.raises(XtlunetError, match="--test-cases must be a positive whole number"):
        make_example("brain-ms", Path("/nonexistent"), test_cases=0)


def test_brain_ms_test_set_grows_without_changing_its_first_cases(tmp_path: Path) -> None:
    small = make_example("brain-ms", tmp_path / "a", cases=1)
    large = make_example("brain-ms", tmp_path / "b", cases=1, test_cases=5)
    names = sorted(p.name for p in (large / "imagesTs").iterdir())
    assert len(names) == 10 and len(list((large / "labelsTs").iterdir())) == 5
    assert len(list((small / "imagesTs").iterdir())) == 6
    for f in sorted((small / "imagesTs").iterdir()):
        assert np.array_equal(read_image(f)[0], read_image(large / "imagesTs" / f.name)[0])
    spacings = {round(read_image(large / "labelsTs" / f"brainms_{i:04d}.nii.gz")[1].spacing[0], 1) for i in (5, 6)}
    assert len(spacings) == 2        # test cases 4 and 5 take new slice spacings from the training mix
