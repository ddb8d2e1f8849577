"""Training batches from tiny synthetic preprocessed cases: shapes, oversampling, padding, class-balanced ROIs."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from xtlunet.errors import XtlunetError
from xtlunet.training.data import (CaseArrays, FindingRef, ROIBatches, SegmentationBatches, extraction_size,
                                   findings_of, load_case_arrays, num_augmentation_workers)


def _write_case(folder: Path, case_id: str, data: np.ndarray, seg: np.ndarray | None = None,
                findings: list[dict] | None = None) -> None:
    """Write CASE.npy, CASE_seg.npy and CASE.json as preprocessing does (class locations from seg)."""
    np.save(folder / f"{case_id}.npy", data.astype(np.float32))
    props: dict = {"case_id": case_id}
    if seg is not None:
        np.save(folder / f"{case_id}_seg.npy", seg.astype(np.int16))
        props["class_locations"] = {str(v): np.argwhere(seg == v).tolist() for v in np.unique(seg) if v > 0}
    if findings is not None:
        props["findings"] = findings
    (folder / f"{case_id}.json").write_text(json.dumps(props))


def _coordinate_image(shape: tuple[int, ...]) -> np.ndarray:
    """(ndim, *shape): channel i holds the voxel's i-th index + 1, so 0 only appears in padding."""
    return np.stack(np.meshgrid(*[np.arange(n) + 1.0 for n in shape], indexing="ij")).astype(np.float32)


def _small_lesion_case(tmp_path: Path, case_id: str = "c0") -> CaseArrays:
    """A 24^3 two-channel case with a 2^3 foreground cube (label 1) and a 1-voxel label 2."""
    rng = np.random.default_rng(0)
    seg = np.zeros((24, 24, 24), np.int16)
    seg[18:20, 3:5, 12:14] = 1
    seg[5, 20, 6] = 2
    data = rng.normal(size=(2, 24, 24, 24)) + 5
    _write_case(tmp_path, case_id, data, seg)
    return load_case_arrays(tmp_path, case_id)


def test_load_case_arrays_reads_arrays_props_and_locations(tmp_path):
    case = _small_lesion_case(tmp_path)
    assert case.case_id == "c0" and case.data.shape == (2, 24, 24, 24) and case.seg.shape == (24, 24, 24)
    assert isinstance(case.data, np.memmap)                     # memory-mapped, not read
    assert sorted(case.locations) == [1, 2]
    assert case.locations[1].shape == (8, 3) and case.locations[1].dtype == np.int64
    assert case.locations[2].tolist() == [[5, 20, 6]]
    assert {tuple(v) for v in case.locations[1]} == {(z, y, x) for z in (18, 19) for y in (3, 4) for x in (12, 13)}


def test_load_case_arrays_without_seg_and_with_empty_locations(tmp_path):
    np.save(tmp_path / "img.npy", np.ones((1, 4, 5, 6), np.float32))
    (tmp_path / "img.json").write_text(json.dumps({"class_locations": {"1": [], "2": [[1, 2, 3]]}}))
    case = load_case_arrays(tmp_path, "img")
    assert case.seg is None
    assert list(case.locations) == [2] and case.locations[2].tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("which", ["img", "seg"])
def test_truncated_array_is_an_error_naming_case_and_file(tmp_path, which):
    _write_case(tmp_path, "case_007", np.ones((1, 8, 8, 8)), np.zeros((8, 8, 8)))
    path = tmp_path / ("case_007.npy" if which == "img" else "case_007_seg.npy")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(XtlunetError) as info:
        load_case_arrays(tmp_path, "case_007")
    msg = str(info.value)
    assert "case_007" in msg and str(path) in msg
    assert info.value.path == str(path)


def test_segmentation_batch_shapes_3d(tmp_path):
    case = _small_lesion_case(tmp_path)
    np.random.seed(0)
    batch = SegmentationBatches([case], [8, 8, 8], 5, [12, 10, 9]).generate_train_batch()
    assert batch["data"].shape == (5, 2, 12, 10, 9) and batch["data"].dtype == np.float32
    assert batch["seg"].shape == (5, 1, 12, 10, 9) and batch["seg"].dtype == np.float32
    assert batch["keys"] == ["c0"] * 5


