"""The planner's memory estimate: monotone in patch and batch, fast, and close to what autograd stores."""
from __future__ import annotations

import time

import pytest
import torch
from network_cases import input_shape, tiny_description

from xtlunet.errors import XtlunetError
from xtlunet.networks import build_network, count_parameters, estimate_memory_bytes
from xtlunet.networks.memory import (ACTIVATION_OVERHEAD, LOSS_BYTES, PARAMETER_BYTES, PARAMETER_COPIES,
                                     estimate_activation_elements)
from xtlunet.networks.memory_measure import measure_training_peak


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
    measured = measured_training_bytes(desc, patch, 2, task, 3)     # fp32: CPU trains without autocast
    estimate = estimate_memory_bytes(desc, patch, 2, 3, task, activation_bytes=4)
    assert measured / 3 < estimate < 3 * measured


@pytest.mark.parametrize("family, dim, task", [("plain", 3, "segmentation"), ("resnet18", 2, "segmentation"),
                                               ("vgg16_bn", 3, "classification")])
def test_autocast_estimate_halves_the_layer_activations(family: str, dim: int, task: str) -> None:
    desc = tiny_description(family, dim)
    patch, batch = input_shape(dim), 3
    fp32 = estimate_memory_bytes(desc, patch, batch, 3, task, activation_bytes=4)
    autocast = estimate_memory_bytes(desc, patch, batch, 3, task)               # the default: 2-byte activations
    # built by hand: fp32 parameter state, the loss's logit copies in fp32, layer activations at 4 or 2 bytes
    parameters = PARAMETER_BYTES * PARAMETER_COPIES * count_parameters(build_network(desc, task, 3))
    layers, logits = (batch * ACTIVATION_OVERHEAD * n for n in estimate_activation_elements(desc, patch, 3, task))
    assert layers > 0 and logits > 0
    assert fp32 == int(parameters + 4 * layers + LOSS_BYTES * logits)
    assert autocast == int(parameters + 2 * layers + LOSS_BYTES * logits)
    assert fp32 - autocast == pytest.approx((4 * layers) / 2, abs=1)               # the layer part halved
    assert parameters < autocast < fp32


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


@pytest.mark.slow
@pytest.mark.parametrize("spacing, patch, batch", [([1.0, 1.0, 1.0], (24, 48, 48), 2), ([1.0, 1.0], (96, 96), 4)])
def test_fp32_estimate_bounds_the_measured_cpu_peak(spacing, patch, batch) -> None:
    from xtlunet.planners.default import plain_architecture

    desc = plain_architecture(spacing, list(patch), 1)           # full nnU-Net widths, as planned
    peak = measure_training_peak(desc, patch, batch, 3).allocated
    estimate = estimate_memory_bytes(desc, patch, batch, 3, activation_bytes=4)
    print(f"{patch} x{batch}: measured {peak / 2**20:.1f} MiB, estimate {estimate / 2**20:.1f} MiB, "
          f"ratio {peak / estimate:.3f}")
    assert 0.6 * estimate < peak <= estimate


@pytest.mark.slow
def test_bf16_autocast_estimate_bounds_the_measured_cpu_peak() -> None:
    from xtlunet.planners.default import plain_architecture

    desc = plain_architecture([1.0, 1.0, 1.0], [24, 48, 48], 1)
    fp32 = measure_training_peak(desc, (24, 48, 48), 2, 3, precision="fp32")
    bf16 = measure_training_peak(desc, (24, 48, 48), 2, 3, precision="bf16")
    estimate = estimate_memory_bytes(desc, (24, 48, 48), 2, 3)           # the default: 2-byte activations
    assert bf16.reserved is None and 0.7 * estimate < bf16.allocated <= estimate
    assert bf16.allocated < 0.8 * fp32.allocated
    with pytest.raises(ValueError, match="precision"):
        measure_training_peak(desc, (24, 48, 48), 2, 3, precision="fp16")
