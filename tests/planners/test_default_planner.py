"""Whole plans from hand-made fingerprints: nnU-Net's stage counts, target spacing, kernels and batch caps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xtlunet.dataset.spec import DatasetSpec
from xtlunet.fingerprint import CaseFingerprint, Fingerprint
from xtlunet.planners import rules
from xtlunet.planners.default import DefaultPlanner
from xtlunet.planners.xtl import XTLPlanner


def fake_dataset(spacing: list[float], shape: list[int], cases: int, channels: tuple[str, ...] = ("T2",),
                 labels: int = 3) -> tuple[DatasetSpec, Fingerprint]:
    """A segmentation dataset whose cases all have one spacing and one (cropped) shape; no files."""
    name = "Dataset900_Fake"
    spec = DatasetSpec(root=Path("/nonexistent") / name, channel_names=dict(enumerate(channels)),
                       labels={f"label{i}": i for i in range(labels)}, num_training=cases, file_ending=".nii.gz")
    fp = Fingerprint(dataset_name=name, task="segmentation", dim=len(shape),
                     channel_names={str(i): c for i, c in enumerate(channels)},
                     cases=[CaseFingerprint(f"case_{i:03d}", list(spacing), list(shape), list(shape), [])
                            for i in range(cases)], intensity={})
    return spec, fp


def test_prostate_like_plan_has_nnunet_stage_count():
    # 3.6 x 0.62 x 0.62 mm, 16 x 256 x 288 voxels: nnU-Net pools in plane alone twice, then all axes twice
    # (16 -> 4 slices), then in plane alone twice more: 7 stages, in-plane bottleneck 4 x 5 (patch 320 wide).
    # Capped at 6 stages (before) the bottleneck stayed at 4 x 8 x 9.
    conf = DefaultPlanner(*fake_dataset([3.6, 0.62, 0.62], [16, 256, 288], 32), gpu_memory_gb=8).plan(["3d_fullres"])
    full = conf.configuration("3d_fullres")
    arch = full.network()
    assert full.spacing == pytest.approx([3.6, 0.62, 0.62])
    assert arch.num_stages == 7 > 6
    assert arch.strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert arch.kernel_sizes == [[1, 3, 3], [1, 3, 3]] + [[3, 3, 3]] * 5
    bottleneck = [p // t for p, t in zip(full.patch_size, arch.total_stride())]
    assert max(bottleneck[1:]) <= 8 and min(bottleneck) >= rules.MIN_EDGE
    assert full.patch_size[0] == 16 and full.batch_size >= 2


def test_plans_stop_pooling_only_at_the_min_edge():
    # whatever the depth, no plan ends with an axis that could still pool (nnU-Net has no stage cap)
    for spacing, shape in (([1.0, 1.0, 1.0], [160, 160, 160]), ([3.0, 0.5, 0.5], [40, 512, 512]),
                           ([1.0, 1.0], [2048, 2048])):
        strides, _ = rules.pooling_plan(spacing, shape, DefaultPlanner.max_stages[len(spacing)])
        ends = [s / t for s, t in zip(shape, rules.total_stride(strides))]
        assert max(ends) < 2 * rules.MIN_EDGE or sum(e >= 2 * rules.MIN_EDGE for e in ends) == 1, (shape, ends)
    assert len(rules.pooling_plan([1.0, 1.0], [2048, 2048], None)[0]) == 10   # 2048 -> 4: nine poolings


def test_brain_ms_like_target_spacing_keeps_the_thick_slices():
    # the brain-ms example: 3.3 mm slices, but 19 of them against 60 x 50 in plane -> nnU-Net keeps the median
    spacings = [[3.4, 1.0, 1.0], [1.0, 1.0, 1.0], [3.3, 1.0, 1.0], [3.5, 1.0, 1.0], [3.2, 1.0, 1.0]]
    shapes = [[19, 58, 47], [40, 61, 51], [19, 65, 54], [18, 58, 49], [20, 64, 51]]
    spec, fp = fake_dataset([1.0] * 3, [1] * 3, 5)
    fp.cases = [CaseFingerprint(f"c{i}", s, sh, sh, []) for i, (s, sh) in enumerate(zip(spacings, shapes))]
    full = DefaultPlanner(spec, fp, gpu_memory_gb=8).plan(["3d_fullres"]).configuration("3d_fullres")
    assert full.spacing == pytest.approx([3.3, 1.0, 1.0])
    assert full.network().kernel_sizes[0] == [1, 3, 3]


def test_2d_batch_not_capped_at_64_but_by_memory_and_5_percent():
    # BrainTumour-like: 484 cases of 138 x 169 x 138 at 1 mm, 4 channels; nnU-Net plans 2D batches of ~105
    planner = DefaultPlanner(*fake_dataset([1.0, 1.0, 1.0], [138, 169, 138], 484,
                                           ("FLAIR", "T1w", "t1gd", "T2w"), labels=4), gpu_memory_gb=8)
    two_d = planner.plan(["2d"]).configuration("2d")
    arch = two_d.network()
    cap = rules.batch_size_cap(two_d.patch_size, two_d.median_shape, 484 * 138)
    assert 64 < two_d.batch_size < cap
    memory = [planner.memory(arch, two_d.patch_size, b, "segmentation") for b in (two_d.batch_size, two_d.batch_size + 1)]
    assert memory[0] <= planner.budget < memory[1]          # the largest batch that fits


def test_batch_is_capped_by_5_percent_of_the_dataset():
    planner = DefaultPlanner(*fake_dataset([1.0, 1.0, 1.0], [40, 56, 40], 20), gpu_memory_gb=8)
    full = planner.plan(["3d_fullres"]).configuration("3d_fullres")
    assert full.batch_size == rules.batch_size_cap(full.patch_size, full.median_shape, 20)
    assert planner.memory(full.network(), full.patch_size, full.batch_size + 1, "segmentation") < planner.budget


def test_smallest_budget_still_plans_every_example_shape():
    # tiny budgets (the test suite's) still fit a patch: parameters dominate, the patch shrinks to its floor
    for spacing, shape in (([3.3, 1.0, 1.0], [19, 60, 50]), ([3.0, 0.76, 0.76], [20, 82, 96])):
        full = DefaultPlanner(*fake_dataset(spacing, shape, 5), gpu_memory_gb=0.03).plan(["3d_fullres"])
        assert full.configuration("3d_fullres").memory_estimate_gb <= 0.03


def test_xtl_planner_keeps_its_depth_kernels_and_source_stages():
    # 6 mm slices: the stem's in-plane stride gives 6 vs 2 mm -> depth kernel 1 (exact 2D copy); from the max-pool
    # on (6 vs 4 mm) the kernels are cubic and stay cubic
    planner = XTLPlanner(*fake_dataset([6.0, 1.0, 1.0], [12, 120, 100], 5), gpu_memory_gb=1, pretrained="resnet18")
    conf = planner.plan(["3d_fullres"]).configuration("3d_fullres")
    arch = conf.network()
    assert arch.family == "resnet18" and arch.num_stages == planner.source.num_stages
    assert [k[1:] for k in arch.kernel_sizes] == [k[-2:] for k in planner.source.kernel_sizes]
    assert arch.kernel_sizes == [[1, 7, 7]] + [[3, 3, 3]] * 4
    assert conf.memory_estimate_gb <= 1 and np.all(np.array(conf.patch_size) % arch.total_stride() == 0)
