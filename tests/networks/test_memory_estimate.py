"""The planner's memory estimate: monotone in patch and batch, fast, and close to what autograd stores."""
from __future__ import annotations

import time

import pytest
import torch
from network_cases import input_shape, tiny_description

from xtlunet.errors import XtlunetError
from xtlunet.networks import build_network, count_parameters, estimate_memory_bytes
from xtlunet.networks.memory import PARAMETER_COPIES


def measured_training_bytes(desc, patch: tuple[int, ...], batch: int, task: str, num_classes: int) -> int:
    """Parameter copies plus the bytes of every distinct tensor autograd saves in a forward+backward."""
    net = build_network(desc, task, num_classes).train()
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(torch.randn(batch, desc.in_channels, *patch))
        outputs = out if isinstance(out, list) else [out]
        loss = sum(o.float().log_softmax(1).mean() for o in outputs)
    loss.backward()
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    activations = sum(n for ptr, n in saved.items() if ptr not in weights)
    return activations + 4 * PARAMETER_COPIES * count_parameters(net)


@pytest.mark.parametrize("family, dim, task", [("plain", 3, "segmentation"), ("resnet18", 2, "segmentation"),
                                               ("vgg16_bn", 3, "classification")])
def test_estimate_agrees_with_measured_storage(family: str, dim: int, task: str) -> None:
    desc = tiny_description(family, dim)
    patch = input_shape(dim)
    measured = measured_training_bytes(desc, patch, 2, task, 3)
    estimate = estimate_memory_bytes(desc, patch, 2, 3, task)
    assert measured / 3 < estimate < 3 * measured


@pytest.mark.parametrize("family", ["plain", "resnet50"])
def test_estimate_is_monotone_in_patch_and_batch(family: str) -> None:
    desc = tiny_description(family, 3)
    base = list(input_shape(3))
    reference = estimate_memory_bytes(desc, base, 2, 3)
    for axis in range(3):
        for grow in (1, desc.total_stride()[axis]):
            bigger = list(base)
            bigger[axis] += grow
            assert estimate_memory_bytes(desc, bigger, 2, 3) > reference
    assert estimate_memory_bytes(desc, base, 3, 3) > reference
    sizes = [estimate_memory_bytes(desc, [s, 2 * s, 2 * s], 1, 3) for s in range(4, 40, 4)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_estimate_is_fast_for_full_width_3d_nets_and_checks_the_patch() -> None:
    from xtlunet.networks import family_description

    desc = family_description("resnet50", 3, 2, strides=[[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    estimate_memory_bytes(desc, [32, 256, 256], 2, 3)
    start = time.perf_counter()
    values = [estimate_memory_bytes(desc, [32, s, s], 2, 3) for s in range(64, 320, 8)]
    assert time.perf_counter() - start < 1.0 and values == sorted(values)
    assert 2**30 < values[-1] < 2**36  # gigabytes, not bytes or petabytes
    with pytest.raises(XtlunetError, match="does not fit a 3D network"):
        estimate_memory_bytes(desc, [256, 256], 2, 3)
