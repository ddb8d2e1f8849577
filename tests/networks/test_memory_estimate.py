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


def measured_peak_bytes(desc, patch: tuple[int, ...], batch: int, num_classes: int) -> int:
    """Peak CPU-allocator bytes of building the network and SGD and taking two fp32 training steps.

    The profiler's CPU memory events carry the running total of the bytes allocated while profiling, so the network, its gradients, the momentum buffers, the batch, the activations and the loss's
    temporaries are all counted (the calibration method of documentation/planner_rules.md).
    """
    import json
    import tempfile
    from pathlib import Path

    from xtlunet.training.losses import DeepSupervisionLoss, DiceCELoss, downsample_targets
    from xtlunet.training.optim import sgd

    torch.manual_seed(0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        net = build_network(desc, "segmentation", num_classes).train()
        optimizer = sgd(net.parameters())
        scales = net.deep_supervision_scales()
        loss_fn = DeepSupervisionLoss(DiceCELoss(), len(scales))
        x = torch.randn(batch, desc.in_channels, *patch)
        targets = downsample_targets(torch.randint(0, num_classes, (batch, *patch)), scales)
        for _ in range(2):          # the second step has the momentum buffers
            loss = loss_fn(net(x), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    # the running total is process-wide and keeps what earlier profiled runs freed unprofiled: start from it
    before = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"]
    return max(e["args"]["Total Allocated"] for e in memory) - before


@pytest.mark.slow
@pytest.mark.parametrize("spacing, patch, batch", [([1.0, 1.0, 1.0], (24, 48, 48), 2), ([1.0, 1.0], (96, 96), 4)])
def test_fp32_estimate_bounds_the_measured_cpu_peak(spacing, patch, batch) -> None:
    from xtlunet.planners.default import plain_architecture

    desc = plain_architecture(spacing, list(patch), 1)           # full nnU-Net widths, as planned
    peak = measured_peak_bytes(desc, patch, batch, 3)
    estimate = estimate_memory_bytes(desc, patch, batch, 3, activation_bytes=4)
    print(f"{patch} x{batch}: measured {peak / 2**20:.1f} MiB, estimate {estimate / 2**20:.1f} MiB, "
          f"ratio {peak / estimate:.3f}")
    assert 0.6 * estimate < peak <= estimate
