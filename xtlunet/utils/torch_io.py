"""The one safe way xtlunet reads .pth files: torch.load(weights_only=True), errors naming the file and fix."""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from xtlunet.errors import XtlunetError


def safe_torch_load(path: str | Path) -> Any:
    """torch.load with weights_only=True on CPU; any failure becomes a one-line XtlunetError."""
    path = Path(path)
    if not path.is_file():
        raise XtlunetError("checkpoint not found", path=path,
                           fix="check the path (a pretrain-2d output, a training checkpoint or a .pth state dict)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found or "Unsupported global" in str(exc):
            name = found.group(1) if found else "a Python object"
            raise XtlunetError(f"checkpoint holds pickled Python objects ({name}) that weights_only loading "
                               "refuses", path=path,
                               fix="re-save it from a trusted environment with only tensors, e.g. "
                                   "torch.save({'state_dict': model.state_dict()}, path)") from None
        raise _not_a_checkpoint(path, exc) from None
    except Exception as exc:  # corrupt zip, truncated file, text file, ...
        raise _not_a_checkpoint(path, exc) from None


def _not_a_checkpoint(path: Path, exc: Exception) -> XtlunetError:
    """The error for a file torch.load cannot read at all."""
    return XtlunetError(f"not a PyTorch checkpoint (torch.load raised {type(exc).__name__})", path=path,
                        fix="pass a file written by torch.save (re-copy it if it is truncated)")
