"""Window starts: first 0, last image − patch, at most step · patch apart, full coverage."""
import math

import numpy as np
import pytest
import torch

from xtlunet.errors import XtlunetError
from xtlunet.inference import window_starts
from xtlunet.inference.sliding_window import pad_to_patch


@pytest.mark.parametrize("image, patch, step", [
    ((100, 37, 64), (32, 16, 64), 0.5), ((129, 20), (64, 7), 0.5), ((50,), (16,), 0.25), ((50,), (16,), 1.0),
    ((31, 33), (10, 10), 0.33),
])
def test_cover_first_last_and_step(image, patch, step):
    starts = window_starts(image, patch, step)
    assert len(starts) == len(image)
    for s, size, p in zip(starts, image, patch):
        assert s[0] == 0 and s[-1] == size - p
        gaps = np.diff(s)
        assert np.all(gaps > 0) or len(s) == 1
        assert np.all(gaps <= math.ceil(step * p))
        covered = np.zeros(size, bool)
        for start in s:
            covered[start:start + p] = True
        assert covered.all()


def test_number_of_windows_matches_nnunet():
    # nnU-Net: ceil((image − patch) / (patch · step)) + 1 windows per axis
    assert window_starts((100,), (32,), 0.5) == [[0, 14, 27, 41, 54, 68]]
    assert [len(s) for s in window_starts((160, 64), (64, 64), 0.5)] == [4, 1]


def test_image_equal_or_smaller_than_patch_gives_one_window():
    assert window_starts((16, 32), (16, 32)) == [[0], [0]]
    assert window_starts((5, 40), (16, 32)) == [[0], [0, 8]]


def test_padding_centres_and_crops_back():
    x = torch.arange(2 * 5 * 9, dtype=torch.float32).reshape(2, 5, 9)
    padded, crop = pad_to_patch(x, (8, 6))
    assert tuple(padded.shape) == (2, 8, 9)
    assert torch.equal(padded[(slice(None), *crop)], x)
    assert float(padded[:, 0].abs().sum()) == 0 and float(padded[:, -2:].abs().sum()) == 0
    same, crop = pad_to_patch(x, (5, 9))
    assert same is x and torch.equal(same[(slice(None), *crop)], x)


@pytest.mark.parametrize("step", [0, -0.5, 1.5])
def test_bad_step(step):
    with pytest.raises(XtlunetError, match="step"):
        window_starts((10,), (4,), step)