@pytest.mark.parametrize("batch_size, forced", [(2, 1), (3, 1), (6, 2), (9, 3)])
def test_last_third_of_every_batch_contains_foreground(tmp_path, batch_size, forced):
    case = _small_lesion_case(tmp_path)
    loader = SegmentationBatches([case], [8, 8, 8], batch_size, [8, 8, 8])
    assert loader.n_forced == forced                            # round(batch_size * 0.33)
    np.random.seed(1)
    random_hits = 0
    for _ in range(60):
        seg = next(loader)["seg"]
        for b in range(batch_size - forced, batch_size):
            assert (seg[b] > 0).any()
        random_hits += sum(int((seg[b] > 0).any()) for b in range(batch_size - forced))
    # unforced patches hit the tiny lesions rarely (a few percent), so forcing is what puts them there
    assert random_hits < 0.25 * 60 * (batch_size - forced)


def test_no_oversampling_when_disabled_and_no_crash_without_foreground(tmp_path):
    _write_case(tmp_path, "bg", np.ones((1, 10, 10, 10)), np.zeros((10, 10, 10)))
    case = load_case_arrays(tmp_path, "bg")
    assert case.locations == {}
    assert SegmentationBatches([case], [4, 4, 4], 4, [4, 4, 4], oversample=0).n_forced == 0
    np.random.seed(2)
    batch = SegmentationBatches([case], [4, 4, 4], 4, [4, 4, 4]).generate_train_batch()
    assert batch["seg"].shape == (4, 1, 4, 4, 4) and (batch["seg"] <= 0).all()


