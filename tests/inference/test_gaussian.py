"""Gaussian importance map: max 1 at the centre, symmetric, no zeros, σ = patch · sigma_scale."""
import numpy as np
import pytest
import torch

from xtlunet.errors import XtlunetError
from xtlunet.inference import gaussian_importance_map


@pytest.mark.parametrize("patch", [(9, 15, 21), (8, 16, 16), (12, 20), (7,)])
def test_max_one_at_centre_and_symmetric(patch):
    g = gaussian_importance_map(patch)
    assert tuple(g.shape) == patch and g.dtype == torch.float32
    assert float(g.max()) == pytest.approx(1.0)
    centre = tuple(slice((n - 1) // 2, n // 2 + 1) for n in patch)  # 1 voxel (odd) or 2 (even) per axis
    assert torch.allclose(g[centre], torch.ones_like(g[centre]))
    for axis in range(len(patch)):
        assert torch.equal(g, g.flip(axis))
    assert bool((g > 0).all())


def test_sigma_follows_patch_and_scale():
    n = 33
    for scale in (1 / 8, 1 / 4):
        profile = gaussian_importance_map((n, 5), sigma_scale=scale).numpy()[:, 2]
        d = np.arange(n) - (n - 1) / 2
        assert np.allclose(profile, np.exp(-0.5 * (d / (n * scale)) ** 2), rtol=1e-5)
    assert gaussian_importance_map((n,), 1 / 4)[0] > gaussian_importance_map((n,), 1 / 8)[0]
    # σ scales with each axis' own length: the same fraction of the patch off centre gets the same weight
    g = gaussian_importance_map((9, 45)).numpy()
    assert g[0, 22] == pytest.approx(g[4, 2], rel=1e-5)  # 4/9 and 20/45 of the patch off centre


def test_no_zeros_even_when_the_tail_underflows():
    g = gaussian_importance_map((64, 64), sigma_scale=0.01)
    assert bool((g > 0).all()) and float(g.max()) == 1.0
    h = gaussian_importance_map((16, 16), dtype=torch.float16)
    assert h.dtype == torch.float16 and bool((h > 0).all())


def test_bad_sigma_scale():
    with pytest.raises(XtlunetError, match="sigma_scale"):
        gaussian_importance_map((8, 8), sigma_scale=0)
