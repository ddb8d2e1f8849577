"""Training checkpoints: written atomically with torch.save, read with torch.load(weights_only=True) only."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xtlunet.errors import XtlunetError
from xtlunet.utils.atomic import atomic_path
from xtlunet.utils.torch_io import safe_torch_load


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temp file, then rename."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights_only=True)."""
    obj = safe_torch_load(path)
    if not isinstance(obj, dict):
        raise XtlunetError("checkpoint is not a dictionary", path=path, fix="give an xtlunet training checkpoint")
    return obj
