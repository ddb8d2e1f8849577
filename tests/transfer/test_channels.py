"""Input-channel adaptation: replicated channels give the source network's response."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xtlunet.errors import XtlunetError
from xtlunet.transfer import adapt_input_channels, inflate_kernel

TOL = 1e-5


def test_one_to_n_repeats_and_divides() -> None:
    torch.manual_seed(0)
    w, b = torch.randn(4, 1, 3, 3), torch.randn(4)
    image = torch.randn(2, 1, 8, 8)
    for n in (2, 3, 4):
        adapted, rule = adapt_input_channels(w, n)
        assert rule == f"repeat-1-to-{n}" and adapted.shape == (4, n, 3, 3)
        out = F.conv2d(image.repeat(1, n, 1, 1), adapted, b, padding=1)
        torch.testing.assert_close(out, F.conv2d(image, w, b, padding=1), atol=TOL, rtol=0)


def test_three_to_one_sums_for_a_gray_image() -> None:
    torch.manual_seed(1)
    w, b = torch.randn(4, 3, 3, 3), torch.randn(4)
    gray = torch.randn(1, 1, 8, 8)
    adapted, rule = adapt_input_channels(w, 1)
    assert rule == "sum-3-to-1" and adapted.shape == (4, 1, 3, 3)
    torch.testing.assert_close(F.conv2d(gray, adapted, b, padding=1),
                               F.conv2d(gray.repeat(1, 3, 1, 1), w, b, padding=1), atol=TOL, rtol=0)


@pytest.mark.parametrize("n", [2, 4, 5, 7])
def test_three_to_n_tiles_and_scales(n: int) -> None:
    torch.manual_seed(2)
    w, b = torch.randn(4, 3, 3, 3), torch.randn(4)
    image = torch.randn(1, 1, 8, 8)
    adapted, rule = adapt_input_channels(w, n)
    assert rule == f"tile-3-to-{n}" and adapted.shape == (4, n, 3, 3)
    for i in range(n):   # channel i carries source channel i mod 3, scaled by 3/n
        torch.testing.assert_close(adapted[:, i], w[:, i % 3] * 3 / n)
    if n % 3 == 0:   # exact tiling: a replicated image gives the 3-channel response exactly
        torch.testing.assert_close(F.conv2d(image.repeat(1, n, 1, 1), adapted, b, padding=1),
                                   F.conv2d(image.repeat(1, 3, 1, 1), w, b, padding=1), atol=TOL, rtol=0)


def test_three_to_four_on_replicated_input_matches_a_uniform_rgb_kernel() -> None:
    """With equal channel kernels (a gray-trained RGB net) the 3/N tile rule preserves the output."""
    torch.manual_seed(3)
    w = torch.randn(4, 1, 3, 3).repeat(1, 3, 1, 1)
    b = torch.randn(4)
    image = torch.randn(1, 1, 8, 8)
    adapted, _ = adapt_input_channels(w, 4)
    torch.testing.assert_close(F.conv2d(image.repeat(1, 4, 1, 1), adapted, b, padding=1),
                               F.conv2d(image.repeat(1, 3, 1, 1), w, b, padding=1), atol=TOL, rtol=0)
    # in general the total weight is preserved: sum over input channels of the adapted kernel ≈ source sum
    w = torch.randn(4, 3, 3, 3)
    adapted, _ = adapt_input_channels(w, 6)
    torch.testing.assert_close(adapted.sum(dim=1), w.sum(dim=1), atol=TOL, rtol=0)


def test_same_count_copies_and_works_on_3d_kernels() -> None:
    w = torch.randn(4, 2, 3, 3)
    adapted, rule = adapt_input_channels(w, 2)
    assert rule == "copy" and torch.equal(adapted, w) and adapted is not w
    w3 = inflate_kernel(torch.randn(4, 1, 3, 3), 3)
    adapted, rule = adapt_input_channels(w3, 3)
    assert adapted.shape == (4, 3, 3, 3, 3) and rule == "repeat-1-to-3"
    v = torch.randn(1, 1, 5, 6, 6)
    torch.testing.assert_close(F.conv3d(v.repeat(1, 3, 1, 1, 1), adapted, padding=1),
                               F.conv3d(v, w3, padding=1), atol=TOL, rtol=0)


@pytest.mark.parametrize("n_in,n_out", [(2, 3), (4, 1), (2, 1), (3, 0)])
def test_no_rule_is_refused(n_in: int, n_out: int) -> None:
    with pytest.raises(XtlunetError, match=f"{n_in} input channels to {n_out}"):
        adapt_input_channels(torch.randn(4, n_in, 3, 3), n_out)
