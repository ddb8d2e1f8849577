"""Checkpoints: written atomically with torch.save, read with torch.load(weights_only=True) only."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from xtlunet.errors import XtlunetError
from xtlunet.utils.atomic import atomic_path


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temp file, then rename."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise XtlunetError("checkpoint not found", path=path, fix="check the path (or train first)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise XtlunetError(f"checkpoint holds objects that cannot be loaded safely ({str(exc).splitlines()[0][:100]})",
                           path=path, fix="re-save it as a plain state dict of tensors") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise XtlunetError(f"not a readable checkpoint ({str(exc).splitlines()[0][:100]})", path=path,
                           fix="give a file written by torch.save (re-copy it if it is truncated)") from None
    if not isinstance(obj, dict):
        raise XtlunetError("checkpoint is not a dictionary", path=path, fix="give a state dict or an xtlunet checkpoint")
    return obj
