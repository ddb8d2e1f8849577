"""Mirroring TTA: no change for a flip-equivariant net; the mean of flipped predictions otherwise."""
import itertools

import pytest
import torch
from torch import nn

from xtlunet.inference import mirror_combinations, mirrored_logits, predict_sliding_window

CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def conv_net(dim: int, symmetric: bool, seed: int = 0) -> nn.Module:
    """One 3^dim convolution (2 → 3 channels, zero padding); with `symmetric`, its kernel is flip-invariant."""
    torch.manual_seed(seed)
    conv = CONV[dim](2, 3, 3, padding=1)
    if symmetric:
        flips = mirror_combinations(range(dim))
        with torch.no_grad():
            flipped = [conv.weight.flip([a + 2 for a in f]) if f else conv.weight for f in flips]
            conv.weight.copy_(sum(flipped) / len(flips))
    return conv


def test_combinations():
    combos = mirror_combinations((2, 0, 1))
    assert combos[0] == () and len(combos) == 8 and len(set(combos)) == 8
    assert mirror_combinations(()) == [()]


@pytest.mark.parametrize("dim, shape, patch", [(3, (9, 14, 11), (6, 8, 8)), (2, (19, 13), (8, 8))])
def test_equivariant_net_is_unchanged_by_tta(dim, shape, patch):
    net = conv_net(dim, symmetric=True)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    plain = predict_sliding_window(net, x, patch, 3)
    tta = predict_sliding_window(net, x, patch, 3, mirror_axes=tuple(range(dim)), batch_windows=3)
    assert torch.allclose(plain, tta, atol=1e-5)


def test_tta_is_the_mean_of_flipped_predictions():
    net = conv_net(3, symmetric=False)
    x = torch.randn(2, 6, 7, 8, generator=torch.Generator().manual_seed(1))
    axes = (0, 2)
    plain = predict_sliding_window(net, x, (6, 7, 8), 3)
    tta = predict_sliding_window(net, x, (6, 7, 8), 3, mirror_axes=axes)
    with torch.no_grad():
        flips = [[a + 1 for a in c] for n in range(3) for c in itertools.combinations(axes, n)]
        logits = [net(x.flip(f)[None])[0].flip(f) if f else net(x[None])[0] for f in flips]
    expected = torch.stack(logits).mean(0)   # the sliding window returns the mean logits
    assert torch.allclose(tta, expected, atol=1e-5)
    assert not torch.allclose(tta, plain, atol=1e-3)


def test_mirrored_logits_of_a_batch():
    net = conv_net(2, symmetric=False, seed=3)
    x = torch.randn(3, 2, 10, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = mirrored_logits(net, x, (1,))
        expected = (net(x) + net(x.flip(3)).flip(3)) / 2
    assert out.shape == (3, 3, 10, 12) and torch.allclose(out, expected, atol=1e-6)
