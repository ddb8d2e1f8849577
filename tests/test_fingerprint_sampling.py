"""Fingerprint intensities: 10⁸/N foreground draws per case with replacement (as nnU-Net v2), so every case weighs
the same in the CT percentiles, mean and std whatever its foreground size; deterministic per seed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.fingerprint import (FOREGROUND_SAMPLES, compute_fingerprint, draw_with_replacement, intensity_stats,
                                 samples_per_case)

SHAPE = (24, 24, 24)
# case id → (foreground voxels, intensity level)
CASES = {"small_000": (10, 100.0), "large_001": (10_000, 200.0)}


def write_case(root: Path, case_id: str, voxels: int, level: float, rng: np.random.Generator) -> None:
    """A CT-like case: tissue at 50 everywhere (no crop), `voxels` foreground voxels at level ± 1."""
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1, 0, 0, 0, 1), SHAPE)
    seg = np.zeros(np.prod(SHAPE), np.uint8)
    seg[:voxels] = 1
    seg = seg.reshape(SHAPE)
    image = np.where(seg > 0, level + rng.uniform(-1, 1, SHAPE), 50.0).astype(np.float32)
    write_image(root / "imagesTr" / f"{case_id}_0000.nii.gz", image, geo)
    write_image(root / "labelsTr" / f"{case_id}.nii.gz", seg, geo)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> DatasetSpec:
    """A two-case dataset: 10 foreground voxels near 100, 10,000 near 200."""
    root = tmp_path_factory.mktemp("raw") / "Dataset990_Sampling"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case_id, (voxels, level) in CASES.items():
        write_case(root, case_id, voxels, level, rng)
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return DatasetSpec.load(root)


def test_every_case_draws_the_same_number():
    k = samples_per_case(2)
    assert k == FOREGROUND_SAMPLES // 2 == 50_000_000
    for n in (10, 10_000):  # fewer voxels than draws: how often each voxel was drawn
        values, counts = draw_with_replacement(np.arange(n, dtype=np.float32), k, np.random.default_rng(0))
        assert counts.sum() == k and counts.min() >= 1 and values.size <= n
    assert counts.size > 9_990 and abs(counts.mean() - k / counts.size) < 1  # ≈ k/n draws per voxel
    values, counts = draw_with_replacement(np.arange(5000, dtype=np.float32), 1000, np.random.default_rng(0))
    assert values.size == 1000 and counts.sum() == 1000  # more voxels than draws: the draws themselves


def test_small_foreground_weighs_as_much_as_large(spec):
    fp = compute_fingerprint(spec, 3)
    stats = fp.intensity["0"]
    assert fp.samples_per_case == 50_000_000 and [c.case_id for c in fp.cases] == sorted(CASES)
    # by hand: half of the 10⁸ draws lie in 100 ± 1, half in 200 ± 1, so the median lies midway, the mean near 150
    assert 149.0 <= stats["median"] <= 151.0 and 149.0 <= stats["mean"] <= 151.0
    assert 99.0 <= stats["percentile_00_5"] <= 101.0 and 199.0 <= stats["percentile_99_5"] <= 201.0
    assert 49.0 <= stats["std"] <= 51.0
    # drawing in proportion to the foreground (10 vs 10,000 draws) would put the median at the large case's level
    proportional = np.r_[np.full(CASES["small_000"][0], 100.0), np.full(CASES["large_001"][0], 200.0)]
    assert np.median(proportional) == 200.0 and abs(np.mean(proportional) - 200.0) < 0.1


def test_fingerprint_is_deterministic_per_seed(spec):
    first = compute_fingerprint(spec, 3, seed=7).intensity
    assert compute_fingerprint(spec, 3, seed=7).intensity == first
    assert compute_fingerprint(spec, 3, num_workers=2, seed=7).intensity == first  # one generator per case
    assert compute_fingerprint(spec, 3, seed=8).intensity != first


@pytest.mark.parametrize("max_count", [1, 3, 10_000])
def test_weighted_statistics_equal_those_of_the_expanded_draws(max_count):
    rng = np.random.default_rng(max_count)
    values = rng.normal(40.0, 12.0, 5000).astype(np.float32)
    counts = rng.integers(1, max_count + 1, values.size).astype(np.int32)
    expanded = np.repeat(values, counts)
    got = intensity_stats(values, counts)
    p = np.percentile(expanded, [0.5, 50, 99.5])
    want = {"mean": expanded.mean(dtype=np.float64), "std": expanded.std(dtype=np.float64), "median": p[1],
            "min": expanded.min(), "max": expanded.max(), "percentile_00_5": p[0], "percentile_99_5": p[2]}
    assert got == pytest.approx({k: float(v) for k, v in want.items()}, rel=1e-6, abs=1e-9)
