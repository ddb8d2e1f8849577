"""Device choice, mixed precision and free memory: bf16 autocast on CUDA where supported, on the CPU where native.

Training autocasts on CUDA only (`autocast`). Inference chooses with `resolve_precision`: bf16 autocast on a
CUDA GPU that supports it (fp16 otherwise) and on a CPU with native bf16 instructions (`amx_bf16` or
`avx512_bf16` in /proc/cpuinfo); plain fp32 on any other CPU, where bf16 would be emulated and slower.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch

from xtlunet.errors import XtlunetError, look_up_option

CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")   # native bf16 arithmetic (oneDNN runs bf16 convolutions on them)
PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(name: str = "auto") -> torch.device:
    """'auto' → cuda when available else cpu; 'cuda' without a GPU is a clear error."""
    look_up_option(name, ("auto", "cpu", "cuda"), "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise XtlunetError("--device cuda asked for, but no CUDA GPU is available", fix="use --device cpu")
    return torch.device(name)


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); a no-op on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def cpu_bf16_flag() -> str | None:
    """The native-bf16 flag this CPU has (amx_bf16 / avx512_bf16 of /proc/cpuinfo), or None.

    Without /proc/cpuinfo (macOS, Windows) torch's CPU capability decides: only an AMX one is native bf16.
    """
    try:
        flags = set(CPUINFO.read_text(errors="replace").split())
    except OSError:
        capability = str(torch.backends.cpu.get_cpu_capability())
        return capability if "AMX" in capability.upper() else None
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of inference (None: plain fp32) and why it was chosen, in words for the log."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        """fp32, bf16 or fp16."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def context(self, device: torch.device | str) -> ContextManager:
        """Autocast to `dtype` on the device's type; a no-op for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.dtype)


def resolve_precision(choice: str, device: torch.device | str) -> Precision:
    """The inference precision for --precision auto|fp32|bf16 on `device`, with the reason for the log line."""
    look_up_option(choice, PRECISIONS, "precision")
    device = torch.device(device)
    if choice == "fp32":
        return Precision(None, "fp32 (--precision fp32)")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, f"bf16 autocast on the GPU (--precision {choice}: it supports bf16)")
        if choice == "bf16":
            raise XtlunetError("--precision bf16 asked for, but this GPU does not support bf16",
                               fix="use --precision auto (fp16 autocast on this GPU) or fp32")
        return Precision(torch.float16, "fp16 autocast on the GPU (--precision auto: it lacks bf16)")
    if device.type != "cpu":
        return Precision(None, f"fp32 on {device.type} (--precision {choice}: autocast is chosen for cpu and cuda)")
    flag = cpu_bf16_flag()
    if flag:
        return Precision(torch.bfloat16, f"bf16 autocast on the CPU (--precision {choice}: it has {flag})")
    if choice == "bf16":
        return Precision(torch.bfloat16, "bf16 autocast on the CPU (--precision bf16), though it has no native "
                         f"bf16 ({' / '.join(BF16_CPU_FLAGS)}): emulated, likely slower than fp32")
    return Precision(None, f"fp32 on the CPU (--precision auto: no native bf16, none of {', '.join(BF16_CPU_FLAGS)} "
                     "in /proc/cpuinfo)")


def available_memory_bytes(device: torch.device | str) -> int | None:
    """Memory free for new allocations: MemAvailable of /proc/meminfo (CPU), the GPU's free memory; None: unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024   # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's legacy global generator and Python's `random`."""
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)
