"""Device choice and mixed precision: bf16 autocast on CUDA where supported, plain fp32 on CPU."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from xtlunet.errors import XtlunetError, look_up_option


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


def seed_everything(seed: int) -> None:
    """Seed torch and numpy's legacy global generator."""
    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