def test_padding_outside_the_image_is_zero_in_data_and_minus_one_in_seg(tmp_path):
    shape = (6, 5, 4)
    data = np.arange(1, 1 + 2 * 6 * 5 * 4, dtype=np.float32).reshape(2, *shape)     # never 0 inside
    seg = np.zeros(shape, np.int16)
    seg[2:4, 1:3, 1:3] = 1
    _write_case(tmp_path, "tiny", data, seg)
    case = load_case_arrays(tmp_path, "tiny")
    np.random.seed(3)
    for _ in range(10):
        batch = SegmentationBatches([case], [8, 8, 8], 3, [16, 16, 16]).generate_train_batch()
        for b in range(3):
            d, s = batch["data"][b], batch["seg"][b, 0]
            # the extract is more than twice the image, so the whole image is inside, the rest is padding
            inside = s >= 0
            assert inside.sum() == 6 * 5 * 4
            assert (s[~inside] == -1).all() and (d[:, ~inside] == 0).all()
            assert (d[:, inside] != 0).all()
            zs, ys, xs = np.nonzero(inside)
            box = (slice(zs.min(), zs.max() + 1), slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            np.testing.assert_array_equal(d[(slice(None),) + box], data)
            np.testing.assert_array_equal(s[box], seg)


def test_patch_content_is_the_image_around_the_centre(tmp_path):
    shape = (20, 20, 20)
    seg = np.zeros(shape, np.int16)
    seg[10, 11, 12] = 1
    _write_case(tmp_path, "coords", _coordinate_image(shape), seg)
    case = load_case_arrays(tmp_path, "coords")
    np.random.seed(4)
    batch = SegmentationBatches([case], [6, 6, 6], 1, [6, 6, 6]).generate_train_batch()   # the one sample is forced
    d = batch["data"][0]
    # centre voxel (10, 11, 12): the patch spans index - 3 .. index + 2 on every axis
    for axis, c in enumerate((10, 11, 12)):
        expected = np.arange(c - 3, c + 3) + 1.0
        line = np.moveaxis(d[axis], axis, 0)[:, 0, 0]
        np.testing.assert_array_equal(line, expected)
    assert batch["seg"][0, 0, 3, 3, 3] == 1 and batch["seg"][0].sum() == 1


def test_2d_configuration_on_3d_data_gives_2d_slices(tmp_path):
    shape = (12, 16, 16)
    data = np.broadcast_to((np.arange(12, dtype=np.float32) + 1)[None, :, None, None], (2, *shape))
    seg = np.zeros(shape, np.int16)
    seg[7, 8:10, 8:10] = 1
    _write_case(tmp_path, "vol", data, seg)
    case = load_case_arrays(tmp_path, "vol")
    loader = SegmentationBatches([case], [8, 8], 4, [10, 10])
    np.random.seed(5)
    slices = set()
    for _ in range(30):
        batch = next(loader)
        assert batch["data"].shape == (4, 2, 10, 10) and batch["seg"].shape == (4, 1, 10, 10)
        for b in range(4):
            values = np.unique(batch["data"][b])
            values = values[values != 0]
            assert len(values) == 1                     # one axial slice per sample
            slices.add(int(values[0]) - 1)
        assert np.unique(batch["data"][3][batch["data"][3] != 0]).tolist() == [8.0]   # forced: the lesion slice z=7
        assert (batch["seg"][3] == 1).sum() == 4
    assert len(slices) > 5                              # random samples come from many slices


@pytest.mark.parametrize("patch, min_scale, expected", [
    ([24, 32, 40], 1.0, [24, 32, 40]),
    ([24, 32, 40], 0.8, [30, 40, 50]),                   # / 0.8 exactly
    ([20, 30, 40], 0.85, [24, 36, 48]),                  # 23.5, 35.3, 47.1 rounded up
    ([30, 31], 0.9, [34, 35]),                           # 33.3, 34.4
])
def test_extraction_size_without_rotation_is_patch_over_min_scale_rounded_up(patch, min_scale, expected):
    assert extraction_size(patch, 0, min_scale, False) == expected


def test_extraction_size_with_rotation():
    # 30°: cos + sin = 1.366; 45°: sqrt(2); beyond 45° the bounding box does not grow further
    assert extraction_size([16, 32, 32], 30, 1.0, True) == [16, 44, 44]      # 43.7 up, depth unchanged
    assert extraction_size([16, 32, 32], 30, 1.0, False) == [22, 44, 44]     # 21.9 up
    assert extraction_size([16, 32, 32], 45, 1.0, True) == [16, 46, 46]      # 45.25 up
    assert extraction_size([16, 32, 32], 180, 1.0, True) == [16, 46, 46]
    assert extraction_size([16, 32, 32], 30, 0.5, True)[1:] == [88, 88]      # 87.4 up
    assert extraction_size([16, 32, 32], 30, 0.5, False) == [44, 88, 88]     # 43.7 up
    assert extraction_size([20, 10], 30, 1.0, True) == [28, 14]              # 2D: both axes rotate


def _roi_cases(tmp_path: Path) -> list[CaseArrays]:
    """Two 32^3 coordinate images; 18 findings of label 0 and 2 of label 1 (1:9), all in the interior."""
    rng = np.random.default_rng(7)
    cases = []
    for n, cid in enumerate(["p1", "p2"]):
        findings = [{"finding_id": f"f{i}", "label": int(n == 0 and i < 2),
                     "index": [float(v) for v in rng.uniform(12, 20, 3).round(2)]} for i in range(10)]
        _write_case(tmp_path, cid, _coordinate_image((32, 32, 32)), findings=findings)
        cases.append(load_case_arrays(tmp_path, cid))
    return cases


def test_findings_of_reads_positions_labels_and_ids(tmp_path):
    cases = _roi_cases(tmp_path)
    refs = findings_of(cases)
    assert len(refs) == 20 and sum(r.label == 1 for r in refs) == 2
    props = json.loads((tmp_path / "p2.json").read_text())["findings"]
    for r, f in zip(refs[10:], props):
        assert r.case is cases[1] and r.finding_id == f["finding_id"] and r.label == f["label"]
        np.testing.assert_array_equal(r.index, f["index"])


def test_findings_without_index_use_the_image_centre(tmp_path):
    findings = [{"finding_id": 3, "label": "1", "index": None}, {"finding_id": "b", "label": 0, "index": [1, 2, 3]}]
    _write_case(tmp_path, "whole", np.ones((1, 9, 16, 21)), findings=findings)
    _write_case(tmp_path, "none", np.ones((1, 4, 4, 4)))
    refs = findings_of([load_case_arrays(tmp_path, "whole"), load_case_arrays(tmp_path, "none")])
    assert len(refs) == 2
    np.testing.assert_array_equal(refs[0].index, [4.0, 7.5, 10.0])
    assert refs[0].label == 1 and refs[0].finding_id == "3"
    np.testing.assert_array_equal(refs[1].index, [1.0, 2.0, 3.0])
    assert isinstance(refs[0], FindingRef)


def test_roi_batches_are_class_balanced_centred_and_labelled(tmp_path):
    refs = findings_of(_roi_cases(tmp_path))
    by_key = {f"{r.case.case_id}/{r.finding_id}": r for r in refs}
    patch, jitter, extract = [20, 20, 20], 0.25, [8, 8, 8]
    loader = ROIBatches(refs, extract, 40, patch, jitter=jitter)
    np.random.seed(6)
    labels, shifts = [], []
    for _ in range(10):
        batch = next(loader)
        assert batch["data"].shape == (40, 3, 8, 8, 8) and batch["target"].shape == (40,)
        for b, key in enumerate(batch["keys"]):
            ref = by_key[key]
            assert batch["target"][b] == ref.label
            labels.append(int(batch["target"][b]))
            # the coordinate image gives the position of the patch centre voxel (index of lo + 4)
            centre = batch["data"][b][:, 4, 4, 4] - 1
            shift = centre - ref.index
            assert (np.abs(shift) <= jitter * np.asarray(patch) + 0.5 + 1e-6).all()
            shifts.append(shift)
    assert len(labels) == 400
    frac = np.mean(labels)
    assert 0.4 <= frac <= 0.6
    shifts = np.array(shifts)
    assert shifts.std(0).min() > 1.0                    # the jitter really moves the centre, on every axis


def test_roi_batches_single_class(tmp_path):
    _write_case(tmp_path, "one", _coordinate_image((16, 16, 16)),
                findings=[{"finding_id": "a", "label": 3, "index": [8, 8, 8]}])
    refs = findings_of([load_case_arrays(tmp_path, "one")])
    np.random.seed(8)
    batch = ROIBatches(refs, [6, 6, 6], 4, [6, 6, 6], jitter=0.0).generate_train_batch()
    assert batch["target"].tolist() == [3, 3, 3, 3] and batch["keys"] == ["one/a"] * 4
    # no jitter: the patch spans 8 - 3 .. 8 + 2 on every axis
    np.testing.assert_array_equal(batch["data"][0, 0, :, 0, 0], np.arange(5, 11) + 1.0)


def test_num_augmentation_workers_from_environment(monkeypatch):
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    monkeypatch.setenv("XTLUNET_n_proc_DA", "3")
    assert num_augmentation_workers("cuda") == 3 and num_augmentation_workers("cpu") == 3
    monkeypatch.setenv("XTLUNET_n_proc_DA", "0")
    assert num_augmentation_workers("cuda") == 0
    monkeypatch.setenv("XTLUNET_n_proc_DA", "-4")
    assert num_augmentation_workers("cuda") == 0
    monkeypatch.setenv("nnUNet_n_proc_DA", "5")
    monkeypatch.setenv("XTLUNET_n_proc_DA", "2")
    assert num_augmentation_workers("cpu") == 2                 # XTLUNET_ wins over nnUNet_
    monkeypatch.delenv("XTLUNET_n_proc_DA")
    assert num_augmentation_workers("cpu") == 5


@pytest.mark.parametrize("value", ["four", "2.5", "1e3"])
def test_num_augmentation_workers_rejects_a_non_number(monkeypatch, value):
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    monkeypatch.setenv("XTLUNET_n_proc_DA", value)
    with pytest.raises(XtlunetError, match="XTLUNET_n_proc_DA"):
        num_augmentation_workers("cuda")


@pytest.mark.parametrize("cpus, cuda, cpu", [(32, 8, 1), (6, 4, 1), (4, 2, 1), (2, 1, 0), (1, 1, 0), (None, 1, 0)])
def test_num_augmentation_workers_default_by_device(monkeypatch, cpus, cuda, cpu):
    monkeypatch.delenv("XTLUNET_n_proc_DA", raising=False)
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert num_augmentation_workers("cuda") == cuda
    assert num_augmentation_workers("cpu") == cpu
