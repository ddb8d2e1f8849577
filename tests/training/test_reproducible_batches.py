"""The same seed gives the same augmented batches, whatever state Python's `random` is in (batchgenerators draws
blur, noise, gamma, brightness and contrast from it), in this process and in augmentation worker processes."""
from __future__ import annotations

import random

import numpy as np
import pytest

from xtlunet.plans import ConfigurationPlan
from xtlunet.training.augmentation import augmentation_config
from xtlunet.training.data import CaseArrays, SegmentationBatches
from xtlunet.training.tasks.common import batch_stream, extract_size
from xtlunet.utils.device import seed_everything

PATCH = [16, 24, 24]


def _conf() -> ConfigurationPlan:
    """A 3D segmentation configuration with just what the batch pipeline reads."""
    return ConfigurationPlan(name="c", task="segmentation", dim=3, spacing=[1.0, 1.0, 1.0], patch_size=list(PATCH),
                             batch_size=2, median_shape=[24, 32, 32], normalization=["zscore"],
                             use_mask_for_norm=[False], architecture={}, num_outputs=2, data_identifier="x")


def _cases() -> list[CaseArrays]:
    """Three cases of smooth random intensities with a foreground blob each."""
    rng = np.random.default_rng(3)
    cases = []
    for k in range(3):
        data = rng.normal(size=(1, 24, 32, 32)).astype(np.float32).cumsum(axis=3) / 8
        seg = np.zeros((24, 32, 32), np.int16)
        seg[8 + k:14 + k, 10:18, 12:20] = 1
        cases.append(CaseArrays(f"c{k}", data, seg, {1: np.argwhere(seg == 1)}))
    return cases


def _batches(seed: int, python_state: int, workers: int, n: int = 4) -> list[np.ndarray]:
    """n augmented batches (data and seg) of a stream seeded as training seeds it, with Python's `random` put in
    another state between the seeding and the stream (as an import or a library call may do)."""
    conf = _conf()
    aug = augmentation_config(conf)
    seed_everything(seed)
    random.seed(python_state)
    loader = SegmentationBatches(_cases(), conf.patch_size, 2, extract_size(conf, aug))
    stream = batch_stream(loader, conf, aug, workers, seed, with_seg=True)
    try:
        out = []
        for _ in range(n):
            b = next(stream)
            out += [np.array(b["data"]), np.array(b["seg"])]
        return out
    finally:
        if hasattr(stream, "_finish"):
            stream._finish()


def _equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Whether two lists of arrays are equal bit for bit."""
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_same_seed_same_batches_whatever_pythons_random_state():
    first = _batches(7, python_state=1, workers=0)
    assert _equal(first, _batches(7, python_state=2, workers=0))
    assert not _equal(first, _batches(8, python_state=1, workers=0))       # the seed does matter


def test_python_random_is_drawn_from_and_reseeded_per_batch():
    first = _batches(7, python_state=1, workers=0, n=2)
    after = random.random()
    _batches(7, python_state=99, workers=0, n=2)
    assert random.random() == after      # the second stream left Python's random exactly where the first did


@pytest.mark.slow
def test_same_seed_same_batches_in_worker_processes():
    first = _batches(11, python_state=1, workers=2)
    assert _equal(first, _batches(11, python_state=2, workers=2))
    # the two workers do not repeat each other's draws (before, they shared Python's state by forking)
    assert not np.array_equal(first[0], first[2])
