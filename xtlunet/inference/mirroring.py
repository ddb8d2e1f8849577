"""Mirroring test-time augmentation and the network state used for inference."""
from __future__ import annotations

import contextlib
import itertools
from typing import Iterator, Sequence

import torch
from torch import nn

from xtlunet.errors import XtlunetError

_UNSET = object()


def mirror_combinations(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of `mirror_axes` (2^n, the empty one first): the flips nnU-Net averages over."""
    axes = tuple(sorted(set(int(a) for a in mirror_axes)))
    return [c for n in range(len(axes) + 1) for c in itertools.combinations(axes, n)]


def check_mirror_axes(mirror_axes: Sequence[int], dim: int) -> None:
    """Refuse mirror axes that are not spatial axes of a `dim`-D network input."""
    bad = [a for a in mirror_axes if not 0 <= int(a) < dim]
    if bad:
        raise XtlunetError(f"mirror axes {tuple(mirror_axes)} include {bad}, but the network is {dim}D",
                           fix=f"use spatial axes in 0..{dim - 1} (e.g. {tuple(range(dim))})")


def tta_mirror_axes(trained: Sequence[int], tta: bool = True, chosen: Sequence[int] | None = None) -> tuple[int, ...]:
    """The axes test-time mirroring flips: the trained ones (default), a chosen subset of them, or none (no TTA).

    Mirroring an axis training did not mirror would average in views the network never learnt: refused.
    """
    trained = tuple(int(a) for a in trained)
    if chosen is None:
        return trained if tta else ()
    chosen = tuple(dict.fromkeys(int(a) for a in chosen))
    if not tta:
        raise XtlunetError(f"--no-tta and --tta-axes {' '.join(map(str, chosen))} contradict each other",
                           fix="give one of them: --no-tta for no mirroring, --tta-axes for a subset")
    untrained = [a for a in chosen if a not in trained]
    if untrained:
        have = " ".join(map(str, trained))
        raise XtlunetError(f"--tta-axes {' '.join(map(str, chosen))} includes axis {untrained[0]}, which training "
                           f"did not mirror (mirrored axes: {have or 'none'})",
                           fix=f"choose from {have}, or leave --tta-axes out" if trained else
                           "leave --tta-axes out: this model was trained without mirroring")
    return tuple(sorted(chosen))


@contextlib.contextmanager
def inference_state(net: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no deep supervision for the block; the previous state is restored afterwards."""
    was_training = net.training
    deep = getattr(net, "deep_supervision", _UNSET)
    net.eval()
    if deep is not _UNSET:
        net.deep_supervision = False
    try:
        yield net
    finally:
        net.train(was_training)
        if deep is not _UNSET:
            net.deep_supervision = deep


def forward_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Full-resolution float32 logits of a batch (the first output when a net returns a list)."""
    out = net(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out.float()


def mirrored_logits(net: nn.Module, x: torch.Tensor, mirror_axes: Sequence[int] = ()) -> torch.Tensor:
    """Logits of batch x (B, C, *spatial) averaged over all flips of `mirror_axes`, in one forward pass."""
    combos = mirror_combinations(mirror_axes)
    if len(combos) == 1:
        return forward_logits(net, x)
    flips = [[a + 2 for a in c] for c in combos]
    stacked = torch.cat([x.flip(f) if f else x for f in flips])
    parts = forward_logits(net, stacked).split(x.shape[0])
    total = torch.zeros_like(parts[0])
    for part, f in zip(parts, flips):
        total += part.flip(f) if f else part
    return total / len(combos)
