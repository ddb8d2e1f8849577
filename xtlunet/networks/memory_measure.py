"""Measured peak memory of training steps, to calibrate the planners' estimate (`networks/memory.py`).

What is measured is what a fold's training allocates: the network, SGD (Nesterov momentum 0.99), one batch with
its deep-supervision targets, and two `TrainStep`s (autocast, Dice + CE deep-supervision loss, backward, gradient
clipping, SGD step; the second step holds the momentum buffers).
- CUDA: `torch.cuda.max_memory_allocated` (and `max_memory_reserved`, the caching allocator's footprint) after
  `reset_peak_memory_stats`, minus what was allocated before; the step is the trainers' own: bf16 autocast (fp16
  where bf16 is missing), channels-last layout, cuDNN workspaces included.
- CPU: the CPU has no peak counter, so the profiler's `[memory]` events are read: each carries the allocator's
  running total, whose maximum minus its value before the first event is the peak. fp32, or under
  `torch.autocast("cpu", bfloat16)` to mirror the GPU's 2-byte activations.
The method and the figures are in documentation/planner_rules.md.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from xtlunet.networks.build import build_network
from xtlunet.networks.description import ArchitectureDescription

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class MeasuredPeak:
    """Peak bytes of two training steps; `reserved` is the CUDA caching allocator's peak (None on the CPU)."""

    allocated: int
    reserved: int | None = None


def _two_steps(desc: ArchitectureDescription, patch: Sequence[int], batch: int, num_classes: int,
               device: torch.device) -> None:
    """Build the network, SGD and a batch on `device` and take two training steps."""
    from xtlunet.training.losses import DeepSupervisionLoss, DiceCELoss, downsample_targets
    from xtlunet.training.optim import sgd
    from xtlunet.training.step import TrainStep, place_network

    net = place_network(build_network(desc, "segmentation", num_classes), device).train()
    optimizer = sgd(net.parameters())
    scales = net.deep_supervision_scales()
    step = TrainStep(net, DeepSupervisionLoss(DiceCELoss(), len(scales)), optimizer, device)
    x = torch.randn(batch, desc.in_channels, *patch, device=device)
    targets = downsample_targets(torch.randint(0, num_classes, (batch, *patch), device=device), scales)
    for _ in range(2):
        step(x, targets)


def _cpu_peak(desc: ArchitectureDescription, patch: Sequence[int], batch: int, num_classes: int,
              precision: str) -> MeasuredPeak:
    """The CPU allocator's peak over two steps, read from the profiler's memory events."""
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        with cast:
            _two_steps(desc, patch, batch, num_classes, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})),
                    key=lambda e: e["ts"])
    if not memory:
        raise RuntimeError("the profiler recorded no CPU memory events")
    # the running total is process-wide and keeps what earlier unprofiled code holds: start from it
    before = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"]
    return MeasuredPeak(max(e["args"]["Total Allocated"] for e in memory) - before)


def _cuda_peak(desc: ArchitectureDescription, patch: Sequence[int], batch: int, num_classes: int,
               device: torch.device) -> MeasuredPeak:
    """torch.cuda's peak allocated and reserved bytes over two steps, net of what was allocated before."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base_alloc, base_reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
    _two_steps(desc, patch, batch, num_classes, device)
    torch.cuda.synchronize(device)
    return MeasuredPeak(torch.cuda.max_memory_allocated(device) - base_alloc,
                        torch.cuda.max_memory_reserved(device) - base_reserved)


def measure_training_peak(desc: ArchitectureDescription, patch: Sequence[int], batch: int, num_classes: int,
                          device: torch.device | str = "cpu", precision: str = "fp32") -> MeasuredPeak:
    """Peak memory of building and taking two training steps of desc at patch × batch (`precision` is the CPU's;
    CUDA runs the trainers' own autocast)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    torch.manual_seed(0)
    if device.type == "cuda":
        return _cuda_peak(desc, patch, batch, num_classes, device)
    return _cpu_peak(desc, patch, batch, num_classes, precision)
